"""What `fxc compress` reads: a model (a Hugging Face folder or a `module:factory` import path) and
its calibration batches (text tokenized with the model's tokenizer, or a safetensors file).

    source = load_model("path/to/hf_folder")           # or "my_package.models:build"
    batches = text_batches(source.tokenizer, text, seq_len=128, count=16)
    batches = file_batches("calib.safetensors")
    example = random_example(source.model, [1, 64])    # token ids for a model that starts with an embedding

A factory is called with no arguments and returns a model, `(model, tokenizer)` or `(model, example)`
where example is one batch (a tensor, a tuple of inputs or a dict of keyword inputs). A calibration
file holds tensors named `<batch>.<input>`: `0.input_ids`, `0.attention_mask`, `1.input_ids`, ...
(keyword inputs) or `0.0`, `0.1`, ... (positional inputs). Text shorter than one window of `seq_len`
tokens is a CalibrationError (a shorter window would trace and calibrate the model on a length the
user did not ask for). A missing or unreadable calibration file is a CalibrationError naming it.
A Hugging Face model is traced as it is, with the inputs its tokenizer gives (input_ids and
attention_mask, ...); the compiled model then takes `input_ids` alone, by position or by name, the mask
defaulting to all ones (fxc/api/backend.py binds the inputs). Reads those files; writes nothing;
preserves the files (the model is loaded into memory, in eval mode, with its KV cache off).
"""

from __future__ import annotations

import importlib
import inspect
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
    if ":" not in spec or "/" in spec.partition(":")[0] or os.sep in spec.partition(":")[0]:
        what = "no such folder" if folder.parent.is_dir() or "/" in spec else "not a folder"
        raise FxcError(f"model {spec}: {what}; give a Hugging Face model folder (holding config.json) or a "
                       "module:factory import path (e.g. my_models:build)")
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


def text_batches(tokenizer: Any, text: str, seq_len: int, count: int, progress=None) -> list[Batch]:
    """Up to `count` windows of `seq_len` tokens of `text` (as many as it holds), each one batch with the
    inputs the tokenizer produces (input_ids, attention_mask, ...)."""
    if tokenizer is None:
        raise CalibrationError("calibration text needs the model's tokenizer; this model has none: give a "
                               "calibration file (--calib-file) instead")
    encoded = tokenizer(text, return_tensors="pt", truncation=False)
    tokens = encoded["input_ids"].shape[-1]
    if tokens < seq_len:
        raise CalibrationError(
            f"the calibration text is {tokens} tokens, shorter than one window of {seq_len} tokens (--seq-len); "
            "give a longer text (--calib-text FILE), a smaller --seq-len, or no --calib-text for the built-in text"
        )
    windows = min(count, tokens // seq_len)
    batches = []
    for index in progress(range(windows)) if progress else range(windows):
        window = slice(index * seq_len, (index + 1) * seq_len)
        batch = {name: value[:, window] for name, value in encoded.items() if isinstance(value, torch.Tensor)}
        batches.append(((), batch))
    return batches


def random_example(model: torch.nn.Module, shape: list[int]) -> Batch:
    """A random batch of `shape`: token ids in the vocabulary for a model that starts with an embedding
    (with an all-ones attention_mask where its forward takes one), else float values."""
    embedding = input_embedding(model)
    if embedding is None:
        return (torch.randn(shape),), {}
    ids = torch.randint(0, embedding.num_embeddings, shape)
    if "attention_mask" in inspect.signature(model.forward).parameters:
        return (), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return (ids,), {}


def input_embedding(model: torch.nn.Module) -> torch.nn.Embedding | None:
    """The embedding a model's input goes through first: a Hugging Face model's input embeddings, else
    the first module with weights when it is an nn.Embedding."""
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            found = getter()
        except (NotImplementedError, AttributeError):
            found = None
        if isinstance(found, torch.nn.Embedding):
            return found
    first = next((m for m in model.modules() if next(m.parameters(recurse=False), None) is not None), None)
    return first if isinstance(first, torch.nn.Embedding) else None


def check_calibration_file(file: str | Path) -> Path:
    """The path of an existing calibration file, else a CalibrationError naming it."""
    path = Path(file).expanduser()
    if not path.is_file():
        raise CalibrationError(f"calibration file {file} does not exist; give a safetensors file of batches "
                               "(tensors named <batch>.<input>, e.g. 0.input_ids)")
    return path


def file_batches(file: str | Path) -> list[Batch]:
    """Batches from a safetensors file with tensors named `<batch>.<input>` (see the module docstring)."""
    from safetensors.torch import load_file

    path = check_calibration_file(file)
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors' own error types: a text file, a truncated file, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CalibrationError(f"calibration file {file} is not a readable safetensors file ({reason}); write it "
                               "with safetensors.torch.save_file, tensors named <batch>.<input>") from error
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
