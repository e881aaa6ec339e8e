"""Quantized weight formats: the storage layout every pass writes and every backend reads.

A weight W of shape [N, K] (conv weights flattened to [N, C/g*kh*kw]) is stored as integers q and
float scales s (and optional zero points z), per output row and per group of `group_size` columns:

    W[n, k] = (q[n, k] - z[n, k // group_size]) * s[n, k // group_size]

- bits=8: q is int8 [N, K], values in [-128, 127].
- bits=4: q holds signed values in [-8, 7], packed two per byte into uint8 [N, K/2]: column 2j in
  the low nibble, column 2j+1 in the high nibble (two's complement nibbles).
- scale / zero: float32 [N, K // group_size]; per-channel is group_size = K (one column).
- symmetric: z is absent (zero); asymmetric: z holds integer values in q's range, as float32.

`unpack`, `unpack_int4` and `apply_group_scales` take torch tensors and numpy arrays alike, so the
torch reference, the torch backend's fast path and the numpy backend read the format through one
definition (numpy operations only on numpy arrays).

Rounding is round-half-to-even everywhere (torch.round, numpy.rint, Triton's rint).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

SUPPORTED_BITS = (4, 8)


class QuantizedWeight(NamedTuple):
    qweight: torch.Tensor  # int8 [N, K] or uint8 [N, K/2]
    scale: torch.Tensor  # float32 [N, G]
    zero_point: torch.Tensor | None  # float32 [N, G] or None (symmetric)
    bits: int


def qrange(bits: int) -> tuple[int, int]:
    """The signed integer range of `bits`: (-8, 7) for 4, (-128, 127) for 8."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Signed int4 values [N, K] (any int dtype, K even) → uint8 [N, K/2]; low nibble = even column."""
    if q.shape[-1] % 2:
        raise ValueError(f"int4 packing needs an even number of columns, got {q.shape[-1]}")
    nibbles = (q.to(torch.int16) & 0xF).to(torch.uint8)
    return nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)


def unpack_int4(packed):
    """uint8 [N, K/2] → int8 [N, K] with values in [-8, 7]; inverse of pack_int4. The nibbles are
    sign-extended by arithmetic shifts of the bytes read as int8 (low nibble: shifted up, then down).
    A torch tensor or a numpy array (the numpy backend's, which runs numpy operations only)."""
    library = _array_library(packed)
    signed = packed.view(library.int8)
    both = library.stack([(signed << 4) >> 4, signed >> 4], -1)  # [..., K/2, 2]: even column, odd column
    return both.reshape(*packed.shape[:-1], 2 * packed.shape[-1])


def _array_library(array):
    """torch for a tensor, numpy for a numpy array: the module whose stack and dtypes take `array`."""
    if isinstance(array, torch.Tensor):
        return torch
    import numpy

    return numpy


def unpack(qweight, bits: int):
    """The stored integers as int8 [N, K], whatever the packing; a torch tensor or a numpy array."""
    if bits == 8:
        return qweight
    if bits == 4:
        return unpack_int4(qweight)
    raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")


def dequantize(
    qweight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, bits: int
) -> torch.Tensor:
    """The float32 weight [N, K] a quantized weight stands for."""
    q = unpack(qweight, bits).to(torch.float32, copy=True)
    zero = zero_point.to(torch.float32) if zero_point is not None else None
    return apply_group_scales(q, scale.to(torch.float32), zero)


