"""The `fxc` torch.compile backend, registered by name (entry point group `torch_dynamo_backends`).

    compiled = torch.compile(model, backend="fxc", options={
        "passes": "quantize{bits=8}",      # pipeline text, pass objects or a Pipeline
        "backend": "auto",                 # the fxc backend that lowers each graph (torch, numpy, triton)
        "calibration": [batch, ...],       # model-level input batches, as fxc.compile takes them
        "backend_options": {},             # passed to the fxc backend
        "instruments": [fxc.Progress(), fxc.Timing()],  # observe each graph's fxc.compile
        "on_compile": callback,            # called with each graph's CompiledModule (.report(), .graph)
    })

An unknown key raises OptionError naming it and listing these. The instruments are shared by every
graph of the model (a Timing collects the rows of all of them).

For each graph dynamo hands over:
1. inside the backend call: lift it (fxc.frontend.dynamo.lift_dynamo_graph): weights that arrive as
   placeholders become get_attr constants named by module path, SymInt size placeholders are read
   off the tensors they size; map the calibration batches onto the graph's inputs (below);
2. at the graph's first call (exporting inside the backend call breaks dynamo's guards): export it
   to canonical IR and fxc.compile it: passes, then the fxc backend; unless fxc/api/torch_compile_cache.py holds
   a module compiled from the same graph, weights, calibration and settings (a recompile after a
   guard failure, the same module compiled again): then that one is used and no pass runs.
The callable returned takes dynamo's arguments (weights, sizes, inputs) and passes on only the
inputs. A second batch size makes dynamo recompile with symbolic sizes: that graph is compiled
again, passes included. A graph break gives several graphs, each compiled on its own.

Calibration across graph breaks (the decision): calibration batches are inputs of the *model*.
Dynamo records where each graph input came from (`L['x']`, `L['kwargs']['input_ids']`); binding a
batch to the traced function's signature gives those values. That covers every graph that reads
the model's own arguments: the whole model when it has no graph break, and the first graph when it
has. A graph that starts after a break reads intermediate values (`L['h']` of a resume function)
that the batches do not hold; capturing them would mean running the model with the graphs before
it already compiled, inside dynamo's first call. So such a graph gets no calibration, and a pass in
it that needs calibration raises CalibrationError naming the break and the two fixes: remove the
break (torch.compile(..., fullgraph=True) points at it) or use fxc.compile(model, calibration=...),
which captures the whole model with torch.export. Passes that need no calibration run everywhere.
The backend replaces options["calibration"] with an equivalent fxc.Calibration compared by identity:
dynamo compares the options of compiled wrappers with ==, which raises on lists of tensors.
Weights are read at a graph's first call; a weight changed after that is seen once dynamo compiles
the graph again (torch._dynamo.reset() or a new torch.compile), and the cache, keyed by the weights'
contents, then compiles it afresh. Reads the graphs and options it is given; writes only the cache.
"""

from __future__ import annotations

import difflib
import inspect
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.fx

from fxc.api import torch_compile_cache as dynamo_cache
from fxc.api.backend import CompiledModule
from fxc.api.compiler import compile as fxc_compile
from fxc.errors import CalibrationError, OptionError
from fxc.frontend.dynamo import LiftedGraph, lift_dynamo_graph
from fxc.frontend.trace import trace
from fxc.passmgr import registry
from fxc.passmgr.calibration import Calibration
from fxc.passmgr.pipeline import Pipeline

_RESUME_PREFIX = "torch_dynamo_resume_in_"
_SOURCE = re.compile(r"L\['(\w+)'\]((?:\[(?:'[^']*'|\d+)\])*)")
_ACCESS = re.compile(r"\['([^']*)'\]|\[(\d+)\]")


