"""What `fxc compress` reads: a model (a Hugging Face folder or a `module:factory` import path) and
its calibration batches (text tokenized with the model's tokenizer, or a safetensors file).

    source = load_model("path/to/hf_folder")           # or "my_package.models:build"
    batches = text_batches(source.tokenizer, "calib.txt", seq_len=128, count=8)
    batches = file_batches("calib.safetensors")

A factory is called with no arguments and returns a model, `(model, tokenizer)` or `(model, example)`
where example is one batch (a tensor, a tuple of inputs or a dict of keyword inputs). A calibration
file holds tensors named `<batch>.<input>`: `0.input_ids`, `0.attention_mask`, `1.input_ids`, ...
(keyword inputs) or `0.0`, `0.1`, ... (positional inputs). Reads those files; writes nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fxc.errors import CalibrationError, FxcError
from fxc.passmgr.calibration import Batch, as_batch


@dataclass
class ModelSource:
    model: torch.nn.Module
    tokenizer: Any = None
    example: Batch | None = None
    name: str = ""


def load_model(spec: str) -> ModelSource:
    """A Hugging Face folder (holding config.json) or `module:factory`."""
    folder = Path(spec)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise FxcError(f"{folder} has no config.json; give a Hugging Face model folder or module:factory")
        return _hugging_face(folder)
    if ":" not in spec:
        raise FxcError(f"model {spec!r} is neither a folder nor a module:factory import path (e.g. my_models:build)")
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # like `python -m`, find modules in the current folder (last, no shadowing)
        sys.path.append(os.getcwd())
    try:
        factory: Callable[[], Any] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise FxcError(f"cannot import {spec}: {error}; check the module is on PYTHONPATH") from error
    made = factory()
    model, extra = (made[0], made[1]) if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(model, torch.nn.Module):
        raise FxcError(f"{spec}() returned {type(model).__name__}; a factory returns an nn.Module, "
                       "(model, tokenizer) or (model, example_inputs)")
    if extra is not None and hasattr(extra, "decode"):
        return ModelSource(model.eval(), tokenizer=extra, name=spec)
    return ModelSource(model.eval(), example=None if extra is None else as_batch(extra), name=spec)


def _hugging_face(folder: Path) -> ModelSource:
    import transformers

    architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    model = (model_class or transformers.AutoModel).from_pretrained(folder)
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    tokenizer = None
    if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return ModelSource(model.eval(), tokenizer=tokenizer, name=folder.name)


def text_batches(tokenizer: Any, text_or_file: str, seq_len: int, count: int, progress=None) -> list[Batch]:
    """`count` windows of `seq_len` tokens of the text (a file path or the text itself), each one batch
    with the inputs the tokenizer produces (input_ids, attention_mask, ...)."""
    if tokenizer is None:
        raise CalibrationError("calibration text needs the model's tokenizer; this model has none: give a "
                               "calibration file (--calib-file) instead")
    try:
        text = Path(text_or_file).read_text() if Path(text_or_file).is_file() else text_or_file
    except OSError:  # not a usable path (too long, ...): it is the text itself
        text = text_or_file
    encoded = tokenizer(text, return_tensors="pt", truncation=False)
    ids = encoded["input_ids"][0]
    if ids.numel() < 2:
        raise CalibrationError("calibration text holds fewer than 2 tokens; give a longer text")
    windows = min(count, max(1, ids.numel() // seq_len))
    length = min(seq_len, ids.numel())
    batches = []
    for index in progress(range(windows)) if progress else range(windows):
        window = slice(index * length, (index + 1) * length)
        batch = {name: value[:, window] for name, value in encoded.items() if isinstance(value, torch.Tensor)}
        batches.append(((), batch))
    return batches


def file_batches(file: str | Path) -> list[Batch]:
    """Batches from a safetensors file with tensors named `<batch>.<input>` (see the module docstring)."""
    from safetensors.torch import load_file

    tensors = load_file(str(file))
    grouped: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        batch, _, name = key.partition(".")
        if not batch.isdigit() or not name:
            raise CalibrationError(f"{file}: tensor name {key!r} is not <batch>.<input> (e.g. 0.input_ids or 0.0)")
        grouped.setdefault(int(batch), {})[name] = tensor
    batches = []
    for index in sorted(grouped):
        inputs = grouped[index]
        positional = sorted((int(k), v) for k, v in inputs.items() if k.isdigit())
        keywords = {k: v for k, v in inputs.items() if not k.isdigit()}
        batches.append((tuple(v for _, v in positional), keywords))
    if not batches:
        raise CalibrationError(f"{file} holds no tensors")
    return batches
