"""Quality measures for compressed models, shared by benchmarks, real-model tests and the demo.

    perplexity(model, batches)                    # causal LM: exp(mean token NLL) over [1, T] id batches
    embed(model, tokenizer, sentences)            # mean-pooled, L2-normalized sentence embeddings
    mean_cosine(a, b)                             # mean row-wise cosine of two embedding matrices
    wordsim_spearman(model, tokenizer, pairs)     # Spearman rho of embedding cosine vs human scores

`model` is anything callable like the Hugging Face model (the original, or fxc.compile's result).
Reads only its arguments; writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def _logits(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    return output[0]


def perplexity(model: Callable, batches: Sequence[torch.Tensor]) -> float:
    """exp of the mean next-token negative log-likelihood over every position of every batch."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in batches:
            logits = _logits(model(ids)).float()
            nll = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
            )
            total += nll.item()
            count += ids[:, 1:].numel()
    return math.exp(total / count)


def embed(
    model: Callable, tokenizer, sentences: Sequence[str], batch_size: int = 32, max_length: int = 128
) -> torch.Tensor:
    """Sentence embeddings as all-MiniLM computes them: mean of token states over the attention
    mask, L2-normalized."""
    rows = []
    with torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            enc = tokenizer(
                list(sentences[start : start + batch_size]),
                padding="max_length",
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out = model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                token_type_ids=enc.get("token_type_ids", torch.zeros_like(enc["input_ids"])),
            )
            states = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
            rows.append(F.normalize(pooled.float(), dim=-1))
    return torch.cat(rows)


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    rx, ry = _ranks(torch.tensor(x, dtype=torch.float64)), _ranks(torch.tensor(y, dtype=torch.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return (rx @ ry / (rx.norm() * ry.norm())).item()


def _ranks(values: torch.Tensor) -> torch.Tensor:
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(len(values), dtype=values.dtype)
    for v in values.unique():  # ties share their mean rank
        tied = values == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def wordsim_spearman(model: Callable, tokenizer, pairs: Sequence[tuple[str, str, float]]) -> float:
    """Spearman correlation between the cosine of the two words' embeddings and the human score."""
    words = sorted({w for a, b, _ in pairs for w in (a, b)})
    vectors = dict(zip(words, embed(model, tokenizer, words, max_length=16)))
    cosines = [float(vectors[a] @ vectors[b]) for a, b, _ in pairs]
    return spearman(cosines, [s for _, _, s in pairs])


def wiki_sentences(text: str, count: int = 256, min_words: int = 6) -> list[str]:
    """The first `count` sentence-like lines of a text (for embedding checks)."""
    import re

    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        sentence = sentence.strip()
        if len(sentence.split()) >= min_words and "\n" not in sentence:
            out.append(sentence)
        if len(out) == count:
            break
    return out
