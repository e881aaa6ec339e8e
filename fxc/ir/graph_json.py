"""The IR as JSON: a torch.fx GraphModule's graph written as plain data and rebuilt from it.

    data = graph_to_json(gm)                 # {"nodes": [...], "pytree": {...}}
    gm = graph_from_json(data, root)         # root: an nn.Module that holds the get_attr tensors
    check_graph_json(data)                   # the same checks, no module built (fast)

Each node is {name, op, target, args, kwargs}, plus its fxc annotations (fxc.ir.meta.to_json), the
source line it was traced from, and for placeholders dtype and shape (symbolic dims as a symbol
name and the traced size). Arguments are nodes, numbers, strings, dtypes, devices, layouts, slices
and containers of them. The input/output tree structure is torch's JSON treespec, read as data by
fxc/ir/treespec_json.py.

Reading treats the data as hostile: it checks every piece before building anything (names are
identifiers, targets come from the closed op set of fxc/ir/op_set.py, arguments fit the target's
schema: fxc/ir/graph_schema.py), builds the graph, then recomputes meta["val"] by fake-tensor
propagation from the placeholders' shapes, rejecting any node whose value is larger than
MAX_ELEMENTS elements or any size beyond int64, and checks the IR with fxc.ir.verify. Nothing runs
on real data and nothing is imported or evaluated. Writing refuses graphs outside the op set, so
what fxc.save writes, fxc.load reads. Reads and writes no files; raises FormatError naming the field
and the fix.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.fx
from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from fxc import ir
from fxc.errors import FormatError
from fxc.ir import meta, op_set, treespec_json
from fxc.ir.graph_schema import (
    NOT_FROM_FXC,
    check_attr_path,
    check_call,
    check_dtype,
    check_identifier,
    check_int,
    decode,
    fail,
)

MAX_ELEMENTS = 1 << 31  # elements of any one value, at the saved example sizes
MAX_NODES = 1 << 20
_SIZE_LIMIT = (1 << 63) - 1
_OPS = ("placeholder", "get_attr", "call_function", "output")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # control characters but tab and newline


def graph_to_json(gm: torch.fx.GraphModule) -> dict:
    """The graph of `gm` (not its tensors) as JSON-ready data."""
    codegen = gm.graph._codegen
    info = codegen.pytree_info if isinstance(codegen, _PyTreeCodeGen) else None
    return {
        "nodes": [_node_entry(node) for node in gm.graph.nodes],
        "pytree": None
        if info is None
        else {
            "orig_args": list(info.orig_args),
            "in_spec": treespec_json.dumps(info.in_spec),
            "out_spec": treespec_json.dumps(info.out_spec),
        },
    }


def graph_from_json(data: Any, root: torch.nn.Module, where: str = "graph") -> torch.fx.GraphModule:
    """A GraphModule over `root`'s tensors with the graph `data` describes, meta["val"] restored."""
    graph, shapes = _build_graph(data, where)
    try:
        gm = torch.fx.GraphModule(root, graph)
    except Exception as error:  # a get_attr naming no tensor, a graph fx cannot generate
        raise fail(where, f"cannot be built: {type(error).__name__}: {error}") from None
    _restore_meta(gm, shapes, where)
    try:
        ir.verify(gm)
    except FormatError:
        raise
    except Exception as error:
        raise fail(where, f"is not a valid fxc graph: {error}") from None
    return gm


def check_graph_json(data: Any, where: str = "graph") -> None:
    """Every check graph_from_json makes before it builds a module (names, op set, argument schemas,
    structure), without the shape propagation: fast, for readers that need no graph (`fxc report`)."""
    _build_graph(data, where)


