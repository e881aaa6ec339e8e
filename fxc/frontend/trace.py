"""Frontends: capture a model into the canonical IR (see fxc/ir.py).

    fxc.trace(model, example_inputs)                        # "export" (default): torch.export
    fxc.trace(model, example_inputs, frontend="symbolic")   # torch.fx.symbolic_trace first
    fxc.trace(model, example_inputs, frontend="dynamo")     # the graph torch.compile hands a backend
    lift_dynamo_graph(gm, example_inputs)                   # inside a torch.compile backend call, then
    canonicalize_dynamo_graph(gm, example_inputs)           # lift + export (outside the backend call)

Every path ends in `torch.export.export(..., strict=False).module()`, so all three give the same
canonical form: ATen ops, weights as get_attr, meta["val"] on every node, LayerInfo on each layer.
Tensor input dims are traced as `Dim.AUTO` (dynamic where the model allows), so calibration and
inference can use other batch sizes and sequence lengths. The model is traced in eval mode (its
mode is restored; Hugging Face models with `use_cache` off) and the graph gets its own copy of
every weight, so passes never touch the user's model. Reads the model; writes nothing.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch.export import Dim

from fxc import ir
from fxc.errors import TraceError
from fxc.ir import meta
from fxc.passmgr.calibration import as_batch

FRONTENDS = ("export", "symbolic", "dynamo")


def trace(
    model: torch.nn.Module, example_inputs: Any, frontend: str = "export", dynamic: bool = True
) -> torch.fx.GraphModule:
    """Capture `model` called on `example_inputs` (a tensor, tuple, or dict of keyword inputs)."""
    if frontend not in FRONTENDS:
        raise TraceError(f"unknown frontend '{frontend}'; choose one of {', '.join(FRONTENDS)}")
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"fxc traces an nn.Module, got {type(model).__name__}; wrap functions in a Module")
    if example_inputs is None:
        raise TraceError("tracing needs example_inputs: a batch the model accepts, e.g. (torch.randn(1, 16),)")
    args, kwargs = as_batch(example_inputs)
    with _eval_mode(model):
        if frontend == "export":
            source = model
        elif frontend == "symbolic":
            source = _symbolic(model)
        else:
            lifted = _dynamo_capture(model, args, kwargs)
            _match_signature(lifted, model, args, kwargs)
            source = lifted.gm
        gm = _export(source, args, kwargs, frontend, dynamic)
        if frontend == "dynamo":
            _restore_output_structure(gm, model, *as_batch(example_inputs))
        return gm


@dataclass
class DynamoGraph:
    """A torch.compile graph in canonical form. `user_inputs` are the positions, among the
    arguments the dynamo graph is called with, of the real inputs (not weights, not sizes)."""

    gm: torch.fx.GraphModule
    user_inputs: list[int]


def canonicalize_dynamo_graph(
    gm: torch.fx.GraphModule,
    example_inputs: list[Any],
    model: torch.nn.Module | None = None,
    dynamic: bool = True,
) -> DynamoGraph:
    """Turn the graph a torch.compile backend receives into canonical IR: `lift_dynamo_graph`, then
    export. Call `lift_dynamo_graph` inside the backend call (dynamo's source records exist only
    then) and this export step outside it: exporting inside a backend call breaks dynamo's guards."""
    lifted = lift_dynamo_graph(gm, example_inputs, model)
    return DynamoGraph(_export(lifted.gm, tuple(lifted.user_values), {}, "dynamo", dynamic), lifted.user_inputs)


@dataclass
class LiftedGraph:
    """A dynamo graph with weights turned into get_attr constants; still torch-level ops."""

    gm: torch.fx.GraphModule
    user_inputs: list[int]
    user_values: list[torch.Tensor]
    user_sources: list[str]  # dynamo's name for each input, e.g. "L['input_ids']"
    user_ids: list[int]  # id() of each input tensor dynamo was called with