@dataclass
class DynamoOptions:
    """What `options=` of torch.compile(..., backend="fxc") may hold."""

    passes: Any = None
    backend: str = "auto"
    calibration: Any = None
    backend_options: dict | None = None
    instruments: Any = ()
    on_compile: Callable[[CompiledModule], Any] | None = None

    @classmethod
    def of(cls, options: dict | None) -> DynamoOptions:
        options = dict(options or {})
        known = [f.name for f in fields(cls)]
        for key in options:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise OptionError(
                    f"torch.compile(backend='fxc') got an unknown option {key!r}{hint}; "
                    f"the options it takes are: {', '.join(known)}"
                )
        settings = cls(**options)
        settings.passes = Pipeline.of(settings.passes)  # a typo fails now, not at the first call
        if settings.calibration is not None and not isinstance(settings.calibration, _Batches):
            settings.calibration = _Batches(Calibration.of(settings.calibration).batches)
        if settings.backend != "auto":
            registry.lookup("fxc.backends", settings.backend)  # an unknown name lists the known ones
        if settings.backend_options is not None and not isinstance(settings.backend_options, dict):
            raise OptionError(f"option 'backend_options' must be a dict, got {type(settings.backend_options).__name__}")
        if settings.on_compile is not None and not callable(settings.on_compile):
            raise OptionError(f"option 'on_compile' must be callable, got {type(settings.on_compile).__name__}")
        settings.instruments = _instruments(settings.instruments)
        return settings

    def cache_settings(self) -> tuple | None:
        """What a compiled graph depends on besides the graph, weights and calibration; None: unhashable."""
        try:
            return (self.passes, self.backend, dynamo_cache.freeze(self.backend_options or {}))
        except TypeError:
            return None


_HOOKS = ("start", "before_pass", "after_pass", "before_analysis", "after_analysis")  # progress is optional


def _instruments(value: Any) -> tuple:
    """options['instruments'] as a tuple of instrument objects, or OptionError saying what is wrong."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise OptionError(
            f"option 'instruments' must be a list of instruments, e.g. [fxc.Progress(), fxc.Timing()]; "
            f"got {type(value).__name__}"
        )
    for item in value:
        if isinstance(item, type):
            raise OptionError(
                f"option 'instruments' holds the class {item.__name__}; pass an instance: {item.__name__}()"
            )
        missing = [hook for hook in _HOOKS if not callable(getattr(item, hook, None))]
        if missing:
            raise OptionError(
                f"option 'instruments' holds a {type(item).__name__}, which lacks the instrument hook(s) "
                f"{', '.join(missing)}; subclass fxc.Instrument (every hook defaults to nothing)"
            )
    return tuple(value)


class _Batches(Calibration):
    """Calibration compared by identity: dynamo compares the options of two compiled wrappers with ==,
    which on lists of tensors raises; the backend swaps options['calibration'] for this."""

    __eq__ = object.__eq__
    __hash__ = object.__hash__


def fxc_backend(gm: torch.fx.GraphModule, example_inputs: list[Any], options: dict | None = None, **_: Any):
    """The torch.compile backend: returns a callable that runs `gm` compressed by fxc."""
    settings = DynamoOptions.of(options)
    if settings.calibration is not None and options is not None:
        options["calibration"] = settings.calibration  # so dynamo can compare option dicts (see _Batches)
    lifted = lift_dynamo_graph(gm, list(example_inputs))
    code = _traced_code()
    where = _graph_place(code)
    calibration = None
    if settings.calibration is not None and code is not None and not code.co_name.startswith(_RESUME_PREFIX):
        calibration = _graph_calibration(settings.calibration, gm, lifted, code, example_inputs)
    return FxcGraph(lifted, settings, calibration, where)


class FxcGraph:
    """One dynamo graph: compiled by fxc at its first call, then run with the graph's user inputs."""

    def __init__(self, lifted: LiftedGraph, settings: DynamoOptions, calibration: Calibration | None, where: str):
        self.lifted: LiftedGraph | None = lifted  # dropped once compiled
        self.user_inputs = lifted.user_inputs
        self.settings = settings
        self.calibration = calibration
        self.where = where
        self.compiled: CompiledModule | None = None

    def __call__(self, *args: Any) -> Any:
        if self.compiled is None:
            self.compiled = self._compile()
            self.lifted = self.calibration = None
        return self.compiled(*[args[i] for i in self.user_inputs])

    def _compile(self) -> CompiledModule:
        example = tuple(self.lifted.user_values)
        settings = self.settings.cache_settings()
        key = None if settings is None else dynamo_cache.graph_key(self.lifted.gm, example, settings, self.calibration)
        compiled = dynamo_cache.lookup(key)
        if compiled is None:
            compiled = self._run_fxc(example)
            dynamo_cache.store(key, compiled)
        if self.settings.on_compile is not None:
            self.settings.on_compile(compiled)
        return compiled

    def _run_fxc(self, example: tuple) -> CompiledModule:
        try:
            with torch.no_grad():
                return fxc_compile(
                    trace(self.lifted.gm, example),
                    self.settings.passes,
                    example_inputs=example,
                    calibration=self.calibration,
                    backend=self.settings.backend,
                    instruments=self.settings.instruments,
                    backend_options=self.settings.backend_options,
                )
        except CalibrationError as error:
            hint = self._calibration_hint()
            if hint:
                error.add_context(hint)
            raise

    def _calibration_hint(self) -> str:
        if self.settings.calibration is None:
            return "with torch.compile, pass the batches as options={'calibration': [batch, ...]}"
        if self.calibration is not None:
            return ""  # the batches reached this graph; the error is about them
        return (
            f"this graph ({self.where}) starts after a graph break, so its inputs are intermediate values that "
            "the model-level calibration batches do not hold; remove the graph break (torch.compile(..., "
            "fullgraph=True) shows where it is) or use fxc.compile(model, calibration=...)"
        )


