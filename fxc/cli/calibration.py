"""Which inputs `fxc compress` traces and calibrates with, and the one line that says so.

    choice = choose_calibration(source, calib_text, calib_file, input_shape, seq_len, count)
    choice.batches   # calibration batches, or None
    choice.example   # the batch the model is traced with
    choice.line      # "calibration: built-in English text (...), 16 sequences x 128 tokens (2,048 tokens)"
    choice.warning   # a line when the data is below the minimum, else None

In order: `--calib-text` (a file, or the text itself), `--calib-file` (safetensors batches),
`--input-shape` (random inputs that only trace the model: token ids in the vocabulary for a model
that starts with an embedding), then, for a model with a tokenizer, the built-in calibration text
(DEFAULT_TEXT: public-domain English prose that ships with fxc, see fxc/cli/data/README.md), then the
example a factory returned. Nothing of these: a CalibrationError naming the options.

Decisions:
- A `--calib-text` value that looks like a path (one line that starts with / ./ ../ ~, or has no spaces
  and holds a path separator or ends in a file suffix such as .txt) but names no file is an error
  naming the path: it is not silently taken as the text to calibrate on.
- Text shorter than one window of --seq-len tokens is an error (fxc/cli/model_source.py); text that
  fills fewer windows than --n-calib gives as many as it holds.
- A window is at most the model's `max_position_embeddings` tokens (a longer one cannot run).
- The minimum: MIN_SEQUENCES sequences and MIN_TOKENS tokens (the defaults, 16 x 128, meet it). Below
  it, one warning line names the fix: GPTQ, SparseGPT and Wanda fit each layer to these activations,
  and a few hundred tokens give Hessians of low rank and statistics of a few words.
Reads the calibration file or text file and the built-in text; writes nothing; preserves those files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from fxc.cli.model_source import ModelSource, check_calibration_file, file_batches, random_example, text_batches
from fxc.errors import CalibrationError, FxcError
from fxc.passmgr.calibration import Batch

DEFAULT_TEXT = "data/calibration.txt"  # in the fxc.cli package
MIN_SEQUENCES, MIN_TOKENS = 4, 2048
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}$")


@dataclass
class CalibrationChoice:
    batches: list[Batch] | None
    example: Batch
    line: str
    origin: str  # where the example came from, for error messages
    warning: str | None = None


def choose_calibration(
    source: ModelSource, calib_text: str | None, calib_file: str | None, input_shape: str | None,
    seq_len: int, count: int, progress: Any = None,
) -> CalibrationChoice:
    """The calibration and trace inputs of `fxc compress` (see the module docstring for the order)."""
    if seq_len < 1 or count < 1:
        raise CalibrationError(f"--seq-len and --n-calib must be at least 1, got {seq_len} and {count}")
    if calib_text is not None:
        text, where = read_text_argument(calib_text)
        return _from_text(source, text, where, seq_len, count, progress)
    if calib_file is not None:
        batches = file_batches(calib_file)
        sequences, tokens, shape = _size(batches)
        what = f"{sequences} sequences x {tokens // max(sequences, 1)} tokens" if tokens else f"{sequences} samples"
        line = f"calibration: {calib_file}, {len(batches)} batches ({what}; batch 0 is {shape})"
        return CalibrationChoice(batches, batches[0], line, f"batch 0 of --calib-file {calib_file}",
                                 _warning(sequences, tokens))
    if input_shape:
        shape = parse_shape(input_shape)
        example = random_example(source.model, shape)
        kind = "token ids" if example[1] or example[0][0].dtype == torch.int64 else "values"
        return CalibrationChoice(None, example, f"calibration: none (random {kind} of shape {shape} from "
                                 "--input-shape only trace the model)", f"--input-shape {input_shape}")
    if source.tokenizer is not None:
        text = resources.files("fxc.cli").joinpath(DEFAULT_TEXT).read_text(encoding="utf-8")
        return _from_text(source, text, "built-in English text (fxc/cli/data/calibration.txt)", seq_len, count,
                          progress)
    if source.example is not None:
        return CalibrationChoice(None, source.example, "calibration: none (the factory's example inputs only trace "
                                 "the model; give --calib-file for passes that calibrate)", "the factory's example")
    raise CalibrationError(
        "fxc compress needs inputs to trace the model: give --calib-text FILE (a model with a tokenizer), "
        "--calib-file FILE or --input-shape, e.g. --input-shape 4,16 (or a factory that returns (model, example))"
    )


def check_sources(calib_text: str | None, calib_file: str | None) -> None:
    """Fail before the model loads on a calibration file or text file that is not there."""
    if calib_file is not None:
        check_calibration_file(calib_file)
    if calib_text is not None:
        read_text_argument(calib_text)


def read_text_argument(value: str) -> tuple[str, str]:
    """(text, where it came from) for a --calib-text value: a file's text, or the value itself."""
    path = Path(value).expanduser()
    one_line = "\n" not in value and len(value) < 4096
    try:
        exists = one_line and path.exists()
    except OSError:  # a name the OS refuses (too long, ...): it is text
        exists = False
    if exists:
        if not path.is_file():
            raise CalibrationError(f"--calib-text {value}: is a folder, not a text file")
        try:
            return path.read_text(encoding="utf-8", errors="replace"), f"{value}"
        except OSError as error:
            raise CalibrationError(f"--calib-text {value}: cannot be read ({error.strerror or error})") from None
    if one_line and looks_like_path(value):
        raise CalibrationError(
            f"--calib-text {value}: no such file; give an existing text file, or the calibration text itself"
        )
    return value, f"--calib-text ({len(value):,} characters)"


