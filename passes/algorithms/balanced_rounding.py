"""Balanced rounding: round-to-nearest, then flip the fewest roundings needed so that each scale group's
rounding errors sum to at most half a step (where enough weights can move: not the clamped ones).

    qw = quantize_balanced(weight [N, K], bits=8)       # -> qformat.QuantizedWeight, same scales as RTN

Why: a layer's output error is ΔW·x. When the inputs a row sees are alike (a conv kernel over a smooth
feature map, post-ReLU activations with a large common level), ΔW·x ≈ (Σ ΔW)·x̄: the sum of the row's
rounding errors times the local input level. Round-to-nearest leaves that sum a random walk of about
0.3·√K steps; a depthwise 3x3 filter whose taps nearly cancel (an edge detector) then sees an error of the
order of its whole response. Here the sum is brought within half a step, by moving the weights whose
fractional part is nearest the rounding boundary to their other neighbour (largest fraction first): each
flipped weight stays within one step of its value (it moves between the two integers around it, so it
never leaves the range those span), every other weight keeps round-to-nearest.

Scales and zero points are fxc.ir.qformat.group_scales' (the same as quantize_rtn's), so the stored
format is unchanged; only which neighbour some weights round to differs. Reads and writes tensors only.
"""

from __future__ import annotations

import torch

from fxc.ir import qformat


def quantize_balanced(
    weight: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True, full_range: bool = True
) -> qformat.QuantizedWeight:
    """Quantize a 2-D weight [N, K] with qformat's RTN scales (per channel or per group of `group_size`
    columns) and balanced rounding in each group."""
    if bits not in qformat.SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {qformat.SUPPORTED_BITS}, got {bits}")
    w = weight.detach().to(torch.float32)
    n, k = w.shape
    gs = k if group_size is None else group_size
    if k % gs:
        raise ValueError(f"group size {gs} does not divide the input dimension {k}")
    grouped = w.view(n, k // gs, gs)
    scale, zero = qformat.group_scales(grouped, bits, symmetric, full_range)
    levels = grouped / scale.unsqueeze(-1)
    if zero is not None:
        levels = levels + zero.unsqueeze(-1)
    q = balanced_round(levels, *qformat.qrange(bits))
    return qformat.QuantizedWeight(qformat.pack(q.reshape(n, k).to(torch.int8), bits), scale, zero, bits)


def balanced_round(levels: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Integers in [lo, hi] for real `levels` [..., G]: nearest, clamped, then in each last-dim group the
    round(Σ residual) weights with the largest residual toward one side are moved one step that way.
    A weight is moved only toward its own value (residual of that sign) and only inside [lo, hi]."""
    q = levels.round().clamp_(lo, hi)
    residual = levels - q
    need = residual.sum(-1, keepdim=True).round()  # > 0: this many weights go up one step; < 0: down
    up = _largest(torch.where((residual > 0) & (q < hi), residual, -1.0), need.clamp(min=0))
    down = _largest(torch.where((residual < 0) & (q > lo), -residual, -1.0), (-need).clamp(min=0))
    return q + up.to(q.dtype) - down.to(q.dtype)


def _largest(key: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Mask of the `count` entries of largest positive key in each last-dim group (ineligible entries
    carry key -1 and are never chosen, so fewer are chosen where fewer are eligible)."""
    rank = key.argsort(-1, descending=True).argsort(-1)
    return (rank < count) & (key > 0)
