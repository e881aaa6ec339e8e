"""W8A8 template: int8 activations x int8 weights -> int32, per-token x per-channel scales fused.

Two kernels (TEMPLATE) and their wrapper (`launch`):

    w8a8_quantize_rows  x [M, K] float -> qx int8 [M, K] and sx float32 [M], ROWS rows per program: per row
                        sx = max|x| / 127.5 (1 where the row is all zero), or the static per-tensor
                        scale; qx = rint(clamp(x / sx, -128, 127)), round half to even
    w8a8_gemm           acc int32 = qx @ qweight^T on the int8 tensor cores, then
                        y = acc * sx[m] * weight_scale[n] in float32, then the epilogue hook

Semantics: fxc.ir.ops.int8_linear. Division is IEEE (div_rn) like the reference; rounding uses the
float32 trick (v + 1.5 * 2**23) - 1.5 * 2**23, exact half-to-even for |v| <= 128 and portable to
Triton's interpreter (which has no libdevice rint). Hooks: {{epilogue_params}}, {{epilogue}}.
Reads and writes nothing.
"""

from __future__ import annotations

import torch
import triton

from fxc.codegen.triton.cache import CompiledKernel, split_config
from fxc.codegen.triton.kernels.tiles import HELPERS, gemm_config, swizzled_grid
from fxc.codegen.triton.template import KernelTemplate

TEXT = HELPERS + '''

@triton.jit
def w8a8_quantize_rows(
    x_ptr, qx_ptr, sx_ptr, static_scale_ptr, M, K, stride_xm, stride_xk,
    STATIC: tl.constexpr, ROWS: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # -- program id -> a block of ROWS rows (tokens) ----------------------------------------------
    offs_m = tl.program_id(axis=0) * ROWS + tl.arange(0, ROWS)
    mask_m = offs_m < M

    # -- each row's scale: max |x| / 127.5 (dynamic) or the per-tensor scale (static) -----------------
    if STATIC:
        scale = tl.zeros((ROWS,), dtype=tl.float32) + tl.load(static_scale_ptr).to(tl.float32)
    else:
        amax = tl.zeros((ROWS, BLOCK_K), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                        mask=mask_m[:, None] & (offs_k[None, :] < K), other=0.0)
            amax = tl.maximum(amax, tl.abs(x.to(tl.float32)))
        row_max = tl.max(amax, axis=1)
        scale = tl.where(row_max > 0, tl.math.div_rn(row_max, 127.5), 1.0)
    tl.store(sx_ptr + offs_m, scale, mask=mask_m)

    # -- masked loop: divide, clamp, round half to even, store int8 -------------------------------
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = mask_m[:, None] & (offs_k[None, :] < K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk, mask=mask, other=0.0)
        v = tl.math.div_rn(x.to(tl.float32), scale[:, None])
        v = tl.minimum(tl.maximum(v, -128.0), 127.0)
        v = (v + 12582912.0) - 12582912.0
        tl.store(qx_ptr + offs_m[:, None] * K + offs_k[None, :], v.to(tl.int8), mask=mask)


@triton.jit
def w8a8_gemm(
    qx_ptr, sx_ptr, q_ptr, ws_ptr, out_ptr,
    M, N, K,
    stride_qn, stride_qk, stride_om, stride_on,
    {{epilogue_params}}
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # -- program id -> output block, its offsets and masks (helpers: triton_tiles.py) ------------
    pid_m, pid_n = swizzled_block(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m, offs_n, mask_m, mask_n = block_offsets(pid_m, pid_n, M, N, BLOCK_M, BLOCK_N)

    # -- pointers to the first K tile of qx [BLOCK_M, BLOCK_K] and of W^T [BLOCK_K, BLOCK_N] ----
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = qx_ptr + offs_m[:, None] * K + offs_k[None, :]
    b_ptrs = q_ptr + offs_k[:, None] * stride_qk + offs_n[None, :] * stride_qn

    # -- masked K loop: int8 x int8 -> int32, exact -------------------------------------------
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = offs_k < K - k0
        a = tl.load(a_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0)
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * stride_qk

    # -- scales: per token x per output channel, in float32 -------------------------------------
    sx = tl.load(sx_ptr + offs_m, mask=mask_m, other=0.0)
    ws = tl.load(ws_ptr + offs_n, mask=mask_n, other=0.0)
    acc = acc.to(tl.float32) * sx[:, None] * ws[None, :]

    # -- epilogue hook: bias, activation, residual, gate -------------------------------------
    mask_mn = mask_m[:, None] & mask_n[None, :]
    {{epilogue}}

    # -- masked store --------------------------------------------------------------------------
    store_block(out_ptr, acc, offs_m, offs_n, mask_mn, stride_om, stride_on)
'''


TEMPLATE = KernelTemplate(
    name="w8a8",
    text=TEXT,
    kernels=("w8a8_quantize_rows", "w8a8_gemm"),
    configs=(
        gemm_config(128, 256, 128, 8, 3),
        gemm_config(128, 128, 128, 8, 4),
        gemm_config(256, 128, 128, 8, 3),
        gemm_config(64, 128, 128, 4, 4),
        gemm_config(16, 64, 256, 4, 4),
        gemm_config(16, 128, 128, 4, 5),
    ),
    interpreter_config=gemm_config(32, 64, 64, 1, 1, group_m=2),
)
QUANT_BLOCK_K = 1024  # columns per step of the row quantization kernel
QUANT_ROWS = {False: 2, True: 32}  # rows per program of it: on a GPU / in the interpreter (fewer launches)


def launch(compiled: CompiledKernel, config: dict, x, qweight, weight_scale, input_scale, out, epilogue_args: list,
           interpret: bool = False):
    """x [M, K] float, qweight int8 [N, K], weight_scale float32 [N], input_scale float32 [1] or None."""
    m, k = x.shape
    n = qweight.shape[0]
    qx = torch.empty((m, k), dtype=torch.int8, device=x.device)
    sx = torch.empty((m,), dtype=torch.float32, device=x.device)
    rows = min(QUANT_ROWS[interpret], triton.next_power_of_2(m))
    compiled["w8a8_quantize_rows"][(triton.cdiv(m, rows),)](
        x, qx, sx, input_scale, m, k, x.stride(0), x.stride(1),
        STATIC=input_scale is not None, ROWS=rows, BLOCK_K=min(QUANT_BLOCK_K, triton.next_power_of_2(k)),
    )
    constexprs, options = split_config(config)
    grid = swizzled_grid(m, n, constexprs)
    compiled["w8a8_gemm"][grid](
        qx, sx, qweight, weight_scale, out,
        m, n, k,
        qweight.stride(0), qweight.stride(1), out.stride(0), out.stride(1),
        *epilogue_args,
        **constexprs, **options,
    )