def lift_dynamo_graph(
    gm: torch.fx.GraphModule, example_inputs: list[Any], model: torch.nn.Module | None = None
) -> LiftedGraph:
    """Weights arrive as
    placeholders: each is mapped back to its module path by identity with `model`'s parameters and
    buffers when given, else from dynamo's recorded source
    (`L['self']._modules['fc']._parameters['weight']`)."""
    names = {}
    if model is not None:
        state = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
        names = {id(t): n for n, t in state.items()}
    root = torch.nn.Module()
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, object] = {}
    user_inputs, user_values, user_sources, user_ids, sizes = [], [], [], [], []
    by_source: dict[str, torch.fx.Node] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for index, (node, value) in enumerate(zip(placeholders, example_inputs)):
        name = names.get(id(value)) or _state_name(node)
        if isinstance(value, torch.Tensor) and name is not None:
            _register(root, name, value)
            env[node] = graph.get_attr(name)
        elif isinstance(value, torch.Tensor):
            env[node] = graph.placeholder(node.name)
            by_source[_source_name(node)] = env[node]
            user_inputs.append(index)
            user_sources.append(_source_name(node))
            user_ids.append(id(value))
            user_values.append(value.detach().clone())  # export must not touch the guarded input
        else:
            sizes.append((node, value))
    for node, value in sizes:  # a SymInt size: read it off the input it came from, so it stays dynamic
        match = re.fullmatch(r"(.*)\.size\(\)\[(\d+)\]", _source_name(node))
        base = by_source.get(match.group(1)) if match else None
        if base is not None:
            env[node] = graph.call_function(torch.ops.aten.sym_size.int, (base, int(match.group(2))))
        else:  # no record of its origin: specialize to the example's size
            env[node] = value.node.hint if isinstance(value, torch.SymInt) else value
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            env[node] = graph.node_copy(node, lambda n: env[n])
    lifted = torch.fx.GraphModule(root, graph)
    for name, module in gm.named_children():
        lifted.add_module(name, module)
    return LiftedGraph(lifted, user_inputs, user_values, user_sources, user_ids)


