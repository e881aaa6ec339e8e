"""The dynamo frontend: the graph a torch.compile backend receives, lifted into the canonical IR.

    lifted = lift_dynamo_graph(gm, example_inputs, model)    # inside a torch.compile backend call
    graph = canonicalize_dynamo_graph(gm, example_inputs)     # lift, then export (outside the call)
    fxc.trace(model, example_inputs, frontend="dynamo")       # uses dynamo_capture, match_signature,
                                                              # restore_output_structure below

Dynamo hands a backend a graph whose weights are placeholders and whose sizes may be SymInt
placeholders. `lift_dynamo_graph` turns each weight into a get_attr constant named by its module path
(by identity with the model's parameters and buffers when the model is given, else from dynamo's
recorded source, `L['self']._modules['fc']._parameters['weight']`) and reads each size off the input
it came from, so it stays dynamic. Dynamo's source records exist only during the backend call: lift
there, export (fxc/frontend/export.py) after it, since exporting inside the call breaks dynamo's
guards. `dynamo_capture` runs torch.compile with a capturing backend to get one whole-model graph (it resets
dynamo's caches before and after);
`match_signature` gives it the model's own inputs and `restore_output_structure` its output
structure. Reads the graph and inputs it is given and the model's tensors (the lifted graph shares
them until export copies them); writes only new graph modules; preserves the model and dynamo's
graph as they were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree

from fxc import ir
from fxc.errors import TraceError
from fxc.frontend.export import export_canonical, first_line


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
    exported = export_canonical(lifted.gm, tuple(lifted.user_values), {}, "dynamo", dynamic)
    return DynamoGraph(exported, lifted.user_inputs)


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
            ir.register_tensor(root, name, value, "parameter" if isinstance(value, torch.nn.Parameter) else "buffer")
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


def match_signature(lifted: LiftedGraph, model: torch.nn.Module, args: tuple, kwargs: dict) -> None:
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


def restore_output_structure(gm: torch.fx.GraphModule, model: torch.nn.Module, args: tuple, kwargs: dict) -> None:
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


def dynamo_capture(model: torch.nn.Module, args: tuple, kwargs: dict) -> LiftedGraph:
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
            f"{type(error).__name__}: {first_line(error)}\n  try frontend='export', or use "
            "torch.compile(model, backend='fxc'), which compiles each graph piece"
        ) from error
    finally:
        torch._dynamo.reset()
    return captured[0]


def _source_name(node: torch.fx.Node) -> str:
    grapharg = node.meta.get("grapharg")
    source = grapharg.source.name if grapharg is not None else ""
    return source() if callable(source) else source


def _state_name(node: torch.fx.Node) -> str | None:
    source = _source_name(node)
    if "_parameters[" not in source and "_buffers[" not in source:
        return None
    return ".".join(re.findall(r"\[['\"]([^'\"]+)['\"]\]", source)[1:]) or None
