"""The manifest.json of a saved model: its fields, read from a file and checked before use.

    manifest = read_manifest(folder)   # the checked dict; FormatError naming the field otherwise

A manifest is hostile until checked: the file size is bounded, JSON's NaN/Infinity constants and
deep nesting are refused, the format name and version must match, its own checksum must match (it
catches damage, not an attacker: anyone can recompute it, so it is no signature), and every field
fxc reads has its declared JSON type: strings are bounded, numbers finite, the per-tensor table
names dotted identifiers with a kind, dtype and shape; the optional `hf_config` (the model's Hugging Face config,
for fxc.export) is a dict with str keys of bounded JSON size and depth; the optional `kv_cache` (a causal LM's
KV-cache step record, fxc/ir/kv_signature.py) has every field of its declared type and range (fxc.load then checks
it against the graph). The graph inside is checked separately,
node by node, by fxc/ir/graph_json.py. Reads `folder/manifest.json` only; writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from fxc.errors import FormatError
from fxc.ir.graph_schema import DTYPES, check_attr_path
from fxc.ir.kv_signature import KVSignature

FORMAT = "fxc-compiled-model"
FORMAT_VERSION = 1
MANIFEST, WEIGHTS = "manifest.json", "weights.safetensors"
MAX_MANIFEST_BYTES = 256 << 20
KINDS = ("parameter", "buffer", "attribute")
MAX_HF_CONFIG_BYTES, MAX_HF_CONFIG_DEPTH = 1 << 20, 16
_RESAVE = "the file is damaged or was edited: save the model again from its source"


def body_sha256(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


def read_manifest(folder: Path) -> dict:
    """The checked manifest of a saved folder."""
    file = Path(folder) / MANIFEST
    if not file.is_file():
        hint = _interrupted_hint(Path(folder))
        raise FormatError(f"{file} not found: {folder} is not a folder written by fxc.save{hint}")
    size = file.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise FormatError(f"{file} is {size:,} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES:,}); {_RESAVE}")
    try:
        manifest = json.loads(file.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        reason = "nests too deeply" if isinstance(error, RecursionError) else f"is not valid JSON ({error})"
        raise FormatError(f"{file} {reason}; it is truncated or damaged: save the model again") from None
    found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
    if found != FORMAT:
        raise FormatError(f"{file} is not an fxc manifest (format {found!r}, want {FORMAT!r})")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        written = (f"version {version}" if type(version) is int else "no format_version" if version is None
                   else f"the {type(version).__name__} {str(version)[:20]!r} as format_version")
        raise FormatError(
            f"{file} has {written}, written by fxc {str(manifest.get('fxc_version'))[:40]}; this fxc reads "
            f"format version {FORMAT_VERSION} (the number): load it with the fxc that wrote it, or compress the model "
            "again with this one"
        )
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    if manifest.get("manifest_sha256") != body_sha256(body):
        raise FormatError(f"{file} was modified after saving (its checksum does not match); save the model again")
    _check_fields(manifest, file)
    return manifest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_fields(m: dict, file: Path) -> None:
    def bad(field: str, problem: str) -> FormatError:
        return FormatError(f"{file}: field {field} {problem}; {_RESAVE}")

    for field, limit in (("fxc_version", 100), ("torch_version", 100), ("pipeline", 1 << 16), ("backend", 100)):
        if not isinstance(m.get(field), str) or len(m[field]) > limit:
            raise bad(field, f"is not a string of at most {limit:,} characters")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", m["backend"]):
        raise bad("backend", f"{m['backend']!r} is not a backend name")
    if not isinstance(m.get("backend_options", {}), dict):
        raise bad("backend_options", "is not a dict")
    drift = m.get("drift")
    if not isinstance(drift, dict) or not all(_finite(v) for v in drift.values()):
        raise bad("drift", "is not a dict of finite numbers")
    if "dense_bytes" in m and not (type(m["dense_bytes"]) is int and 0 <= m["dense_bytes"] < 1 << 60):
        raise bad("dense_bytes", "is not a size in bytes")
    weights = m.get("weights")
    if not (isinstance(weights, dict) and isinstance(weights.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", weights["sha256"]) and type(weights.get("bytes")) is int
            and weights["bytes"] >= 0):
        raise bad("weights", "is not {sha256: 64 hex digits, bytes: a size}")
    tensors = m.get("tensors")
    if not isinstance(tensors, dict):
        raise bad("tensors", "is not a dict")
    for target, spec in tensors.items():
        where = f"tensors[{target[:80]!r}]"
        check_attr_path(target, f"{file}: field {where}")
        if not (isinstance(spec, dict) and isinstance(spec.get("key"), str) and len(spec["key"]) <= 1000
                and isinstance(spec.get("kind"), str) and spec["kind"] in KINDS):
            raise bad(where, f"is not {{key: a stored tensor name, kind: one of {', '.join(KINDS)}}}")
        if "dtype" in spec and not (isinstance(spec["dtype"], str) and spec["dtype"] in DTYPES):
            raise bad(f"{where}.dtype", f"{str(spec['dtype'])[:40]!r} is not a dtype")
        shape = spec.get("shape", [])
        if not (isinstance(shape, list) and len(shape) <= 16 and all(type(d) is int and 0 <= d < 1 << 48
                                                                     for d in shape)):
            raise bad(f"{where}.shape", "is not a list of sizes")
    if not isinstance(m.get("graph"), dict):
        raise bad("graph", "is not a dict")
    if "hf_config" in m and (problem := check_hf_config(m["hf_config"])):
        raise bad("hf_config", problem)
    if "kv_cache" in m:  # every field's type and range; fxc.load then checks it against the graph
        KVSignature.from_json(m["kv_cache"], f"{file}: field kv_cache")


def check_hf_config(config: Any) -> str | None:
    """What is wrong with a Hugging Face config as the manifest keeps it (None: nothing): a dict with str keys,
    JSON values of bounded nesting, finite numbers, at most MAX_HF_CONFIG_BYTES as JSON."""
    if not isinstance(config, dict):
        return "is not a dict"

    def problem(value: Any, depth: int) -> str | None:
        if depth > MAX_HF_CONFIG_DEPTH:
            return f"nests deeper than {MAX_HF_CONFIG_DEPTH}"
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                return "has a key that is not a string"
            return next((p for v in value.values() if (p := problem(v, depth + 1))), None)
        if isinstance(value, list):
            return next((p for v in value if (p := problem(v, depth + 1))), None)
        if value is None or isinstance(value, (bool, int, str)) or _finite(value):
            return None
        return f"holds {type(value).__name__} {str(value)[:20]!r}, not a JSON value"

    found = problem(config, 0)
    if found:
        return found
    if len(json.dumps(config, allow_nan=False)) > MAX_HF_CONFIG_BYTES:
        return f"is larger than {MAX_HF_CONFIG_BYTES:,} bytes as JSON"
    return None


def _finite(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _interrupted_hint(folder: Path) -> str:
    aside = sorted(folder.parent.glob(f".{folder.name}.fxc-old-*")) if folder.parent.is_dir() else []
    return f" (a save was interrupted; the previous model is in {aside[0]})" if aside else ""
