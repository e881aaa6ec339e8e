"""fxc.save / fxc.load: a compiled model as a folder of safetensors plus a JSON manifest, never pickle.

    fxc.save(compiled, "out/")        # writes out/manifest.json and out/weights.safetensors
    cm = fxc.load("out/")             # the same CompiledModule: same graph, same outputs, no pass runs

`manifest.json` holds the format and fxc versions, the pipeline text, the backend name and its
options (JSON values only: save raises OptionError for one that JSON cannot hold), the measured
per-layer drift, the IR as a plain graph description (fxc/ir/graph_json.py: nodes with their fxc
annotations, input/output structure; call targets resolved only among torch ops and a few Python
modules, so a manifest can name nothing else to import or run) and, per get_attr tensor, its kind
and the safetensors key it is stored under (tied tensors are stored once).

Integrity: the manifest records the SHA-256 and byte size of weights.safetensors and the SHA-256 of
its own body; load checks both before reading a tensor, so a truncated or edited file, or a manifest
written by an incompatible format version, raises FormatError naming the file and the fix.

Versions: format version 1 throughout. `backend_options` is an optional key added within it: a manifest
without it (written before) loads with no backend options, and a reader that predates the key ignores
it (the options tune the backend, the graph and weights fix the outputs), so no version bump.
Reads and writes only the folder it is given.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.fx

from fxc import ir
from fxc.api.backend import CompiledModule, make_backend
from fxc.errors import FormatError, OptionError
from fxc.ir.graph_json import graph_from_json, graph_to_json
from fxc.version import __version__

FORMAT = "fxc-compiled-model"
FORMAT_VERSION = 1
MANIFEST, WEIGHTS = "manifest.json", "weights.safetensors"


def save(compiled: CompiledModule, path: str | Path) -> Path:
    """Write `compiled` (what fxc.compile returns) to the folder `path`; returns the folder."""
    from safetensors.torch import save_file

    if not isinstance(compiled, CompiledModule):
        raise TypeError(f"fxc.save takes what fxc.compile returns (a CompiledModule), got {type(compiled).__name__}")
    gm = compiled.graph
    options = _json_options(getattr(compiled, "backend_options", {}), compiled.backend)  # fails before writing
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, stored = _tensor_table(gm)
    save_file(stored, str(folder / WEIGHTS))
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fxc_version": __version__,
        "torch_version": torch.__version__,
        "pipeline": str(compiled.pipeline or ""),
        "backend": compiled.backend,
        "backend_options": options,
        "drift": {name: float(value) for name, value in (compiled.drift or {}).items()},
        "tensors": tensors,
        "graph": graph_to_json(gm),
        "weights": {"sha256": _file_sha256(folder / WEIGHTS), "bytes": (folder / WEIGHTS).stat().st_size},
    }
    manifest = {**body, "manifest_sha256": _body_sha256(body)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, allow_nan=False))
    return folder


def load(path: str | Path, backend: str | None = None, backend_options: dict | None = None) -> CompiledModule:
    """Read a folder fxc.save wrote and lower it with its backend (or `backend`); runs no pass.

    backend_options: by default the saved ones when the backend is the saved one, none for another
    backend (they were that backend's); a dict given here replaces them."""
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
    root = torch.nn.Module()
    made: dict[tuple[str, str], torch.Tensor] = {}  # one object per stored tensor and kind: ties survive
    for target, spec in manifest["tensors"].items():
        key, kind = spec["key"], spec["kind"]
        if key not in stored:
            raise FormatError(f"{weights} has no tensor {key!r}, which the manifest names")
        if (key, kind) not in made:
            value = stored[key]
            made[key, kind] = torch.nn.Parameter(value, requires_grad=False) if kind == "parameter" else value
        ir.register_tensor(root, target, made[key, kind], kind)
    gm = graph_from_json(manifest["graph"], root)
    name = backend or manifest["backend"]
    if backend_options is None:
        backend_options = _saved_options(manifest) if name == manifest["backend"] else {}
    runner = make_backend(name, backend_options).compile(gm, None)
    pipeline, drift = _pipeline(manifest["pipeline"]), dict(manifest["drift"])
    return CompiledModule(gm, runner, pipeline, name, (), drift, backend_options=backend_options)


def read_manifest(folder: Path) -> dict:
    """The checked manifest of a saved folder (format, version and its own checksum)."""
    file = Path(folder) / MANIFEST
    if not file.is_file():
        raise FormatError(f"{file} not found: {folder} is not a folder written by fxc.save")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FormatError(
            f"{file} is not valid JSON ({error}); it is truncated or damaged: save the model again"
        ) from None
    found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
    if found != FORMAT:
        raise FormatError(f"{file} is not an fxc manifest (format {found!r}, want {FORMAT!r})")
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


def _json_options(options: dict, backend: str) -> dict:
    """The backend options as JSON values, checked: an option JSON cannot hold raises OptionError."""

    def check(value: Any, where: str) -> None:
        if value is None or isinstance(value, (bool, int, str)):
            return
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise OptionError(f"{where} is {value}, which JSON cannot hold; fxc.save stores finite numbers only")
            return
        if isinstance(value, list):
            for index, item in enumerate(value):
                check(item, f"{where}[{index}]")
            return
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise OptionError(f"{where} has the key {key!r}; fxc.save stores dicts with str keys only")
                check(item, f"{where}[{key!r}]")
            return
        fix = "pass a list" if isinstance(value, tuple) else "pass str(path)" if isinstance(value, Path) else (
            "pass a str, number, bool, None, list or dict instead")
        raise OptionError(
            f"{where} is a {type(value).__name__} ({value!r}), which fxc.save cannot store in the JSON manifest; "
            f"{fix}, or compile without it and give it to fxc.load(path, backend_options=...)"
        )

    for name, value in (options or {}).items():
        check(value, f"backend option {name!r} of backend {backend!r}")
    return dict(options or {})


def _file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _body_sha256(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


# --- reading ---------------------------------------------------------------------------------------


def _saved_options(manifest: dict) -> dict:
    """The saved backend options; {} for a manifest written before they were saved."""
    options = manifest.get("backend_options", {})
    if not isinstance(options, dict):
        raise FormatError(f"the manifest's backend_options is a {type(options).__name__}, not a dict; save again")
    return dict(options)


def _pipeline(text: str) -> Any:
    """The Pipeline object when its passes are installed here, else its text (it is only a record)."""
    from fxc.passmgr.pipeline import Pipeline

    try:
        return Pipeline.parse(text)
    except Exception:
        return text
