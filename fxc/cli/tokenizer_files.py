"""The tokenizer kept beside a saved model: `fxc compress` writes it, `fxc generate` reads it back.

    folder, note = save_with_tokenizer(compiled, "out/", tokenizer)   # fxc.save's files + the tokenizer's, at once
    tokenizer = load_tokenizer(Path("out/"))                           # None when the folder keeps no tokenizer

Written: the files a fast (Rust `tokenizers`) tokenizer's `save_pretrained` makes that are data, KEPT:
tokenizer.json (the whole tokenizer), tokenizer_config.json (special tokens, chat template, ...) and, where the
tokenizer has them, special_tokens_map.json and chat_template.jinja. A slow (Python) tokenizer is not kept, and
`note` says so. The save is one atomic write (fxc/api/atomic_folder.py): fxc.save writes into a sub-folder of the
temporary folder, its files and the tokenizer's are moved up, and the whole folder is renamed into place, so a
crash leaves the old folder or the new one, and writing the same folder again replaces the tokenizer files too.

Read: only tokenizer.json, through `tokenizers` (data: a vocabulary, merges and normalizer rules; no code runs and
no class named in the files is imported), with the special tokens named in tokenizer_config.json /
special_tokens_map.json (plain strings, or {"content": ...}). AutoTokenizer is never used on a saved folder, so
`auto_map` / `tokenizer_class` entries and remote code in it are ignored. Reads the folder it is given; writes
only the output folder of save_with_tokenizer; preserves the tokenizer object.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from fxc.api.atomic_folder import write_folder
from fxc.api.serialize import MANIFEST, REPORT, WEIGHTS
from fxc.errors import FormatError

TOKENIZER = "tokenizer.json"
KEPT = (TOKENIZER, "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
SAVED = (MANIFEST, WEIGHTS, REPORT)  # what fxc.save writes (fxc/api/serialize.py)
SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")
MAX_CONFIG_BYTES = 1 << 24  # tokenizer_config.json is small; bigger is not a tokenizer config


def save_with_tokenizer(compiled: Any, path: str | Path, tokenizer: Any) -> tuple[Path, str]:
    """fxc.save `compiled` to `path` with the tokenizer's KEPT files beside it, in one atomic write. Returns the
    folder and a note: "" when the tokenizer was kept or there is none, else why it was not."""
    import fxc

    keep = tokenizer is not None and getattr(tokenizer, "is_fast", False)
    note = "" if keep or tokenizer is None else (
        f"note: the model's tokenizer ({type(tokenizer).__name__}) is not a fast tokenizer with a tokenizer.json, "
        "so it was not kept; fxc generate on this folder takes --prompt-ids")

    def write(tmp: Path) -> None:
        saved = fxc.save(compiled, tmp / ".model")
        _move_up(saved, tmp)
        if keep:
            scratch = tmp / ".tokenizer"
            tokenizer.save_pretrained(str(scratch))
            for name in KEPT:
                if (scratch / name).is_file():
                    os.replace(scratch / name, tmp / name)
            shutil.rmtree(scratch)

    return write_folder(Path(path), write, owned=(*SAVED, *KEPT)), note


def _move_up(folder: Path, into: Path) -> None:
    for file in folder.iterdir():
        os.replace(file, into / file.name)
    folder.rmdir()


def has_tokenizer(folder: Path) -> bool:
    return (Path(folder) / TOKENIZER).is_file()


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer kept in `folder` (a transformers PreTrainedTokenizerFast built from tokenizer.json), or None
    when there is none. A file that does not read as a tokenizer is a FormatError naming it."""
    folder = Path(folder)
    file = folder / TOKENIZER
    if not file.is_file():
        return None
    from transformers import PreTrainedTokenizerFast

    config = {**_json_dict(folder / "special_tokens_map.json"), **_json_dict(folder / "tokenizer_config.json")}
    specials = {key: token for key in SPECIAL if (token := _token_text(config.get(key))) is not None}
    cleanup = config.get("clean_up_tokenization_spaces")
    extra = {"clean_up_tokenization_spaces": cleanup} if isinstance(cleanup, bool) else {}
    try:
        return PreTrainedTokenizerFast(tokenizer_file=str(file), **specials, **extra)
    except Exception as error:  # the tokenizers library's parse errors
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FormatError(f"{file} is not a readable tokenizer ({reason}); compress the model again, or give token "
                          "ids with --prompt-ids") from error


def _json_dict(file: Path) -> dict:
    """A small JSON object file as a dict; {} when absent; FormatError when it is not one."""
    if not file.is_file():
        return {}
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise FormatError(f"{file} is {file.stat().st_size:,} bytes, too big for a tokenizer config; compress the "
                          "model again")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise FormatError(f"{file} is not valid JSON ({type(error).__name__}); compress the model again") from None
    if not isinstance(data, dict):
        raise FormatError(f"{file} is not a JSON object; compress the model again")
    return data


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: the text, or {"content": text, ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and 0 < len(value) <= 256 else None
