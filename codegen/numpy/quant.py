"""fxc's quantized storage formats (fxc/ir/qformat.py) in numpy, plus exact integer GEMMs through BLAS.

- `dequantize_rows`: int8 or packed int4 (low nibble = even column) with per-channel or per-group
  scales and optional zero points, W = (q - z) * s in float32 by the torch reference's own
  array-neutral steps (fxc.ir.qformat.unpack and apply_group_scales, numpy operations only on numpy
  arrays), so dequantized weights are bit-identical.
- `quantize_activations_per_token` / `quantize_activations`: symmetric int8, [-128, 127] (max|x| / 127.5),
  round-half-to-even (`np.rint`), bit-identical to torch.round. Finite rows only: int8_linear finds rows
  holding inf or nan (`nonfinite_rows`) and sends them to `int8_float_path` (x_row @ (qweight *
  weight_scale)^T in float32) instead.
- `int8_matmul_exact`: int8 [M, K] x int8 [N, K]^T -> int32, exact. Every product has |p| <= 2^14
  and every partial sum |s| <= K * 2^14, so float32 BLAS is exact while K <= 2^24 / 2^14 = 1024
  (all integers up to 2^24 are floats, whatever the summation order or FMA). Longer K is split into
  chunks of at most 1024 columns, each an exact float32 GEMM, summed in int32. Never numpy's integer
  matmul (it has no BLAS kernel).
- `tiled_linear`: y = x @ W^T with W produced tile by tile (a block of output rows at a time), so a
  quantized weight is never materialized as a whole float32 matrix.

Reads its arguments; writes only the arrays it returns; preserves every argument.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fxc.ir.qformat import ACTIVATION_LEVELS, apply_group_scales, unpack

EXACT_FLOAT32_K = 2**24 // 2**14  # 1024: longest exact int8 dot product in float32
TILE_BYTES = 4 << 20  # float32 weight tile: fits in L2 with its output block


def dequantize_rows(qweight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, bits: int) -> np.ndarray:
    """float32 [n, K] of n stored rows (any row block: scales and zeros sliced alike)."""
    q = unpack(qweight, bits).astype(np.float32)
    zero = zero_point.astype(np.float32, copy=False) if zero_point is not None else None
    return apply_group_scales(q, scale.astype(np.float32, copy=False), zero)  # numpy operations only


def quantize_activations(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 of float rows for a per-token [M, 1] or per-tensor scale, clamped to [-128, 127]."""
    q = np.rint(x.astype(np.float32, copy=False) / scale)
    return np.clip(q, -128, 127, out=q).astype(np.int8)


def quantize_activations_per_token(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic symmetric int8 per row of x [M, K]: (q int8 [M, K], scale float32 [M, 1])."""
    amax = np.abs(x).max(axis=-1, keepdims=True).astype(np.float32, copy=False)
    scale = np.where(amax > 0, amax / np.float32(ACTIVATION_LEVELS), np.float32(1.0)).astype(np.float32, copy=False)
    return quantize_activations(x, scale), scale


def nonfinite_rows(rows: np.ndarray) -> np.ndarray | None:
    """Boolean [M]: the rows of rows [M, K] holding inf or nan, or None when every row is finite. Row sums first
    (a finite sum proves its row finite: inf and nan never cancel), the exact test only when a sum is not finite
    (it may also overflow on finite values)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(rows.sum(axis=-1)).all():
            return None
    nonfinite = ~np.isfinite(rows).all(axis=-1)
    return nonfinite if nonfinite.any() else None


def int8_float_path(rows: np.ndarray, qweight: np.ndarray, weight_scale: np.ndarray) -> np.ndarray:
    """float32 rows [M, K] @ (qweight * weight_scale)^T: fxc.int8_linear's path for rows holding inf or nan
    (weight_scale [1, N] or [N]), the float model's inf / nan on the dequantized weight."""
    weight = qweight.astype(np.float32) * np.asarray(weight_scale, np.float32).reshape(-1, 1)
    return rows.astype(np.float32, copy=False) @ weight.T


def k_chunks(columns: int) -> list[tuple[int, int]]:
    """Balanced column ranges of at most EXACT_FLOAT32_K columns."""
    count = max(-(-columns // EXACT_FLOAT32_K), 1)
    step = -(-columns // count)
    return [(start, min(start + step, columns)) for start in range(0, columns, step)] or [(0, 0)]


def int8_matmul_exact(qx: np.ndarray, qweight: np.ndarray, tile_rows: int | None = None) -> np.ndarray:
    """Exact int32 accumulators of int8 qx [M, K] @ int8 qweight [N, K]^T, through float32 BLAS."""
    rows, columns = qx.shape
    outputs = qweight.shape[0]
    chunks = k_chunks(columns)
    x = qx.astype(np.float32)
    acc = np.empty((rows, outputs), dtype=np.int32)
    tile = tile_rows or max(TILE_BYTES // (4 * max(columns, 1)), 1)
    for n0 in range(0, outputs, tile):
        w = qweight[n0 : n0 + tile].astype(np.float32)
        block = acc[:, n0 : n0 + tile]
        for i, (k0, k1) in enumerate(chunks):
            partial = (x[:, k0:k1] @ w[:, k0:k1].T).astype(np.int32)
            if i == 0:
                block[...] = partial
            else:
                block += partial
    return acc


def tiled_linear(
    x: np.ndarray, outputs: int, weight_rows: Callable[[int, int], np.ndarray], dtype: np.dtype
) -> np.ndarray:
    """x [M, K] @ W^T -> [M, outputs] in `dtype`, with W[n0:n1] = weight_rows(n0, n1) one tile at a time."""
    columns = x.shape[-1]
    tile = max(TILE_BYTES // (4 * max(columns, 1)), 1)
    if tile >= outputs:
        return x @ weight_rows(0, outputs).astype(dtype, copy=False).T
    y = np.empty((x.shape[0], outputs), dtype=dtype)
    for n0 in range(0, outputs, tile):
        n1 = min(n0 + tile, outputs)
        y[:, n0:n1] = x @ weight_rows(n0, n1).astype(dtype, copy=False).T
    return y
