"""The backend interface and the compiled module fxc.compile returns.

A backend is a class registered under group `fxc.backends` with a `name`, the set of graph targets
it lowers (`supported_targets`, None meaning "whatever torch runs") and `compile(gm, example_inputs)
-> callable`. Backends either lower every node or report what they could not (see issue text in
codegen/). `CompiledModule` wraps the compiled callable as an nn.Module with `.graph`, `.report()`,
`.pipeline`, `.backend`. `make_backend(name, options)` builds the registered backend with its options
(a backend that declares them as fxc.option fields rejects a name it does not declare).

Calling a CompiledModule binds the inputs to the graph's placeholders first (`_Inputs`): each input by
position or by name, whichever way the model was traced; a missing `attention_mask` is all ones and a
missing `token_type_ids` all zeros, shaped like `input_ids` (what Hugging Face models do with None).
It then checks each tensor's rank, dtype kind (floating vs integer) and static dims against the
placeholder's meta["val"] (symbolic dims are free, but dims traced as the same symbol must agree) and
raises InputError naming the input and both shapes, instead of a failure deep inside the graph.
A KV-cache step graph (a causal LM compiled with kv_cache on: fxc/ir/kv_signature.py) is called as the model was:
`cm(ids)` / `cm(input_ids=ids, attention_mask=m)` run the step on an empty past and return the logits as the
model did (fxc/frontend/kv_inputs.py); `cm.generate(...)` decodes with the cache (fxc/api/generate/).
`backend_summary()` is the backend's per-layer notes as one line. Reads nothing from disk; writes
nothing; a call preserves its inputs (defaults are new tensors).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.fx
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from fxc.api.report import Report, build_report
from fxc.errors import InputError, OptionError
from fxc.frontend.kv_inputs import step_batch, user_output
from fxc.ir.kv_signature import signature_of
from fxc.passmgr import registry
from fxc.passmgr.options import declared


class Backend:
    name: ClassVar[str] = ""

    def compile(
        self, gm: torch.fx.GraphModule, example_inputs: tuple[tuple, dict] | None
    ) -> Callable[..., Any]:
        raise NotImplementedError

    def unsupported(self, gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
        """Nodes this backend cannot lower (reported all at once, at compile time)."""
        return []


def make_backend(name: str, options: dict[str, Any] | None = None) -> Backend:
    """The backend registered under `name` (group fxc.backends) built with `options`. For a backend whose
    options are declared fields (fxc.option), a name it does not declare is an OptionError listing the
    ones it takes; any other backend class receives the options as they are."""
    cls = registry.lookup("fxc.backends", name)
    options = dict(options or {})
    if dataclasses.is_dataclass(cls):
        known = [f.name for f in declared(cls)]
        unknown = [key for key in options if key not in known]
        if unknown:
            raise OptionError(
                f"backend '{name}' has no option {', '.join(map(repr, unknown))}; it takes {', '.join(known) or 'none'}"
            )
    return cls(**options)


class CompiledModule(torch.nn.Module):
    """The result of fxc.compile: call it like the original model.

    graph     the final torch.fx GraphModule (canonical IR with fxc ops)
    report()  per-layer table (prints it and returns the Report object)
    pipeline  the fxc.Pipeline that ran; str() gives its text
    backend   the backend's name; `runner` the callable it produced; backend_options its options
    generate  token generation with the KV cache (a causal LM compiled with kv_cache on); kv_cache its record
    """

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        runner: Callable[..., Any],
        pipeline: Any,
        backend: str,
        instruments: tuple = (),
        drift: dict[str, float] | None = None,
        backend_options: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.graph = gm
        object.__setattr__(self, "runner", runner)  # not a submodule: it may be `graph` itself
        self.pipeline = pipeline
        self.backend = backend
        self.instruments = instruments
        self.drift = drift or {}
        self.backend_options = dict(backend_options or {})  # what the backend was built with (fxc.save keeps it)
        object.__setattr__(self, "inputs", _Inputs.of(gm))  # None: a signature fxc does not bind (passed as is)
        object.__setattr__(self, "kv_cache", signature_of(gm))  # the KV-cache step's record, None without one

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.kv_cache is not None:  # a step graph: the user's inputs with an empty past; the logits back
            (step, _) = step_batch((args, kwargs), self.kv_cache)
            return user_output(self.runner(*step)[0])
        if self.inputs is not None:
            args, kwargs = self.inputs.bind(args, kwargs)
        return self.runner(*args, **kwargs)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **options: Any):
        """Token ids [B, prompt + new] continuing `input_ids` (a causal LM compiled with its KV cache); the options
        and their semantics (transformers' generate: greedy, or sampling with temperature / top-k / top-p; eos;
        left padding) are fxc/api/generate/loop.py's `generate`."""
        from fxc.api.generate.loop import generate

        return generate(self, input_ids, attention_mask, **options)

    def backend_notes(self) -> list[str]:
        """What the backend says about each layer (e.g. the kernel each fxc op got), one note per line."""
        notes = getattr(self.runner, "report_notes", None)
        return list(notes()) if callable(notes) else []

    def backend_summary(self) -> str:
        """The backend's per-layer notes as one line: "torch backend: 211 layers: 210 quantized_linear w8
        per-channel -> ..., 1 dense"; notes about no single layer follow, counted."""
        rows = build_report(self.graph).rows
        nodes, prefix = {row.node for row in rows}, f"{self.backend} backend: "
        kernels: Counter[str] = Counter()
        other = []
        for note in self.backend_notes():
            text = note.removeprefix(prefix)
            node, colon, what = text.partition(": ")
            if colon and node in nodes:
                kernels[_short(what)] += 1
            else:
                other.append(text)
        dense = len(rows) - sum(kernels.values())
        parts = [f"{count} {what}" for what, count in kernels.most_common()] + ([f"{dense} dense"] if dense else [])
        line = f"{self.backend} backend: {len(rows)} layers: {', '.join(parts) or 'none'}"
        if other:
            line += f"; {other[0]}" + (f" (+{len(other) - 1} more notes)" if len(other) > 1 else "")
        return line

    def report(self, show: bool = True) -> Report:
        report = build_report(self.graph, self.drift)
        report.notes.append(f"pipeline: {self.pipeline or '(none)'}; backend: {self.backend}")
        if self.drift:
            report.notes.append("drift: ||y - y_dense|| / ||y_dense|| of each layer's output on calibration batch 0")
        report.kernel_notes = self.backend_notes()  # e.g. the kernel each layer got, what triton fused
        if report.kernel_notes:
            report.notes.append(self.backend_summary())
        if show:
            print(report)
        return report