def apply_group_scales(q, scale, zero_point):
    """q [N, K] float32 integers -> (q - z) * s per group of K // G columns, in place; returns q as [N, K].

    Array-library neutral (only reshape, indexing and in-place - and *), so the torch reference, the
    torch fast path (codegen/torch/weight_only.py) and the numpy backend (codegen/numpy/quant.py)
    share one definition and produce the same values: q a contiguous torch tensor or numpy array,
    scale / zero_point float32 [N, G] of the same library (zero_point None when symmetric)."""
    n, k = q.shape
    groups = scale.shape[-1]
    if k % groups:
        raise ValueError(f"scale has {groups} groups, which does not divide the {k} columns")
    grouped = q.reshape(n, groups, k // groups)
    if zero_point is not None:
        grouped -= zero_point[..., None]
    grouped *= scale[..., None]
    return grouped.reshape(n, k)


def quantize_rtn(
    weight: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True, full_range: bool = True
) -> QuantizedWeight:
    """Round-to-nearest quantization of a 2-D weight, per channel (group_size None) or per group.
    full_range: see group_scales."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    w = weight.detach().to(torch.float32)
    n, k = w.shape
    gs = k if group_size is None else group_size
    if k % gs:
        raise ValueError(f"group size {gs} does not divide the input dimension {k}")
    scale, zero = group_scales(w.view(n, k // gs, gs), bits, symmetric, full_range)
    q = quantize_with(w, scale, zero, bits)
    return QuantizedWeight(pack(q, bits), scale, zero, bits)


def weights_full_range(act_bits: int | None) -> bool:
    """The range rule for stored weights, whatever computes them (rtn, gptq, QAT, candidate scoring):
    weight-only weights use the full signed range, W8A8 weights stay on ±127 (see group_scales)."""
    return act_bits is None


def group_scales(
    grouped: torch.Tensor, bits: int, symmetric: bool, full_range: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scales (and zero points) for weights viewed as [N, G, group]; reduces the last dim.
    Symmetric, full_range=False: amax maps to hi (±127 for int8): the weights of W8A8 (their activations
    take the full range; benchmarks/RESULTS.md compares the two choices)."""
    lo, hi = qrange(bits)
    if symmetric:
        # full range: amax maps to hi + 1/2, so the whole signed range is used (-8 included for int4: 16
        # levels, not 15) and no value is more than half a step away (the largest clamps to hi); the
        # comparison with amax / hi is in benchmarks/RESULTS.md
        amax = grouped.abs().amax(dim=-1)
        scale = torch.where(amax > 0, amax / (hi + 0.5 if full_range else hi), torch.ones_like(amax))
        return scale, None
    wmin = grouped.amin(dim=-1).clamp(max=0)
    wmax = grouped.amax(dim=-1).clamp(min=0)
    span = wmax - wmin
    scale = torch.where(span > 0, span / (hi - lo), torch.ones_like(span))
    zero = (lo - torch.round(wmin / scale)).clamp(lo, hi)
    return scale, zero


def quantize_with(
    weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, bits: int
) -> torch.Tensor:
    """Integers q (int8 [N, K], unpacked) for `weight` under given per-group scales and zeros."""
    lo, hi = qrange(bits)
    n, k = weight.shape
    groups = scale.shape[-1]
    w = weight.to(torch.float32).view(n, groups, k // groups)
    q = (w / scale.unsqueeze(-1)).round_()  # in place on the quotient: one float32 [N, K] allocation
    if zero_point is not None:
        q += zero_point.unsqueeze(-1)
    return q.clamp_(lo, hi).view(n, k).to(torch.int8)


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Unpacked int8 integers → storage layout for `bits`."""
    return pack_int4(q) if bits == 4 else q.to(torch.int8)


ACTIVATION_LEVELS = 127.5  # max |x| maps to ±127.5: the whole int8 range, no value over half a step away


def quantize_activations_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic symmetric int8 per row of x [M, K]: (q int8 [M, K], scale float32 [M, 1]).
    scale = max|x| / 127.5 and q in [-128, 127] (the row's largest positive value clamps to 127, half a
    step away like any other): a 0.4% finer step than max|x| / 127 on ±127 (the range torchao's
    W8A8 uses; benchmarks/RESULTS.md compares the two)."""
    amax = x.detach().abs().amax(dim=-1, keepdim=True).to(torch.float32)
    scale = torch.where(amax > 0, amax / ACTIVATION_LEVELS, torch.ones_like(amax))
    return quantize_activations(x, scale), scale


def quantize_activations(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 activations for a given scale (per token [M, 1] or per tensor []), clamped to [-128, 127]."""
    return torch.round(x.to(torch.float32) / scale).clamp(-128, 127).to(torch.int8)
