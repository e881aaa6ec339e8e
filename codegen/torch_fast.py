"""Fast torch kernels for fxc's op set on the CPU: what the `torch` backend swaps fxc op nodes for.

Each function computes what the op's reference implementation (fxc/ops.py) computes:

    int8_linear_int_mm     activations quantized like the reference, int32 accumulators from
                           torch._int_mm (oneDNN; VNNI/AMX where the CPU has them), bit-exact;
                           shapes _int_mm does not take (CUDA: M <= 16 is padded, K or N not a
                           multiple of 8 falls back to the exact float64 GEMM)
    dequantized_linear     weight-only int8/int4: the float weight built one tile of output rows at
                           a time (TILE_BYTES, about an L2 cache), never materialized whole;
                           symmetric per-channel int8 scales the output instead of the weight
    csr_linear             N:M sparse weight as a torch CSR matrix (MKL sparse) past the crossover
    dense_linear           the densified N:M weight through ordinary BLAS below it

Reads and writes nothing but its arguments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fxc import qformat
from fxc.ops import int8_matmul_reference, unpacked_columns

TILE_BYTES = 2 << 20  # float32 weight tile for weight-only dequantization (about an L2 cache)


def int_mm_supported(rows: int, columns: int, outputs: int, device: torch.device) -> bool:
    """Whether torch._int_mm takes [rows, columns] x [columns, outputs] on `device` (after padding
    rows to 17 on CUDA, whose kernel needs M > 16 and K, N multiples of 8)."""
    if device.type == "cpu":
        return True
    return device.type == "cuda" and columns % 8 == 0 and outputs % 8 == 0 and columns >= 16


def int8_matmul(qx: torch.Tensor, qweight: torch.Tensor) -> torch.Tensor:
    """Exact int32 accumulators of int8 qx [M, K] @ qweight [N, K]^T."""
    rows, columns = qx.shape
    if not int_mm_supported(rows, columns, qweight.shape[0], qx.device):
        return int8_matmul_reference(qx, qweight)
    if qx.device.type == "cuda" and rows <= 16:
        padded = torch.cat([qx, qx.new_zeros(17 - rows, columns)])
        return torch._int_mm(padded, qweight.t())[:rows]
    return torch._int_mm(qx, qweight.t())


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic int8 rows of x [..., K] as the reference quantizes them: (q [M, K], scale [M, 1])."""
    return qformat.quantize_activations_per_token(x.reshape(-1, x.shape[-1]))


def int8_linear_int_mm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    input_scale: torch.Tensor | None,
    quantized: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """fxc.int8_linear through torch._int_mm (same quantization and scaling order as the reference).
    `quantized`: x already quantized per token by `quantize_per_token` (shared by linears reading x)."""
    rows = x.reshape(-1, x.shape[-1])
    if quantized is not None:
        qx, sx = quantized
    elif input_scale is None:
        qx, sx = qformat.quantize_activations_per_token(rows)
    else:
        sx = input_scale.to(torch.float32).reshape(1, 1)
        qx = qformat.quantize_activations(rows, sx)
    y = int8_matmul(qx, qweight) * sx  # int32 -> float32 and the first scale in one pass, as (acc.float() * sx)
    y.mul_(weight_scale.to(torch.float32).reshape(1, -1))
    if bias is not None:
        y.add_(bias.to(torch.float32))
    return y.to(x.dtype).reshape(*x.shape[:-1], qweight.shape[0])


def dequantized_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    bias: torch.Tensor | None,
    bits: int,
) -> torch.Tensor:
    """fxc.quantized_linear with the float weight built one tile of output rows at a time (whole
    when it fits one tile). Symmetric per-channel int8 multiplies the integers and applies the scale
    to the output instead: (x @ q^T) * s, one pass over the weight fewer (rounding differs from the
    reference's x @ (q * s)^T only in the last bits)."""
    outputs, columns = qweight.shape[0], unpacked_columns(qweight, bits)
    post_scale = bits == 8 and zero_point is None and scale.shape[-1] == 1
    rows = x.reshape(-1, columns)

    def weight_tile(n0: int, n1: int) -> torch.Tensor:
        if post_scale:
            return qweight[n0:n1].to(x.dtype)
        zero = zero_point[n0:n1] if zero_point is not None else None
        return qformat.dequantize(qweight[n0:n1], scale[n0:n1], zero, bits).to(x.dtype)

    tile = max(TILE_BYTES // (4 * columns), 1)
    if tile >= outputs:
        y = rows @ weight_tile(0, outputs).t()
    else:
        y = rows.new_empty(rows.shape[0], outputs)
        for n0 in range(0, outputs, tile):
            n1 = min(n0 + tile, outputs)
            torch.mm(rows, weight_tile(n0, n1).t(), out=y[:, n0:n1])
    if post_scale:
        y.mul_(scale.to(y.dtype).reshape(1, -1))
    if bias is not None:
        y.add_(bias.to(y.dtype))
    return y.reshape(*x.shape[:-1], outputs)


def csr_linear(x: torch.Tensor, weight_csr: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., K] @ W^T with W a [N, K] sparse CSR tensor."""
    rows = x.reshape(-1, x.shape[-1])
    y = (weight_csr @ rows.t()).t()
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight_csr.shape[0])


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, weight, bias)