def _match_signature(lifted: LiftedGraph, model: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """Give the lifted graph the model's own inputs (names and order), so it is called like the model."""
    import inspect

    bound = inspect.signature(model.forward).bind(*args, **kwargs)
    graph = lifted.gm.graph
    old = dict(zip(lifted.user_ids, [n for n in graph.nodes if n.op == "placeholder"]))
    first = next(iter(graph.nodes))
    for name, value in bound.arguments.items():
        with graph.inserting_before(first):
            new = graph.placeholder(name)
        if id(value) in old:
            old.pop(id(value)).replace_all_uses_with(new)
    if old:
        sources = [s for s, i in zip(lifted.user_sources, lifted.user_ids) if i in old]
        raise TraceError(
            f"frontend 'dynamo': graph inputs {sources} are not arguments of forward; use frontend='export'"
        )
    for node in [n for n in graph.nodes if n.op == "placeholder" and n.target not in bound.arguments]:
        graph.erase_node(node)
    lifted.gm.recompile()


def _restore_output_structure(gm: torch.fx.GraphModule, model: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """Dynamo graphs return a flat tuple; give the graph the model's own output structure."""
    with torch.no_grad():
        leaves, spec = pytree.tree_flatten(model(*args, **kwargs))
    info = gm.graph._codegen.pytree_info
    output = next(n for n in gm.graph.nodes if n.op == "output")
    if info is None or len(pytree.tree_leaves(output.args[0])) != len(leaves):
        return
    gm.graph._codegen.pytree_info = info._replace(out_spec=spec)
    gm._out_spec = spec
    gm.recompile()


def _source_name(node: torch.fx.Node) -> str:
    grapharg = node.meta.get("grapharg")
    source = grapharg.source.name if grapharg is not None else ""
    return source() if callable(source) else source


def _state_name(node: torch.fx.Node) -> str | None:
    source = _source_name(node)
    if "_parameters[" not in source and "_buffers[" not in source:
        return None
    return ".".join(re.findall(r"\[['\"]([^'\"]+)['\"]\]", source)[1:]) or None


def _register(root: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    prefix, _, attr = name.rpartition(".")
    owner = root
    for part in prefix.split(".") if prefix else []:
        if not hasattr(owner, part):
            owner.add_module(part, torch.nn.Module())
        owner = getattr(owner, part)
    if isinstance(value, torch.nn.Parameter):
        owner.register_parameter(attr, value)
    else:
        owner.register_buffer(attr, value)


def _symbolic(model: torch.nn.Module) -> torch.fx.GraphModule:
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as error:
        raise TraceError(
            f"frontend 'symbolic' could not trace {type(model).__name__}: {type(error).__name__}: "
            f"{_first_line(error)}\n  try frontend='export' (torch.export handles Hugging Face models "
            "and most Python control flow on shapes)"
        ) from error


def _dynamo_capture(model: torch.nn.Module, args: tuple, kwargs: dict) -> LiftedGraph:
    captured: list[LiftedGraph] = []

    def backend(gm, example_inputs):  # dynamo's source records are only there during this call
        captured.append(lift_dynamo_graph(gm, list(example_inputs), model))
        return gm

    import torch._dynamo

    torch._dynamo.reset()
    for tensor in pytree.tree_leaves((args, kwargs)):
        if isinstance(tensor, torch.Tensor):
            for dim in range(tensor.dim()):
                torch._dynamo.maybe_mark_dynamic(tensor, dim)
    try:
        with torch.no_grad():
            torch.compile(model, backend=backend, fullgraph=True)(*args, **kwargs)
    except Exception as error:
        raise TraceError(
            f"frontend 'dynamo' could not capture {type(model).__name__} in one graph: "
            f"{type(error).__name__}: {_first_line(error)}\n  try frontend='export', or use "
            "torch.compile(model, backend='fxc'), which compiles each graph piece"
        ) from error
    finally:
        torch._dynamo.reset()
    return captured[0]


def _export(source: torch.nn.Module, args: tuple, kwargs: dict, frontend: str, dynamic: bool) -> torch.fx.GraphModule:
    dims = None
    if dynamic:
        dims = pytree.tree_map(
            lambda x: {d: Dim.AUTO for d in range(x.dim())} if isinstance(x, torch.Tensor) else None,
            (args, kwargs),
        )
        dims = _as_dynamic_shapes(source, args, kwargs, dims)
    try:
        with torch.no_grad():
            exported = torch.export.export(source, args, kwargs, dynamic_shapes=dims, strict=False)
    except Exception as error:
        other = "symbolic" if frontend != "symbolic" else "export"
        raise TraceError(
            f"frontend '{frontend}' could not trace {type(source).__name__}: {type(error).__name__}: "
            f"{_first_line(error)}{_user_frame(error)}\n  try frontend='{other}', or make the failing "
            "line traceable (no data-dependent Python control flow on tensor values)"
        ) from error
    gm = exported.module()
    _canonicalize(gm)
    return gm


def _as_dynamic_shapes(source, args, kwargs, dims):
    """export wants dynamic_shapes keyed like the forward signature."""
    import inspect

    params = list(inspect.signature(source.forward).parameters)
    arg_dims, kwarg_dims = dims
    out = {params[i]: d for i, d in enumerate(arg_dims) if i < len(params)}
    out.update(kwarg_dims)
    if any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(source.forward).parameters.values()):
        return None
    return out


def _canonicalize(gm: torch.fx.GraphModule) -> None:
    """Drop export's runtime guard call and unused tensors, give the graph its own weights, annotate layers."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            gm.graph.erase_node(node)
    if hasattr(gm, "_guards_fn"):
        delattr(gm, "_guards_fn")
    copies: dict[int, torch.Tensor] = {}  # tied weights stay tied
    with torch.no_grad():
        for name, tensor in list(gm.named_parameters(remove_duplicate=False)) + list(
            gm.named_buffers(remove_duplicate=False)
        ):
            ir.set_tensor(gm, name, copies.setdefault(id(tensor), tensor.detach().clone()))
    ir.remove_unused_tensors(gm)  # e.g. BatchNorm's num_batches_tracked
    for layer in ir.weight_layers(gm, kinds=("linear", "conv2d", "embedding")):
        meta.put(layer.node, meta.LayerInfo(fqn=layer.weight.rsplit(".", 1)[0], kind=layer.kind))
    gm.recompile()
    ir.verify(gm)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    """Eval mode, and for Hugging Face models no KV cache (the graph is one full-sequence forward)."""
    was_training = model.training
    config = getattr(model, "config", None)
    had_cache = getattr(config, "use_cache", None)
    model.eval()
    if had_cache:
        config.use_cache = False
    try:
        yield
    finally:
        model.train(was_training)
        if had_cache:
            config.use_cache = had_cache


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _user_frame(error: BaseException) -> str:
    """The innermost traceback frame outside torch: the user's failing line."""
    import traceback

    package = str(Path(__file__).parent)
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if "/torch/" not in f.filename and not f.filename.startswith(("<", package))
    ]
    if not frames:
        return ""
    f = frames[-1]
    return f"\n  at {f.filename}:{f.lineno} in {f.name}: {f.line}"
