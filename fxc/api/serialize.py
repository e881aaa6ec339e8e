"""fxc.save / fxc.load: a compiled model as a folder of safetensors plus a JSON manifest, never pickle.

    fxc.save(compiled, "out/")        # writes out/manifest.json and out/weights.safetensors
    cm = fxc.load("out/")             # the same CompiledModule: same graph, same outputs, no pass runs

`manifest.json` holds the format and fxc versions, the pipeline text, the backend name and its
options (JSON values only: save raises OptionError for one that JSON cannot hold), the measured
per-layer drift, the IR as a plain graph description (fxc/ir/graph_json.py: nodes with their fxc
annotations, input/output structure) and, per get_attr tensor, its kind, dtype, shape and the
safetensors key it is stored under (tied tensors are stored once).

Loading never runs anything from the files (the threat model is in the README): the manifest's
fields are checked (fxc/api/manifest.py), the graph is built only from the closed op set with each
call's arguments checked against the op's schema (fxc/ir/graph_json.py), the safetensors header's
dtypes and shapes must match the manifest before a tensor is read, and safetensors itself holds no
code. Integrity: the manifest records the SHA-256 and byte size of weights.safetensors and the
SHA-256 of its own body, which catch damage (they are not a signature: anyone can recompute them).
Every failed check raises FormatError naming the file, the field and the fix.

Saving is atomic (fxc/api/atomic_folder.py): the files are written into a sibling temporary
folder that is renamed into place, so a crash leaves the old model or the new one.

Versions: format version 1 throughout. `backend_options`, `hf_config` (the model's Hugging Face config, which
fxc.compile records for a transformers model and fxc.export reads) and `kv_cache` (the record of a causal LM's
KV-cache step graph, fxc/ir/kv_signature.py: checked by fxc/api/manifest.py, then against the graph it describes)
are optional keys added within it: a manifest without them (written before) loads with no backend options, no
config and no step record, and a reader that predates a key ignores it (the options tune the backend, the config
only describes the model, and the step graph is an ordinary graph whose inputs and outputs its structure names;
the graph and weights fix the outputs), so no version bump.
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
from fxc.api.atomic_folder import write_folder
from fxc.api.backend import CompiledModule, make_backend
from fxc.api.compiler import HF_CONFIG
from fxc.api.manifest import FORMAT, FORMAT_VERSION, MANIFEST, WEIGHTS, body_sha256, check_hf_config, read_manifest
from fxc.api.report import DENSE_BYTES, Report, dense_fp32_bytes, report_from_json, report_to_json
from fxc.errors import FormatError, FxcError, OptionError
from fxc.ir.graph_json import check_graph_json, graph_from_json, graph_to_json
from fxc.ir.kv_signature import KV_CACHE, KVSignature, signature_of
from fxc.version import __version__

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "REPORT", "WEIGHTS", "load", "read_manifest", "read_report", "save"]
REPORT = "report.txt"


def save(compiled: CompiledModule, path: str | Path) -> Path:
    """Write `compiled` (what fxc.compile returns) to the folder `path`; returns the folder."""
    from safetensors.torch import save_file

    if not isinstance(compiled, CompiledModule):
        raise TypeError(f"fxc.save takes what fxc.compile returns (a CompiledModule), got {type(compiled).__name__}")
    gm = compiled.graph
    options = _json_options(getattr(compiled, "backend_options", {}), compiled.backend)  # fails before writing
    graph = graph_to_json(gm)  # fails before writing when the graph leaves the op set
    tensors, stored = _tensor_table(gm)
    report = compiled.report(show=False)

    def write(folder: Path) -> None:
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
            "dense_bytes": int(gm.meta.get(DENSE_BYTES) or dense_fp32_bytes(gm)),
            "report": report_to_json(report),
            "tensors": tensors,
            "graph": graph,
            "weights": {"sha256": _file_sha256(folder / WEIGHTS), "bytes": (folder / WEIGHTS).stat().st_size},
        }
        if gm.meta.get(HF_CONFIG) is not None and check_hf_config(gm.meta[HF_CONFIG]) is None:
            body["hf_config"] = gm.meta[HF_CONFIG]
        if (signature := signature_of(gm)) is not None:
            body["kv_cache"] = signature.to_json()
        manifest = {**body, "manifest_sha256": body_sha256(body)}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, allow_nan=False))
        (folder / REPORT).write_text(str(report) + "\n")  # for people; fxc reads the manifest's copy

    return write_folder(Path(path), write, owned=(MANIFEST, WEIGHTS, REPORT))


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
    _check_header(weights, manifest["tensors"])
    stored = load_file(str(weights))
    root = torch.nn.Module()
    made: dict[tuple[str, str], torch.Tensor] = {}  # one object per stored tensor and kind: ties survive
    for target, spec in manifest["tensors"].items():
        key, kind = spec["key"], spec["kind"]
        if (key, kind) not in made:
            value = stored[key]
            made[key, kind] = torch.nn.Parameter(value, requires_grad=False) if kind == "parameter" else value
        ir.register_tensor(root, target, made[key, kind], kind)
    gm = graph_from_json(manifest["graph"], root, f"{folder / MANIFEST}: field graph")
    if "dense_bytes" in manifest:  # the size before any pass, for the report (absent in older files)
        gm.meta[DENSE_BYTES] = manifest["dense_bytes"]
    if "hf_config" in manifest:  # the Hugging Face config, for fxc.export (absent for other models and older files)
        gm.meta[HF_CONFIG] = manifest["hf_config"]
    if "kv_cache" in manifest:  # a causal LM's KV-cache step graph (checked by read_manifest; here against the graph)
        signature = KVSignature.from_json(manifest["kv_cache"], f"{folder / MANIFEST}: field kv_cache")
        if problem := signature.mismatch(gm):
            raise FormatError(f"{folder / MANIFEST}: field kv_cache does not fit the saved graph: {problem}; the file "
                              "was edited or damaged: save the model again from its source")
        gm.meta[KV_CACHE] = signature
    name = backend or manifest["backend"]
    if backend_options is None:
        backend_options = _saved_options(manifest) if name == manifest["backend"] else {}
    chosen = make_backend(name, backend_options)  # an unknown name or option: the registry's / option's error
    try:
        runner = chosen.compile(gm, None)
    except FxcError:
        raise
    except Exception as error:  # a graph that passed every check and still breaks the backend
        raise FormatError(f"{folder}: the saved graph cannot be lowered by the {name} backend ({type(error).__name__}: "
                          f"{str(error)[:200]}); save the model again, or report it if fxc.save wrote it") from error
    pipeline, drift = _pipeline(manifest["pipeline"]), dict(manifest["drift"])
    return CompiledModule(gm, runner, pipeline, name, (), drift, backend_options=backend_options)


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
        table[target] = {"key": keys[identity], "kind": kind, "dtype": str(tensor.dtype).replace("torch.", ""),
                         "shape": list(tensor.shape)}
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


# --- reading ---------------------------------------------------------------------------------------


def read_report(path: str | Path) -> Report | None:
    """The report saved with the model (what `cm.report()` said when it was saved), read from the checked
    manifest (its graph checked as fxc.load checks it, without building a module or propagating shapes);
    None for a folder saved before reports were kept."""
    folder = Path(path)
    manifest = read_manifest(folder)
    weights = folder / WEIGHTS
    if not weights.is_file() or weights.stat().st_size != manifest["weights"]["bytes"]:
        raise FormatError(f"{weights} is missing or truncated ({manifest['weights']['bytes']:,} bytes expected); "
                          "copy the whole folder fxc.save wrote, or save the model again")
    if "report" not in manifest:
        return None
    check_graph_json(manifest["graph"], f"{folder / MANIFEST}: field graph")  # a hostile graph is refused here too
    return report_from_json(manifest["report"], f"{folder / MANIFEST}: field report")


def _check_header(weights: Path, tensors: dict[str, dict]) -> None:
    """The safetensors header (read by safetensors, no tensor data) holds exactly the tensors the
    manifest names, with the dtypes and shapes it records."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            header = {key: (f.get_slice(key).get_dtype(), f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as error:
        raise FormatError(f"{weights} is not a readable safetensors file ({error}); save the model again") from None
    names = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16", "I8": "int8", "U8": "uint8",
             "I16": "int16", "I32": "int32", "I64": "int64", "BOOL": "bool", "C64": "complex64",
             "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
    keys = {spec["key"] for spec in tensors.values()}
    for extra in sorted(set(header) - keys)[:1]:
        raise FormatError(f"{weights} holds tensor {extra!r}, which the manifest does not name; save the model again")
    for target, spec in tensors.items():
        if spec["key"] not in header:
            raise FormatError(f"{weights} has no tensor {spec['key']!r}, which the manifest names for {target!r}")
        dtype, shape = header[spec["key"]]
        if "dtype" in spec and names.get(dtype, dtype) != spec["dtype"]:
            raise FormatError(f"{weights}: tensor {spec['key']!r} is {names.get(dtype, dtype)}, the manifest says "
                              f"{spec['dtype']}; save the model again")
        if "shape" in spec and list(shape) != spec["shape"]:
            raise FormatError(f"{weights}: tensor {spec['key']!r} has shape {list(shape)}, the manifest says "
                              f"{spec['shape']}; save the model again")


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