def _build_graph(data: Any, where: str) -> tuple[torch.fx.Graph, dict[str, Any]]:
    """The checked nodes as a torch.fx Graph (no module, nothing run), and the placeholders' shapes."""
    if not isinstance(data, dict) or set(data) != {"nodes", "pytree"}:
        raise fail(where, "is not {nodes, pytree}")
    entries = data["nodes"]
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_NODES:
        raise fail(f"{where}.nodes", f"is not a list of 1 to {MAX_NODES:,} nodes")
    graph = torch.fx.Graph()
    env: dict[str, torch.fx.Node] = {}
    shapes: dict[str, Any] = {}
    for index, entry in enumerate(entries):
        at = f"{where}.nodes[{index}]"
        node = _build_node(graph, entry, env, at)
        if entry["op"] == "placeholder":
            shapes[node.name] = _placeholder_val(entry.get("val"), f"{at}.val")
        if node.op == "output" and index != len(entries) - 1:
            raise fail(at, "the output node is not the last node")
    if entries[-1].get("op") != "output":
        raise fail(f"{where}.nodes", "the graph has no output node")
    info = data["pytree"]
    if info is not None:
        graph._codegen = _PyTreeCodeGen(_pytree_info(info, len(shapes), f"{where}.pytree"))
    return graph, shapes


# --- writing ---------------------------------------------------------------------------------------


def _node_entry(node: torch.fx.Node) -> dict:
    entry: dict[str, Any] = {
        "name": node.name,
        "op": node.op,
        "target": node.target if isinstance(node.target, str) else _target_name(node),
        "args": _encode(node.args, node),
        "kwargs": _encode(node.kwargs, node),
    }
    annotations = meta.to_json(node)
    if annotations:
        entry["fxc"] = annotations
    if node.meta.get("stack_trace"):
        entry["stack_trace"] = node.meta["stack_trace"]
    if node.op == "placeholder" and isinstance(node.meta.get("val"), torch.Tensor):
        value = node.meta["val"]
        entry["val"] = {"dtype": _dtype_name(value.dtype), "shape": [_dim(d) for d in value.shape]}
    return entry


def _target_name(node: torch.fx.Node) -> str:
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        name = op_set.op_name(target)
    else:
        name = op_set.python_name(target) or repr(target)
    if name in op_set.allowed_names():
        return name
    raise FormatError(
        f"fxc.save cannot write node %{node.name}: it calls {name}, which is outside the op set a saved model may "
        "use (fxc/ir/op_set.py: the ops the reference backend runs); keep the model as a Python object, or "
        "compile it again where you load it"
    )


def _encode(value: Any, node: torch.fx.Node) -> Any:
    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, (list, tuple)):
        return {"list" if isinstance(value, list) else "tuple": [_encode(v, node) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[k, _encode(v, node)] for k, v in value.items()]}
    if isinstance(value, torch.dtype):
        return {"dtype": _dtype_name(value)}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, (torch.layout, torch.memory_format)):
        return {type(value).__name__: str(value).replace("torch.", "")}
    if isinstance(value, slice):
        return {"slice": [_encode(v, node) for v in (value.start, value.stop, value.step)]}
    raise FormatError(
        f"fxc.save cannot write an argument of type {type(value).__name__} of node %{node.name} ({node.target}); "
        "graph arguments must be nodes, numbers, strings, dtypes, devices or containers of them"
    )


def _dim(d: Any) -> Any:
    if isinstance(d, torch.SymInt):
        return {"symbol": str(d.node.expr), "hint": int(d.node.hint) if d.node.hint is not None else 1}
    return int(d)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# --- reading ---------------------------------------------------------------------------------------