def looks_like_path(value: str) -> bool:
    """A path, not prose: starts like one, or has no spaces and holds a separator or ends in a suffix."""
    value = value.strip()
    if value.startswith(("/", "./", "../", "~")):
        return True
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return not any(c.isspace() for c in value) and (any(s in value for s in separators) or bool(_SUFFIX.search(value)))


def parse_shape(text: str) -> list[int]:
    try:
        shape = [int(d) for d in text.split(",")]
    except ValueError:
        shape = []
    if not shape or any(d < 1 for d in shape):
        raise FxcError(f"--input-shape {text!r} is not comma-separated positive integers, e.g. 4,16")
    return shape


def _from_text(source: ModelSource, text: str, where: str, seq_len: int, count: int, progress) -> CalibrationChoice:
    limit = getattr(getattr(source.model, "config", None), "max_position_embeddings", None)
    note = ""
    if isinstance(limit, int) and 0 < limit < seq_len:
        note, seq_len = f"; --seq-len lowered to the model's {limit} positions", limit
    batches = text_batches(source.tokenizer, text, seq_len, count, progress)
    args, kwargs = batches[0]  # [1, seq] windows: trace with two rows, so the batch dim comes out dynamic
    example = (args, {name: torch.cat([value, value]) for name, value in kwargs.items()})
    tokens = len(batches) * seq_len
    line = f"calibration: {where}, {len(batches)} sequences x {seq_len} tokens ({tokens:,} tokens{note})"
    return CalibrationChoice(batches, example, line, f"windows of {where}", _warning(len(batches), tokens))


def _size(batches: list[Batch]) -> tuple[int, int, list[int]]:
    """(sequences or samples, tokens when the first input is integer ids else 0, batch 0's first shape)."""
    sequences = tokens = 0
    shape: list[int] = []
    for index, (args, kwargs) in enumerate(batches):
        first = next((t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), None)
        if first is None or first.dim() == 0:
            continue
        if index == 0:
            shape = list(first.shape)
        sequences += first.shape[0]
        if not first.is_floating_point() and first.dim() == 2:
            tokens += first.numel()
    return sequences, tokens, shape


def _warning(sequences: int, tokens: int) -> str | None:
    """One line when the calibration is below the minimum (tokens 0: not token data, count samples only)."""
    small = sequences < MIN_SEQUENCES or (tokens and tokens < MIN_TOKENS)
    if not small:
        return None
    size = f"{sequences} sequences, {tokens:,} tokens" if tokens else f"{sequences} samples"
    return (
        f"warning: calibration is small ({size}; fxc recommends at least {MIN_SEQUENCES} sequences and "
        f"{MIN_TOKENS:,} tokens): passes that calibrate (gptq, sparse-gpt, wanda, act-stats) may lose accuracy; "
        "give a longer --calib-text FILE or raise --n-calib / --seq-len"
    )