def _short(note: str) -> str:
    """A kernel note without its fallback clauses (what follows the first ';' outside parentheses) and
    without the parenthesized detail of the kernel it names."""
    depth, cut = 0, len(note)
    for i, char in enumerate(note):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == ";" and depth == 0:
            cut = i
            break
    head = note[:cut].strip()
    return re.sub(r"\s*\([^()]*(?:\([^()]*\)[^()]*)*\)$", "", head) if head.endswith(")") else head


_HF_DEFAULTS = {"attention_mask": torch.ones, "token_type_ids": torch.zeros}  # what HF models use for None


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """The graph's inputs: names in order (the first `positional` are passed to the runner by position, the
    rest by name) and, from each placeholder's meta["val"], its dtype (None: not a tensor), rank, static
    dims and dim symbols (plain data: no fake tensor is kept)."""

    names: tuple[str, ...]
    positional: int
    dtypes: tuple[torch.dtype | None, ...]
    ranks: tuple[int, ...]
    static: tuple[dict[int, int], ...]
    symbols: tuple[dict[int, str], ...]

    @classmethod
    def of(cls, gm: torch.fx.GraphModule) -> _Inputs | None:
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if any(str(n.target).startswith("*") for n in placeholders):
            return None
        info = getattr(gm.graph._codegen, "pytree_info", None)
        if info is None:
            names, positional = [str(n.target) for n in placeholders], len(placeholders)
        else:
            top = _children(info.in_spec)
            if info.in_spec.type is not tuple or len(top) != 2 or top[1].type is not dict:
                return None
            args, kwargs = _children(top[0]), _children(top[1])
            if not all(c.is_leaf() for c in args + kwargs) or len(args) > len(info.orig_args):
                return None
            names, positional = [*info.orig_args[: len(args)], *top[1].context], len(args)
        if len(names) != len(placeholders) or len(set(names)) != len(names):
            return None
        values = [n.meta.get("val") for n in placeholders]
        shapes = [v.shape if isinstance(v, torch.Tensor) else () for v in values]
        static = tuple({d: int(s) for d, s in enumerate(shape) if is_concrete_int(s)} for shape in shapes)
        symbols = tuple({d: str(s) for d, s in enumerate(shape) if not is_concrete_int(s)} for shape in shapes)
        dtypes = tuple(v.dtype if isinstance(v, torch.Tensor) else None for v in values)
        return cls(tuple(names), positional, dtypes, tuple(len(shape) for shape in shapes), static, symbols)

    def bind(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """(args, kwargs) for the runner: the inputs by the graph's names, defaults filled in, checked."""
        signature = f"({', '.join(self.names)})"
        if len(args) > len(self.names):
            raise InputError(f"the compiled model takes {len(self.names)} inputs {signature}; got {len(args)}")
        given = dict(zip(self.names, args))
        for name, value in kwargs.items():
            if name not in self.names:
                raise InputError(f"the compiled model has no input {name!r}; it was compiled for {signature}")
            if name in given:
                raise InputError(f"input {name!r} is given twice, by position and by name")
            given[name] = value
        for index, name in enumerate(self.names):
            if name not in given:
                given[name] = self._default(index, name, given, signature)
        seen: dict[str, tuple[int, int, int]] = {}  # dim symbol -> (size, input index, dim) first seen
        for index, name in enumerate(self.names):
            self._check(index, name, given[name], seen)
        values = [given[name] for name in self.names]
        return tuple(values[: self.positional]), dict(zip(self.names[self.positional :], values[self.positional :]))

    def _default(self, index: int, name: str, given: dict, signature: str) -> Any:
        ids, dtype = given.get("input_ids"), self.dtypes[index]
        if name in _HF_DEFAULTS and isinstance(ids, torch.Tensor) and dtype is not None:
            return _HF_DEFAULTS[name](ids.shape, dtype=dtype, device=ids.device)
        raise InputError(f"input {index} ({name}) is missing; the model was compiled for {signature}")

    def _check(self, index: int, name: str, got: Any, seen: dict) -> None:
        dtype, rank = self.dtypes[index], self.ranks[index]
        if dtype is None:
            return
        expected = "[" + ", ".join(str(self.static[index].get(d, "*")) for d in range(rank)) + "]"
        where = f"input {index} ({name})"
        if not isinstance(got, torch.Tensor):
            raise InputError(f"{where} is a {type(got).__name__}; the model was compiled for a tensor {expected}")
        shape = list(got.shape)
        if got.dim() != rank:
            raise InputError(f"{where} has shape {shape}; the model was compiled for {expected} (rank {rank})")
        if got.is_floating_point() != dtype.is_floating_point or got.is_complex() != dtype.is_complex:
            raise InputError(f"{where} is {got.dtype}; the model was compiled for {dtype} {expected}")
        for d, size in self.static[index].items():
            if shape[d] != size:
                raise InputError(
                    f"{where} has shape {shape}; the model was compiled for {expected} (dim {d} is fixed at {size})"
                )
        for d, symbol in self.symbols[index].items():
            size, first, first_dim = seen.setdefault(symbol, (shape[d], index, d))
            if shape[d] != size:
                raise InputError(
                    f"{where} has shape {shape}, dim {d} = {shape[d]}; input {first} ({self.names[first]}) has dim "
                    f"{first_dim} = {size}, and the model was traced with the two equal"
                )


def _children(spec: Any) -> list:
    """A TreeSpec's child specs (torch >= 2.10 `children()`, older `children_specs`)."""
    return list(spec.children()) if callable(getattr(spec, "children", None)) else list(spec.children_specs)
