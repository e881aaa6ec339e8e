"""fxc.save / fxc.load: a compiled model as a folder of safetensors plus a JSON manifest, never pickle.

    fxc.save(compiled, "out/")        # writes out/manifest.json and out/weights.safetensors
    cm = fxc.load("out/")             # the same CompiledModule: same graph, same outputs, no pass runs

`manifest.json` holds the format and fxc versions, the pipeline text, the backend name, the measured
per-layer drift, and the IR as a plain graph description: one entry per node (op, target, arguments,
fxc annotations via fxc.meta.to_json, the source line it was traced from, placeholder shapes), the
input/output tree structure (torch's JSON treespec) and, per get_attr tensor, the safetensors key it
is stored under (tied tensors are stored once). Call targets are written as names and resolved on
load only among torch.ops and a fixed list of Python modules (operator, math, builtins, torch), so a
manifest can name nothing else to import or run.

Integrity: the manifest records the SHA-256 and byte size of weights.safetensors and the SHA-256 of
its own body; load checks both before reading a tensor, so a truncated or edited file, or a manifest
written by an incompatible format version, raises FormatError naming the file and the fix.
Reads and writes only the folder it is given.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import json
import math
import operator
from pathlib import Path
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo

from fxc import ir, meta, registry
from fxc.backend import CompiledModule
from fxc.errors import FormatError

FORMAT = "fxc-compiled-model"
FORMAT_VERSION = 1
MANIFEST, WEIGHTS = "manifest.json", "weights.safetensors"
_PYTHON_TARGET_MODULES = {"operator": operator, "math": math, "builtins": builtins, "torch": torch}
_SPEC_TYPE_PACKAGES = ("transformers.", "torch.")  # modules a treespec may name, imported on load


def save(compiled: CompiledModule, path: str | Path) -> Path:
    """Write `compiled` (what fxc.compile returns) to the folder `path`; returns the folder."""
    from safetensors.torch import save_file

    from fxc import __version__

    if not isinstance(compiled, CompiledModule):
        raise TypeError(f"fxc.save takes what fxc.compile returns (a CompiledModule), got {type(compiled).__name__}")
    gm = compiled.graph
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, stored = _tensor_table(gm)
    save_file(stored, str(folder / WEIGHTS))
    codegen = gm.graph._codegen
    info = codegen.pytree_info if isinstance(codegen, _PyTreeCodeGen) else None
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fxc_version": __version__,
        "torch_version": torch.__version__,
        "pipeline": str(compiled.pipeline or ""),
        "backend": compiled.backend,
        "drift": {name: float(value) for name, value in (compiled.drift or {}).items()},
        "tensors": tensors,
        "graph": {
            "nodes": [_node_entry(node) for node in gm.graph.nodes],
            "pytree": None
            if info is None
            else {
                "orig_args": list(info.orig_args),
                "in_spec": _dump_spec(info.in_spec),
                "out_spec": _dump_spec(info.out_spec),
            },
        },
        "weights": {"sha256": _file_sha256(folder / WEIGHTS), "bytes": (folder / WEIGHTS).stat().st_size},
    }
    manifest = {**body, "manifest_sha256": _body_sha256(body)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, allow_nan=False))
    return folder


def load(path: str | Path, backend: str | None = None, backend_options: dict | None = None) -> CompiledModule:
    """Read a folder fxc.save wrote and lower it with its backend (or `backend`); runs no pass."""
    from safetensors.torch import load_file

    folder = Path(path)
    manifest = read_manifest(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FormatError(f"{weights} is missing; copy the whole folder fxc.save wrote")
    expected = manifest["weights"]
    if weights.stat().st_size != expected["bytes"] or _file_sha256(weights) != expected["sha256"]:
        raise FormatError(
            f"{weights} is truncated or was modified after saving ({weights.stat().st_size:,} bytes, manifest "
            f"says {expected['bytes']:,}; SHA-256 mismatch); save the model again or copy the file completely"
        )
    stored = load_file(str(weights))
    gm = _build_graph_module(manifest, stored, folder)
    name = backend or manifest["backend"]
    runner = registry.lookup("fxc.backends", name)(**(backend_options or {})).compile(gm, None)
    return CompiledModule(gm, runner, _pipeline(manifest["pipeline"]), name, (), dict(manifest["drift"]))


def read_manifest(folder: Path) -> dict:
    """The checked manifest of a saved folder (format, version and its own checksum)."""
    file = Path(folder) / MANIFEST
    if not file.is_file():
        raise FormatError(f"{file} not found: {folder} is not a folder written by fxc.save")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FormatError(f"{file} is not valid JSON ({error}); it is truncated or damaged: save the model again")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FormatError(f"{file} is not an fxc manifest (format {manifest.get('format')!r}, want {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise FormatError(
            f"{file} was written by fxc {manifest.get('fxc_version')} in format version "
            f"{manifest.get('format_version')}; this fxc reads version {FORMAT_VERSION}: load it with that fxc "
            "version or compress the model again with this one"
        )
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    if manifest.get("manifest_sha256") != _body_sha256(body):
        raise FormatError(f"{file} was modified after saving (its checksum does not match); save the model again")
    return manifest


# --- writing ---------------------------------------------------------------------------------------


def _tensor_table(gm: torch.fx.GraphModule) -> tuple[dict[str, dict], dict[str, torch.Tensor]]:
    """Every get_attr tensor → its storage key and kind; tied tensors share one key."""
    table: dict[str, dict] = {}
    stored: dict[str, torch.Tensor] = {}
    keys: dict[tuple, str] = {}
    params = {name for name, _ in gm.named_parameters(remove_duplicate=False)}
    buffers = {name for name, _ in gm.named_buffers(remove_duplicate=False)}
    for target in dict.fromkeys(n.target for n in gm.graph.nodes if n.op == "get_attr"):
        tensor = ir.get_tensor(gm, target).detach()
        identity = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                    tensor.stride(), tensor.dtype)
        if identity not in keys:
            keys[identity] = target
            stored[target] = tensor.cpu().contiguous().clone()
        kind = "parameter" if target in params else "buffer" if target in buffers else "attribute"
        table[target] = {"key": keys[identity], "kind": kind}
    return table, stored


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
    if module in _PYTHON_TARGET_MODULES and "." not in name and getattr(_PYTHON_TARGET_MODULES[module], name, None) is target:
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


def _file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _body_sha256(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


# --- reading ---------------------------------------------------------------------------------------


def _build_graph_module(manifest: dict, stored: dict[str, torch.Tensor], folder: Path) -> torch.fx.GraphModule:
    root = torch.nn.Module()
    for target, spec in manifest["tensors"].items():
        if spec["key"] not in stored:
            raise FormatError(f"{folder / WEIGHTS} has no tensor {spec['key']!r} that the manifest names")
        _register(root, target, stored[spec["key"]], spec["kind"])
    graph = torch.fx.Graph()
    env: dict[str, torch.fx.Node] = {}
    for entry in manifest["graph"]["nodes"]:
        target = entry["target"] if entry["op"] in ("placeholder", "get_attr", "output") else _resolve(entry)
        node = graph.create_node(
            entry["op"], target, _decode(entry["args"], env), _decode(entry["kwargs"], env), name=entry["name"]
        )
        env[entry["name"]] = node
        if entry.get("stack_trace"):
            node.meta["stack_trace"] = entry["stack_trace"]
        node.meta.update(meta.from_json(entry.get("fxc", {})))
    info = manifest["graph"]["pytree"]
    if info is not None:
        graph._codegen = _PyTreeCodeGen(
            _PyTreeInfo(info["orig_args"], _load_spec(info["in_spec"]), _load_spec(info["out_spec"]))
        )
    gm = torch.fx.GraphModule(root, graph)
    _restore_meta(gm, manifest["graph"]["nodes"])
    ir.verify(gm)
    return gm


def _register(root: torch.nn.Module, target: str, tensor: torch.Tensor, kind: str) -> None:
    prefix, _, attr = target.rpartition(".")
    owner = root
    for part in prefix.split(".") if prefix else []:
        if not hasattr(owner, part):
            owner.add_module(part, torch.nn.Module())
        owner = getattr(owner, part)
    if kind == "parameter":
        owner.register_parameter(attr, torch.nn.Parameter(tensor, requires_grad=False))
    elif kind == "buffer":
        owner.register_buffer(attr, tensor)
    else:
        setattr(owner, attr, tensor)


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


def _pipeline(text: str) -> Any:
    """The Pipeline object when its passes are installed here, else its text (it is only a record)."""
    from fxc.pipeline import Pipeline

    try:
        return Pipeline.parse(text)
    except Exception:
        return text