def _build_node(graph: torch.fx.Graph, entry: Any, env: dict[str, torch.fx.Node], at: str) -> torch.fx.Node:
    """One checked node: its name, op, target and arguments, then fxc annotations and source line."""
    if not isinstance(entry, dict) or not {"name", "op", "target", "args", "kwargs"} <= set(entry):
        raise fail(at, "is not a node {name, op, target, args, kwargs}")
    extra = set(entry) - {"name", "op", "target", "args", "kwargs", "fxc", "stack_trace", "val"}
    if extra:
        raise fail(at, f"has unknown fields {sorted(extra)}")
    name = check_identifier(entry["name"], f"{at}.name")
    if name in env:
        raise fail(f"{at}.name", f"node name {name!r} is used twice")
    op = entry["op"]
    if op not in _OPS:
        raise fail(f"{at}.op", f"{op!r} is not one of {', '.join(_OPS)}")
    args = decode(entry["args"], env, f"{at}.args")
    kwargs = decode(entry["kwargs"], env, f"{at}.kwargs")
    if not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise fail(at, "args is not an encoded tuple or kwargs not an encoded dict")
    target = entry["target"]
    if op == "placeholder":
        target = check_identifier(target, f"{at}.target")
        if args or kwargs:
            raise fail(at, "a placeholder has arguments")
    elif op == "get_attr":
        target = check_attr_path(target, f"{at}.target")
        if args or kwargs:
            raise fail(at, "a get_attr node has arguments")
    elif op == "output":
        if target != "output" or len(args) != 1 or kwargs:
            raise fail(at, "the output node must be target 'output' with one argument")
    else:
        target = _resolve(target, f"{at}.target")
        arity = op_set.PYTHON_FUNCTIONS.get(entry["target"], (None, None))[1]
        check_call(target, entry["target"], args, kwargs, at, arity)
    node = graph.create_node(op, target, args, kwargs, name=name)
    env[name] = node
    if entry.get("stack_trace") is not None:
        node.meta["stack_trace"] = _stack_trace(entry["stack_trace"], f"{at}.stack_trace")
    annotations = entry.get("fxc", {})
    if not isinstance(annotations, dict):
        raise fail(f"{at}.fxc", "is not a dict of annotations")
    try:
        node.meta.update(meta.from_json(annotations))
    except (TypeError, ValueError) as error:
        raise fail(f"{at}.fxc", str(error)) from None
    return node


def _resolve(name: Any, at: str) -> Any:
    target = op_set.resolve(name) if isinstance(name, str) else None
    if target is not None:
        return target
    hint = (
        "it is an fxc op this fxc does not define: upgrade fxc"
        if isinstance(name, str) and name.startswith("torch.ops.fxc.")
        else f"a saved model may call only the ops of fxc/ir/op_set.py; {NOT_FROM_FXC}"
    )
    raise fail(at, f"{str(name)[:80]!r} is not in fxc's op set", hint)


def _stack_trace(value: Any, at: str) -> str:
    """Source lines are kept for messages; torch.fx puts them in generated comments, so no control
    characters (a carriage return would end the comment)."""
    if not isinstance(value, str) or len(value) > 1 << 16 or _CONTROL.search(value):
        raise fail(at, "is not plain text")
    return value


def _placeholder_val(spec: Any, at: str) -> dict | None:
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape"} or not isinstance(spec["shape"], list):
        raise fail(at, "is not {dtype, shape}")
    if len(spec["shape"]) > 16:
        raise fail(at, "has more than 16 dimensions")
    dims = []
    for index, d in enumerate(spec["shape"]):
        if isinstance(d, dict):
            if set(d) != {"symbol", "hint"}:
                raise fail(f"{at}.shape[{index}]", "is not {symbol, hint}")
            if not isinstance(d["symbol"], str) or len(d["symbol"]) > 200 or not d["symbol"].isprintable():
                raise fail(f"{at}.shape[{index}]", "the symbol is not a short name")
            dims.append({"symbol": d["symbol"], "hint": check_int(d["hint"], f"{at}.shape[{index}].hint", 0, 1 << 31)})
        else:
            dims.append(check_int(d, f"{at}.shape[{index}]", 0, 1 << 31))
    return {"dtype": check_dtype(spec["dtype"], f"{at}.dtype"), "shape": dims}


