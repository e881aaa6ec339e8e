"""W8A16 template: y = x @ dequantize(int8 W)^T with the weight dequantized inside the K loop.

Kernel text (TEMPLATE) plus its wrapper (`launch`: checks, strides, grid). The picker in
triton_linear.py decides when this template runs (weight-only int8, M above the decode limit, or
always when the GEMV template cannot serve). Layout contract: fxc/qformat.py, bits=8:
q int8 [N, K]; scale (and zero point) float32 [N, G]; W[n, k] = (q[n, k] - z[n, g]) * s[n, g] with
g = k // (K / G). Hooks: {{epilogue_params}}, {{epilogue}}, {{compute_dtype}}, {{dot_precision}}.
Reads and writes nothing.
"""

from __future__ import annotations

import triton

from fxc.codegen.triton_cache import CompiledKernel, split_config
from fxc.codegen.triton_template import KernelTemplate

TEXT = '''
import triton
import triton.language as tl


@triton.jit
def w8a16_gemm(
    x_ptr, q_ptr, scale_ptr, zero_ptr, out_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_qn, stride_qk, stride_sn, stride_sg, stride_om, stride_on,
    {{epilogue_params}}
    GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, SCALE_PER_TILE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # -- program id -> output block ----------------------------------------------------------
    # Programs walk the output in bands of GROUP_M block rows, so the weight columns a band reads
    # stay in L2 while its rows are computed.
    pid = tl.program_id(axis=0)
    blocks_m = tl.cdiv(M, BLOCK_M)
    blocks_n = tl.cdiv(N, BLOCK_N)
    per_band = GROUP_M * blocks_n
    band_first_m = (pid // per_band) * GROUP_M
    band_rows = tl.minimum(blocks_m - band_first_m, GROUP_M)
    pid_m = band_first_m + (pid % per_band) % band_rows
    pid_n = (pid % per_band) // band_rows

    # -- offsets of the block ----------------------------------------------------------------
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N

    # -- pointers to the first K tile of x [BLOCK_M, BLOCK_K] and of W^T [BLOCK_K, BLOCK_N] -----
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
    q_ptrs = q_ptr + offs_k[:, None] * stride_qk + offs_n[None, :] * stride_qn

    # -- masked K loop: load x and int8 W^T tiles, dequantize W, accumulate in float32 --------
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = offs_k < K - k0
        x = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        mask_kn = mask_k[:, None] & mask_n[None, :]
        w = tl.load(q_ptrs, mask=mask_kn, other=0).to(tl.float32)
        if SCALE_PER_TILE:  # the whole K tile lies in one group: one scale per column
            s_offs = offs_n * stride_sn + (k0 // GROUP_SIZE) * stride_sg
            if HAS_ZERO:
                w = w - tl.load(zero_ptr + s_offs, mask=mask_n, other=0.0)[None, :]
            w = w * tl.load(scale_ptr + s_offs, mask=mask_n, other=0.0)[None, :]
        else:  # groups change inside the tile: one scale per element
            s_offs = ((k0 + offs_k) // GROUP_SIZE)[:, None] * stride_sg + offs_n[None, :] * stride_sn
            if HAS_ZERO:
                w = w - tl.load(zero_ptr + s_offs, mask=mask_kn, other=0.0)
            w = w * tl.load(scale_ptr + s_offs, mask=mask_kn, other=0.0)
        acc = tl.dot(x.to({{compute_dtype}}), w.to({{compute_dtype}}), acc, input_precision={{dot_precision}})
        x_ptrs += BLOCK_K * stride_xk
        q_ptrs += BLOCK_K * stride_qk

    # -- epilogue hook: bias, activation, residual, gate (float32) ---------------------------
    mask_mn = mask_m[:, None] & mask_n[None, :]
    {{epilogue}}

    # -- masked store --------------------------------------------------------------------------
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_mn)
'''


def _config(bm, bn, bk, warps, stages, group_m=8):
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group_m, num_warps=warps, num_stages=stages)


TEMPLATE = KernelTemplate(
    name="w8a16_gemm",
    text=TEXT,
    kernels=("w8a16_gemm",),
    configs=(
        _config(128, 128, 64, 8, 3),
        _config(128, 256, 64, 8, 3),
        _config(64, 128, 64, 4, 4),
        _config(128, 64, 128, 4, 4),
        _config(64, 64, 128, 4, 3),
    ),
    interpreter_config=_config(32, 64, 64, 1, 1, group_m=2),
)


def scale_per_tile(group_size: int, block_k: int) -> bool:
    return group_size % block_k == 0


def launch(compiled: CompiledKernel, config: dict, x, qweight, scale, zero_point, out, epilogue_args: list) -> None:
    """x [M, K], qweight int8 [N, K], scale/zero [N, G], out [M, N] (all 2-D, any strides)."""
    m, k = x.shape
    n = qweight.shape[0]
    group_size = k // scale.shape[1]
    constexprs, options = split_config(config)
    grid = (triton.cdiv(m, constexprs["BLOCK_M"]) * triton.cdiv(n, constexprs["BLOCK_N"]),)
    compiled["w8a16_gemm"][grid](
        x, qweight, scale, zero_point, out,
        m, n, k,
        x.stride(0), x.stride(1), qweight.stride(0), qweight.stride(1), scale.stride(0), scale.stride(1),
        out.stride(0), out.stride(1),
        *epilogue_args,
        GROUP_SIZE=group_size, HAS_ZERO=zero_point is not None,
        SCALE_PER_TILE=scale_per_tile(group_size, constexprs["BLOCK_K"]),
        **constexprs, **options,
    )
