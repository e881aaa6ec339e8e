"""The IR as JSON: a torch.fx GraphModule's graph written as plain data and rebuilt from it.

    data = graph_to_json(gm)                 # {"nodes": [...], "pytree": {...}}
    gm = graph_from_json(data, root)         # root: an nn.Module that holds the get_attr tensors

Each node is {name, op, target, args, kwargs}, plus its fxc annotations (fxc.ir.meta.to_json), the
source line it was traced from, and for placeholders dtype and shape (symbolic dims as a symbol
name and the traced size). Arguments are nodes, numbers, strings, dtypes, devices, layouts, slices
and containers of them. Call targets are written as names and resolved on reading only among
torch.ops and a fixed list of Python modules (operator, math, builtins, torch), so the data can name
nothing else to import or run. The input/output tree structure uses torch's JSON treespec (its
types from transformers or torch are imported to register them). Rebuilding recomputes meta["val"]
by fake-tensor propagation from the placeholders' shapes, then checks the IR with fxc.ir.verify.
Reads and writes no files; raises FormatError for data it cannot write or rebuild.
"""

from __future__ import annotations

import builtins
import importlib
import json
import math
import operator
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo

from fxc import ir
from fxc.errors import FormatError
from fxc.ir import meta

_PYTHON_TARGET_MODULES = {"operator": operator, "math": math, "builtins": builtins, "torch": torch}
_SPEC_TYPE_PACKAGES = ("transformers.", "torch.")  # modules a treespec may name, imported on reading


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
            "in_spec": _dump_spec(info.in_spec),
            "out_spec": _dump_spec(info.out_spec),
        },
    }


def graph_from_json(data: dict, root: torch.nn.Module) -> torch.fx.GraphModule:
    """A GraphModule over `root`'s tensors with the graph `data` describes, meta["val"] restored."""
    graph = torch.fx.Graph()
    env: dict[str, torch.fx.Node] = {}
    for entry in data["nodes"]:
        target = entry["target"] if entry["op"] in ("placeholder", "get_attr", "output") else _resolve(entry)
        node = graph.create_node(
            entry["op"], target, _decode(entry["args"], env), _decode(entry["kwargs"], env), name=entry["name"]
        )
        env[entry["name"]] = node
        if entry.get("stack_trace"):
            node.meta["stack_trace"] = entry["stack_trace"]
        node.meta.update(meta.from_json(entry.get("fxc", {})))
    info = data["pytree"]
    if info is not None:
        graph._codegen = _PyTreeCodeGen(
            _PyTreeInfo(info["orig_args"], _load_spec(info["in_spec"]), _load_spec(info["out_spec"]))
        )
    gm = torch.fx.GraphModule(root, graph)
    _restore_meta(gm, data["nodes"])
    ir.verify(gm)
    return gm


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
        return f"torch.ops.{target.namespace}.{target._opname}.{target._overloadname}"
    module = getattr(target, "__module__", None) or ""
    module = {"_operator": "operator"}.get(module, module)
    name = getattr(target, "__qualname__", getattr(target, "__name__", ""))
    owner = _PYTHON_TARGET_MODULES.get(module)
    if owner is not None and "." not in name and getattr(owner, name, None) is target:
        return f"{module}.{name}"
    raise FormatError(
        f"fxc.save cannot write node %{node.name}: its target {target!r} is neither a torch op nor a function of "
        f"{', '.join(_PYTHON_TARGET_MODULES)}; such graphs can only be rebuilt by compiling the model again"
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


def _dump_spec(spec: Any) -> str | None:
    return None if spec is None else pytree.treespec_dumps(spec)


# --- reading ---------------------------------------------------------------------------------------


def _resolve(entry: dict) -> Any:
    name = entry["target"]
    if name.startswith("torch.ops."):
        parts = name.split(".")
        if len(parts) == 5:
            packet = getattr(getattr(torch.ops, parts[2]), parts[3], None)
            overload = getattr(packet, parts[4], None) if packet is not None else None
            if overload is not None:
                return overload
        hint = " (an fxc op from a newer fxc?)" if name.startswith("torch.ops.fxc.") else ""
        raise FormatError(f"node %{entry['name']} calls {name}, which this torch/fxc does not define{hint}")
    module, _, attr = name.rpartition(".")
    if module in _PYTHON_TARGET_MODULES and hasattr(_PYTHON_TARGET_MODULES[module], attr):
        return getattr(_PYTHON_TARGET_MODULES[module], attr)
    raise FormatError(
        f"node %{entry['name']} names target {name!r}; a manifest may only name torch ops and functions of "
        f"{', '.join(_PYTHON_TARGET_MODULES)}"
    )


def _decode(value: Any, env: dict[str, torch.fx.Node]) -> Any:
    if not isinstance(value, dict):
        return value
    (kind, data), = value.items()
    if kind == "node":
        return env[data]
    if kind in ("list", "tuple"):
        items = [_decode(v, env) for v in data]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {k: _decode(v, env) for k, v in data}
    if kind == "float":
        return float(data)
    if kind == "dtype":
        return getattr(torch, data)
    if kind == "device":
        return torch.device(data)
    if kind in ("layout", "memory_format"):
        return getattr(torch, data)
    if kind == "slice":
        return slice(*(_decode(v, env) for v in data))
    raise FormatError(f"unknown argument encoding {kind!r} in the manifest")


def _load_spec(text: str | None) -> Any:
    if text is None:
        return None
    for type_name in _spec_type_names(json.loads(text)):
        module = type_name.rpartition(".")[0]
        if module.startswith(_SPEC_TYPE_PACKAGES):
            importlib.import_module(module)  # registers its pytree node types
    try:
        return pytree.treespec_loads(text)
    except Exception as error:
        raise FormatError(f"the saved input/output structure cannot be rebuilt: {error}") from error


def _spec_type_names(data: Any) -> list[str]:
    if isinstance(data, dict):
        own = [data["type"]] if isinstance(data.get("type"), str) else []
        return own + [n for child in data.get("children_spec", []) for n in _spec_type_names(child)]
    if isinstance(data, list):
        return [n for item in data for n in _spec_type_names(item)]
    return []


def _restore_meta(gm: torch.fx.GraphModule, entries: list[dict]) -> None:
    """meta["val"] for every node: fake placeholders with the saved (symbolic) shapes, then propagation."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    symbols: dict[str, torch.SymInt] = {}
    shapes = {e["name"]: e["val"] for e in entries if e["op"] == "placeholder" and "val" in e}
    for node in gm.graph.nodes:
        if node.op == "placeholder" and node.name in shapes:
            spec = shapes[node.name]
            dims = [d if isinstance(d, int) else _symbol(mode, symbols, d) for d in spec["shape"]]
            with mode:
                node.meta["val"] = torch.empty(dims, dtype=getattr(torch, spec["dtype"]))
    ir.refresh_meta(gm)
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