def _traced_code() -> types.CodeType | None:
    """The code object of the frame dynamo is compiling (its outermost function)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
    except Exception:
        return None
    while getattr(tx, "parent", None) is not None:
        tx = tx.parent
    return getattr(tx, "f_code", None)


def _graph_place(code: types.CodeType | None) -> str:
    if code is None:
        return "a graph of unknown origin"
    name = code.co_name
    if name.startswith(_RESUME_PREFIX):
        return "the graph after the break in " + name[len(_RESUME_PREFIX):].replace("_at_", " at line ")
    return f"{name} in {code.co_filename}:{code.co_firstlineno}"


def _graph_calibration(
    calibration: Calibration, gm: torch.fx.GraphModule, lifted: LiftedGraph, code: types.CodeType,
    example_inputs: list[Any],
) -> Calibration:
    """The model-level batches as this graph's inputs, read by the sources dynamo recorded."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    signature = inspect.signature(types.FunctionType(code, {}, closure=_cells(code)))
    self_source = _self_source(signature, [_source(p) for p in placeholders])
    batches = []
    for index, (args, kwargs) in enumerate(calibration):
        try:
            bound = signature.bind_partial(*((None,) if self_source else ()), *args, **kwargs).arguments
        except TypeError as error:
            raise CalibrationError(
                f"calibration batch {index} does not fit {code.co_name}{signature}: {error}"
            ) from None
        values = []
        for position in lifted.user_inputs:
            source = _source(placeholders[position])
            value = _read(source, bound, self_source)
            if value is _MISSING:
                raise CalibrationError(
                    f"calibration batch {index} has no value for the graph input {source} of {code.co_name}; "
                    "give batches with the same inputs as the model is called with"
                )
            values.append(example_inputs[position] if value is _FIXED else value)
        batches.append((tuple(values), {}))
    return Calibration(batches)


def _self_source(signature: inspect.Signature, sources: list[str]) -> str | None:
    """Where the module itself sits among the traced function's arguments (`L['self']`, or
    `L['args'][0]` for a wrapper taking *args), or None for a plain function."""
    first = next(iter(signature.parameters.values()), None)
    if first is None:
        return None
    candidate = f"L['{first.name}'][0]" if first.kind is first.VAR_POSITIONAL else f"L['{first.name}']"
    weights = [s for s in sources if "._parameters[" in s or "._buffers[" in s]
    return candidate if first.name == "self" or any(s.startswith(candidate + ".") for s in weights) else None


_MISSING, _FIXED = object(), object()


def _read(source: str, bound: dict[str, Any], self_source: str | None) -> Any:
    """The value at `source` (L['kwargs']['input_ids']) among a batch's bound arguments; _FIXED for
    inputs that are not the model's arguments (tensor attributes of the module, globals)."""
    if self_source and (source == self_source or source.startswith((self_source + ".", self_source + "["))):
        return _FIXED  # a tensor attribute of the module
    match = _SOURCE.fullmatch(source)
    if match is None:
        return _FIXED  # a global or another value that is not an argument
    if match.group(1) not in bound:
        return _MISSING
    value = bound[match.group(1)]
    for key, index in _ACCESS.findall(match.group(2)):
        try:
            value = value[key] if key else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return value


def _source(node: torch.fx.Node) -> str:
    grapharg = node.meta.get("grapharg")
    name = grapharg.source.name if grapharg is not None else ""
    return name() if callable(name) else name


def _cells(code: types.CodeType) -> tuple | None:
    return tuple(types.CellType(None) for _ in code.co_freevars) or None
