"""The next token of each row, from the last position's logits: greedy, or sampled as transformers samples.

    check_sampling(do_sample, temperature, top_k, top_p)     # GenerateError naming a bad value and the fix
    tokens = next_tokens(scores, do_sample, temperature, top_k, top_p, generator)   # [B] int64 from [B, V] float32

Greedy (do_sample=False) is the argmax (the first index of the largest score on ties, as torch.argmax).
Sampling applies, in transformers' order, temperature (scores / t, when t != 1), top-k (scores below the k-th
largest set to -inf, when top_k is given) and top-p (the smallest set of most probable tokens whose probability
reaches p is kept, always at least one, when top_p < 1), then draws one token per row from the softmax with
`torch.multinomial` on `generator` (the global generator when None, so a seeded generator repeats its draws and
top_k=1 is greedy). temperature / top_k / top_p without do_sample=True is an error (they would be ignored).
Reads the scores; writes nothing (new tensors); preserves the caller's generator apart from its draws.
"""

from __future__ import annotations

import math

import torch

from fxc.errors import GenerateError


def check_sampling(do_sample: bool, temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not isinstance(do_sample, bool):
        raise GenerateError(f"generate: do_sample must be True or False, got {do_sample!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise GenerateError(f"generate: temperature must be a number > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise GenerateError(f"generate: top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0 < top_p <= 1):
        raise GenerateError(f"generate: top_p must be None or a number in (0, 1], got {top_p!r}")
    if not do_sample and (temperature != 1.0 or top_k is not None or top_p is not None):
        raise GenerateError("generate: temperature, top_k and top_p shape sampling; pass do_sample=True with them "
                            "(greedy decoding would ignore them)")


def next_tokens(
    scores: torch.Tensor,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row of `scores` [B, V]."""
    if not do_sample:
        return scores.argmax(dim=-1)
    scores = warp(scores, temperature, top_k, top_p)
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def warp(scores: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
         top_p: float | None = None) -> torch.Tensor:
    """The scores after temperature, top-k and top-p, in that order (tokens cut off at -inf)."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k is not None:
        k = min(top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        ascending, order = torch.sort(scores, dim=-1, descending=False)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - top_p)
        drop[..., -1:] = False  # the most probable token stays
        scores = scores.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    return scores
