"""Fast torch kernels for fxc's op set on the CPU: what the `torch` backend swaps fxc op nodes for.

Each function computes what the op's reference implementation (fxc/ir/ops.py) computes:

    int8_linear_int_mm     activations quantized like the reference, int32 accumulators from
                           torch._int_mm (oneDNN; VNNI/AMX where the CPU has them), scaled like the
                           reference ((acc * weight scale) * activation scale: no overflow for any
                           finite x), bit-exact; shapes _int_mm does not take (CUDA: M <= 16 is padded,
                           K or N not a multiple of 8 falls back to the exact float64 GEMM); rows of x
                           holding inf or nan take the reference's float path (float_path_where_nonfinite)
    int8_linear_avx2       the same op through the AVX2 kernels of codegen/torch/native/avx2_int8.c: x quantized
                           bit-exactly like the reference, the exact int32 accumulators (_mm256_madd_epi16)
                           scaled in the reference's order, so the result is bit-exact too; non-finite rows and
                           the bias as above. Where torch._int_mm has VNNI/AMX kernels the backend passes
                           `int_mm_above`: more rows than that take torch._int_mm on the same quantized x; x
                           that is not float32 takes int8_linear_int_mm
    weight_only_linear     weight-only int8/int4 (codegen/torch/weight_only.py): int8 planes
                           of x through torch._int_mm for a few rows, else the float weight built
                           tile by tile in a reused scratch buffer, never materialized whole
    csr_linear             N:M sparse weight as a torch CSR matrix (MKL sparse) past the crossover
    dense_linear           the densified N:M weight through ordinary BLAS below it

Reads its arguments; writes only the tensors it returns (int8_linear_int_mm fills in the rows of its own
output that take the float path); preserves every argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fxc.codegen.torch.native import avx2
from fxc.codegen.torch.native import build as native_build
from fxc.ir import qformat
from fxc.ir.ops import int8_matmul_reference


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
    ws = weight_scale.to(torch.float32).reshape(1, -1)
    y = int8_matmul(qx, qweight) * ws  # int32 -> float32 and the weight scale in one pass, as (acc.float() * ws)
    y = float_path_where_nonfinite(y.mul_(sx), rows, qweight, ws)
    if bias is not None:
        y.add_(bias.to(torch.float32))
    return y.to(x.dtype).reshape(*x.shape[:-1], qweight.shape[0])


def avx2_int8_takes(x: torch.Tensor, columns: int) -> bool:
    """Whether int8_linear_avx2 runs on x (else it hands the call to int8_linear_int_mm): float32 on the CPU,
    K < 131072 (exact int32 accumulators), eager, the AVX2 library loaded."""
    return (x.dtype == torch.float32 and x.device.type == "cpu" and avx2.takes_int8(columns)
            and not torch.compiler.is_compiling() and native_build.avx2_kernel() is not None)


def quantize_rows_avx2(x: torch.Tensor) -> avx2.Int8Rows | None:
    """x [..., K] quantized per token once by the AVX2 kernel, for the int8_linear_avx2 nodes reading x."""
    if not avx2_int8_takes(x, x.shape[-1]):
        return None
    return avx2.quantize_rows(x.reshape(-1, x.shape[-1]), None)


def int8_linear_avx2(
    x: torch.Tensor,
    qweight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    input_scale: torch.Tensor | None,
    quantized: avx2.Int8Rows | None = None,
    int_mm_above: int | None = None,
) -> torch.Tensor:
    """fxc.int8_linear through the AVX2 int8 kernel, bit-exact with the reference. `quantized`: x already quantized
    per token by `quantize_rows_avx2` (shared by the linears reading x); `int_mm_above`: more rows than this take
    torch._int_mm (a CPU with VNNI/AMX), None: never."""
    if not avx2_int8_takes(x, qweight.shape[1]):
        return int8_linear_int_mm(x, qweight, weight_scale, bias, input_scale)
    rows = x.reshape(-1, x.shape[-1])
    if quantized is None:
        quantized = avx2.quantize_rows(rows, input_scale)
    if int_mm_above is not None and rows.shape[0] > int_mm_above:
        int8_rows = (quantized.q[:, : rows.shape[1]].to(torch.int8), quantized.scale.reshape(-1, 1))
        return int8_linear_int_mm(x, qweight, weight_scale, bias, input_scale, int8_rows)
    y = avx2.int8_linear(quantized, qweight, weight_scale)  # (acc * ws) * sx, as the reference
    if quantized.nonfinite:
        y = float_path_where_nonfinite(y, rows, qweight, weight_scale.to(torch.float32).reshape(1, -1))
    if bias is not None:
        y.add_(bias.to(torch.float32))
    return y.to(x.dtype).reshape(*x.shape[:-1], qweight.shape[0])


def float_path_where_nonfinite(
    y: torch.Tensor, rows: torch.Tensor, qweight: torch.Tensor, ws: torch.Tensor
) -> torch.Tensor:
    """y [M, N] (int8_linear before its bias) with every row whose input row holds inf or nan replaced by the op's
    float path, rows @ (qweight * ws)^T in float32 (fxc.ir.ops.int8_linear: the float model's inf / nan there).
    Eager: row sums first (one fast reduction and one host sync; a finite sum proves its row finite, since inf and
    nan never cancel), the exact isfinite test only when a sum is not finite, the float GEMM on the non-finite rows
    only. Under torch.compile: torch.cond, so the graph has no data-dependent branch and the float GEMM runs only
    when a row is not finite."""
    if torch.compiler.is_compiling():
        finite = torch.isfinite(rows).all(dim=-1)
        return torch.cond(finite.all(), _rows_unchanged, _rows_through_float_path, (y, rows, finite, qweight, ws))
    if bool(torch.isfinite(rows.sum(dim=-1)).all()):
        return y
    nonfinite = ~torch.isfinite(rows).all(dim=-1)  # a sum may also overflow on finite values
    if bool(nonfinite.any()):
        y[nonfinite] = _float_path(rows[nonfinite], qweight, ws)
    return y


def _float_path(rows: torch.Tensor, qweight: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    return rows.to(torch.float32) @ (qweight.to(torch.float32) * ws.reshape(-1, 1)).T


def _rows_unchanged(y, rows, finite, qweight, ws):
    return y.clone()  # a torch.cond branch may not return its input itself


def _rows_through_float_path(y, rows, finite, qweight, ws):
    return torch.where(finite.unsqueeze(-1), y, _float_path(rows, qweight, ws))


def csr_linear(x: torch.Tensor, weight_csr: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., K] @ W^T with W a [N, K] sparse CSR tensor."""
    rows = x.reshape(-1, x.shape[-1])
    y = (weight_csr @ rows.t()).t()
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight_csr.shape[0])


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, weight, bias)
