"""Calls into the AVX2 kernels (avx2_weight_only.c, avx2_int8.c; built and loaded by build.py) on torch tensors.

    y = avx2.weight_only_linear(rows, QuantizedWeight(qweight, scale, zero_point, bits), bias)  # float32 rows [M, K]
    quantized = avx2.quantize_rows(rows, input_scale)      # W8A8: int8 rows (as int16), scales, non-finite count
    y = avx2.int8_linear(quantized, qweight, weight_scale)  # (acc * ws) * sx, before bias and the float path

The caller checks that the library loaded (build.avx2_kernel()), that x is float32 on the CPU without a
gradient, and the shapes each kernel takes (`takes_weight_only`, `takes_int8`). Threads: torch.get_num_threads()
at the call. GEMV_ROWS / OUTER_ROWS pick the weight-only loop by the number of rows (avx2_weight_only.c), from
benchmarks/cpu_speed.py's layer runs. Reads its arguments; writes only the tensors it returns.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fxc.codegen.torch.native import build
from fxc.ir.qformat import QuantizedWeight

GEMV_ROWS = {8: 2, 4: 1}  # bits -> at most this many rows take the decode loop (weights converted in registers)
OUTER_ROWS = 16  # from this many rows on the outer-product panels, below them the few-rows panels
MAX_INT8_COLUMNS = 131071  # int32 accumulators of K products |q w| <= 128 * 128


class Int8Rows(NamedTuple):
    """x quantized by fxc_quantize_rows: int16 [M, Kp] (K padded to 16), scale float32 [M], rows with inf or nan."""

    q: torch.Tensor
    scale: torch.Tensor
    nonfinite: int


def _address(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _float32(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """tensor as contiguous float32 (itself when it already is: a decode call's overhead counts)."""
    if tensor is None or (tensor.dtype == torch.float32 and tensor.is_contiguous()):
        return tensor
    return tensor.to(torch.float32).contiguous()


def takes_weight_only(columns: int, groups: int, bits: int) -> bool:
    """Whether fxc_wo_linear takes `groups` scales per channel over `columns` of `bits` (per channel, or groups
    of a multiple of 16 columns; int4: an even number of columns)."""
    if bits == 4 and columns % 2:
        return False
    return groups == 1 or (groups > 0 and columns % groups == 0 and (columns // groups) % 16 == 0)


def weight_only_linear(rows: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """rows [M, K] float32 @ dequantize(weight)^T + bias, float32 [M, N] (avx2_weight_only.c)."""
    qweight, scale, zero_point, bits = weight
    rows, qweight = rows.contiguous(), qweight.contiguous()
    m, k = rows.shape
    n, groups = qweight.shape[0], scale.shape[-1]
    scale32, zero32, bias32 = _float32(scale), _float32(zero_point), _float32(bias)  # scale, zero: [N, groups]
    y = torch.empty(m, n, dtype=torch.float32)
    status = build.avx2_kernel().fxc_wo_linear(
        rows.data_ptr(), m, k, qweight.data_ptr(), bits, n, groups, scale32.data_ptr(), _address(zero32),
        _address(bias32), y.data_ptr(), GEMV_ROWS[bits], OUTER_ROWS, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise MemoryError(f"the AVX2 weight-only kernel could not allocate its buffers for {m} x {k} rows")
    return y


def takes_int8(columns: int) -> bool:
    """Whether the int32 accumulators of `columns` products stay exact (K < 131072)."""
    return columns <= MAX_INT8_COLUMNS


def quantize_rows(rows: torch.Tensor, input_scale: torch.Tensor | None) -> Int8Rows:
    """rows [M, K] float32 quantized as fxc/ir/qformat.py does (per token, or with the static per-tensor scale),
    bit for bit; rows holding inf or nan are counted (their integers are zero)."""
    rows = rows.contiguous()
    m, k = rows.shape
    padded = -(-k // 16) * 16
    q = torch.empty(m, padded, dtype=torch.int16)
    scale = torch.empty(m, dtype=torch.float32)
    static = _float32(input_scale)  # one value
    nonfinite = build.avx2_kernel().fxc_quantize_rows(
        rows.data_ptr(), m, k, padded, _address(static), q.data_ptr(), scale.data_ptr(), torch.get_num_threads()
    )
    return Int8Rows(q, scale, int(nonfinite))


def int8_linear(quantized: Int8Rows, qweight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """float32 [M, N] = (acc * weight_scale[n]) * scale[m], acc the exact int32 accumulators of the quantized rows
    times qweight int8 [N, K] (avx2_int8.c)."""
    qweight = qweight.contiguous()
    n, k = qweight.shape
    m, padded = quantized.q.shape
    ws = _float32(weight_scale)  # [N] (or [N, 1]): N values in order
    y = torch.empty(m, n, dtype=torch.float32)
    build.avx2_kernel().fxc_int8_gemm(
        quantized.q.data_ptr(), m, padded, qweight.data_ptr(), n, k, ws.data_ptr(), quantized.scale.data_ptr(), 1,
        y.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    return y