def _pytree_info(info: Any, placeholders: int, at: str) -> _PyTreeInfo:
    """The input/output structure; torch.fx writes `orig_args` into `def forward(...)`, so each is
    checked to be an identifier."""
    if not isinstance(info, dict) or set(info) != {"orig_args", "in_spec", "out_spec"}:
        raise fail(at, "is not {orig_args, in_spec, out_spec}")
    names = info["orig_args"]
    if not isinstance(names, list) or len(names) > max(placeholders, 1) * 4 + 64:
        raise fail(f"{at}.orig_args", "is not a list of argument names")
    names = [check_identifier(n, f"{at}.orig_args[{i}]") for i, n in enumerate(names)]
    if len(set(names)) != len(names) or "self" in names:
        raise fail(f"{at}.orig_args", "repeats a name or uses 'self'")
    in_spec = treespec_json.loads(info["in_spec"], f"{at}.in_spec")
    return _PyTreeInfo(names, in_spec, treespec_json.loads(info["out_spec"], f"{at}.out_spec"))


def _restore_meta(gm: torch.fx.GraphModule, shapes: dict[str, dict | None], where: str) -> None:
    """meta["val"] for every node: fake placeholders with the saved (symbolic) shapes, then a
    propagation that checks each value's size as it goes."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    symbols: dict[str, torch.SymInt] = {}
    inputs = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            spec = shapes.get(node.name)
            if spec is None:
                raise fail(f"{where}: placeholder %{node.name}", "has no saved dtype and shape")
            dims = [d if isinstance(d, int) else _symbol(mode, symbols, d) for d in spec["shape"]]
            with mode:
                node.meta["val"] = torch.empty(dims, dtype=spec["dtype"])
            inputs.append(node.meta["val"])
    try:
        _CheckedProp(gm, mode, where).propagate_dont_convert_inputs(*inputs)
    except FormatError as error:  # without the "While executing" lines torch.fx's interpreter appends
        raise FormatError(str(error).split("\n\nWhile executing")[0]) from None
    except Exception as error:
        raise fail(where, f"its nodes do not fit together ({type(error).__name__}: {str(error)[:300]})") from None
    for node in gm.graph.nodes:  # ops that return nothing (export records their value as None)
        if node.op == "call_function" and hasattr(node.target, "_schema") and not node.target._schema.returns:
            node.meta.setdefault("val", None)


def _symbol(mode: Any, symbols: dict[str, torch.SymInt], dim: dict) -> Any:
    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import DimDynamic

    name = dim["symbol"]
    if name not in symbols:
        env = mode.shape_env
        symbol = env.create_symbol(dim["hint"], ConstantSource(name), dynamic_dim=DimDynamic.DYNAMIC)
        symbols[name] = env.create_symintnode(symbol, hint=dim["hint"])
    return symbols[name]


def _check_value(value: Any, node: torch.fx.Node, where: str) -> None:
    """No value larger than MAX_ELEMENTS, no size beyond int64 (a file cannot ask for terabytes)."""
    for leaf in torch.utils._pytree.tree_leaves(value):
        if isinstance(leaf, torch.Tensor):
            numel = leaf.numel()
            count = int(numel.node.hint) if isinstance(numel, torch.SymInt) and numel.node.hint is not None else numel
            if isinstance(count, int) and count > MAX_ELEMENTS:
                raise fail(f"{where}: node %{node.name}", f"makes {count:,} elements (more than {MAX_ELEMENTS:,})")
        elif isinstance(leaf, (torch.SymInt, int)) and not isinstance(leaf, bool):
            hint = leaf.node.hint if isinstance(leaf, torch.SymInt) else leaf
            if hint is not None and abs(int(hint)) > _SIZE_LIMIT:
                raise fail(f"{where}: node %{node.name}", "computes a size beyond int64")


class _CheckedProp(FakeTensorProp):
    def __init__(self, gm: torch.fx.GraphModule, mode: Any, where: str):
        super().__init__(gm, mode)
        self.where = where

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        _check_value(result, n, self.where)
        return result
