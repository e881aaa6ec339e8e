"""Pruning scores and masks: which weights a pruning method removes (pure functions on tensors).

    scores = wanda_scores(weight, input_l2)        # |W| * ||x||  (Wanda, Sun et al. 2023)
    scores = magnitude_scores(weight)              # |W|
    pruned = unstructured_mask(scores, 0.5, per_row=True)
    pruned = nm_mask(scores, 2, 4)                 # in every group of 4 columns, the 2 lowest

A mask is a bool tensor shaped like the weight, True where the weight is set to zero. "N:M" means
N weights KEPT in every group of M consecutive input columns (NVIDIA's 2:4: two of every four
are zero), the layout of torch.ops.fxc.sparse_nm_linear; the pattern names themselves are parsed by
passes/specs/prune_patterns.py. Conv weights are scored flattened to [O, C/g*kh*kw]. Reads and writes
nothing.
"""

from __future__ import annotations

import torch


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W| as float32, flattened to 2-D."""
    return as_matrix(weight).abs().to(torch.float32)


def wanda_scores(weight: torch.Tensor, input_l2: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||x_j||: weight magnitude times the L2 norm of its input channel over calibration
    tokens. Conv weights repeat each channel's norm over its kh*kw taps."""
    w = as_matrix(weight).abs().to(torch.float32)
    l2 = input_l2.to(torch.float32).reshape(-1)
    if w.shape[1] != l2.numel():
        if w.shape[1] % l2.numel():
            raise ValueError(f"input norms have {l2.numel()} channels but the weight has {w.shape[1]} columns")
        l2 = l2.repeat_interleave(w.shape[1] // l2.numel())
    return w * l2.unsqueeze(0)


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A weight as [out, in]: conv weights [O, C/g, kh, kw] become [O, C/g*kh*kw]."""
    return weight.reshape(weight.shape[0], -1)


def unstructured_mask(scores: torch.Tensor, sparsity: float, per_row: bool) -> torch.Tensor:
    """The round(sparsity*count) lowest scores of each row (per_row) or of the whole matrix."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    flat = scores if per_row else scores.reshape(1, -1)
    count = int(round(sparsity * flat.shape[1]))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if count:
        lowest = torch.topk(flat, count, dim=1, largest=False).indices
        mask.scatter_(1, lowest, True)
    return mask.view_as(scores)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every group of m consecutive columns of each row, the m-n lowest scores."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"{cols} input columns are not divisible by M={m}")
    grouped = scores.reshape(rows, cols // m, m)
    lowest = torch.topk(grouped, m - n, dim=2, largest=False).indices
    mask = torch.zeros_like(grouped, dtype=torch.bool)
    mask.scatter_(2, lowest, True)
    return mask.view(rows, cols)


def apply_mask(weight: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """A copy of `weight` with the masked entries set to zero (mask given as [out, in])."""
    return as_matrix(weight).masked_fill(pruned, 0.0).view_as(weight)


def zero_fraction(weight: torch.Tensor) -> float:
    return (weight == 0).sum().item() / max(weight.numel(), 1)
