"""The tokenizer of a GGUF file, from a Hugging Face folder's tokenizer.json (byte-level BPE, as GPT-2, Llama 3 and
SmolLM use), the way llama.cpp's convert_hf_to_gguf.py writes a "gpt2" vocabulary.

    note = add_vocab(writer, hf_folder, vocab_size)   # None when written, else what was not and why

Written: `tokenizer.ggml.model` "gpt2", the tokens by id (the BPE vocabulary plus added tokens), their types (added
special tokens CONTROL, other added tokens USER_DEFINED, padding up to the model's vocabulary size UNUSED), and
through gguf.SpecialVocab the merges, the BOS / EOS / UNK / PAD ids, add_bos and the chat template. Not written:
`tokenizer.ggml.pre`, which llama.cpp's converter picks by hashing the tokenizer's output on its own reference text;
llama.cpp then pre-tokenizes with its default (GPT-2) rule and says so when it loads the file. Any other tokenizer
(SentencePiece `tokenizer.model`, WordPiece), or none, is written as `tokenizer.ggml.model` "no_vocab": the weights
load (transformers' GGUF loader, llama.cpp with token ids), text needs the original tokenizer.
Reads tokenizer.json, tokenizer_config.json and the files gguf.SpecialVocab reads in `hf_folder`; writes only to
the GGUF writer it is given.
"""

from __future__ import annotations

import json
from pathlib import Path


def add_vocab(writer, hf_folder: Path | None, vocab_size: int) -> str | None:
    import gguf

    file = Path(hf_folder) / "tokenizer.json" if hf_folder is not None else None
    data = _read(file)
    model = (data or {}).get("model") or {}
    if not data or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        writer.add_tokenizer_model("no_vocab")
        what = "no tokenizer.json" if data is None else f"a {model.get('type') or 'non-BPE'} tokenizer"
        return (f"tokenizer not written ({what}; GGUF export writes byte-level BPE tokenizers): the file holds the "
                "weights only")
    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in model["vocab"].items()}
    for added in data.get("added_tokens") or []:
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[int(added["id"])] = (added["content"], kind)
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for index in range(size):
        token, kind = by_id.get(index, (f"[PAD{index}]", gguf.TokenType.UNUSED))
        tokens.append(token)
        types.append(kind)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(hf_folder, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer)
    return None


def _read(file: Path | None) -> dict | None:
    if file is None or not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
