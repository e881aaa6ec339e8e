"""w8a8: int8 activations x int8 weights -> int32, per-token x per-channel scales fused; three kernels.

    compiled = cache.load(TEMPLATE.render(**hooks), TEMPLATE.kernels)   # as codegen/triton/picker.py does
    y = launch(compiled, config, x, qweight, weight_scale, input_scale, epilogue_args)

    w8a8_quantize_rows  x [M, K] float -> qx int8 [M, K] and sx float32 [M], ROWS rows per program: per row
                        sx = max|x| / 127.5 (1 where the row is all zero), or the static per-tensor
                        scale; qx = rint(clamp(x / sx, -128, 127)), round half to even; sx = nan marks
                        a row holding inf or nan (its qx is meaningless)
    w8a8_gemm           acc int32 = qx @ qweight^T on the int8 tensor cores, then
                        y = (acc * weight_scale[n]) * sx[m] in float32 (in this order: acc * weight_scale
                        is bounded by the weights, so x near float32's max does not overflow a finite y);
                        then the epilogue hook. Rows marked by sx = nan come out nan here and are rewritten
                        by the next kernel
    w8a8_float_rows     one program per FLOAT_ROWS["BLOCK_N"] columns walks sx FLOAT_ROWS["BLOCK_M"] rows at
                        a time; a block of rows holding a marked row computes those rows' float path,
                        x[m] @ (qweight * weight_scale)^T (float32 dot of x itself: the float model's inf /
                        nan, as the reference gives), runs the epilogue hook and stores those rows only.
                        For finite inputs it only reads sx. Kept out of w8a8_gemm so that the GEMM's
                        registers and shared memory are the int8 path's alone (a float32 dot in the same
                        kernel reserved its shared memory and spilled registers in every config)

Semantics: fxc.ir.ops.int8_linear, rows holding inf or nan included. Division is IEEE (div_rn) like the
reference; rounding uses the float32 trick (v + 1.5 * 2**23) - 1.5 * 2**23, exact half-to-even for
|v| <= 128 and portable to Triton's interpreter (which has no libdevice rint).
Reads: x float16/bfloat16/float32 [M, K] (any strides); qweight int8 [N, K] (any strides);
weight_scale [N] and input_scale (None: dynamic, per token) of one element, any dtype (passed on as
contiguous float32). Writes out [M, N] (allocated in x's dtype unless given; any strides; the rows of
x holding inf or nan written twice: by w8a8_gemm, then by w8a8_float_rows) and its own scratch qx int8
[M, K], sx float32 [M]; preserves every input. Hooks: {{epilogue_params}}, {{epilogue}}
(codegen/triton/epilogue.py). The picker runs it for every fxc.int8_linear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton

from fxc.codegen.triton.cache import CompiledKernel, split_config
from fxc.codegen.triton.kernels.tiles import FLOAT_DTYPES, check, gemm_template, output, swizzled_grid

TEXT = '''
import triton
import triton.language as tl

from fxc.codegen.triton.kernels.tiles import block_offsets, store_block, swizzled_block


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

    # -- masked loop: divide, clamp, round half to even, store int8; count inf / nan per row ---------
    nonfinite = tl.zeros((ROWS, BLOCK_K), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = mask_m[:, None] & (offs_k[None, :] < K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk, mask=mask, other=0.0)
        finite = tl.abs(x.to(tl.float32)) <= 3.4028234663852886e38  # false for inf and nan
        nonfinite += tl.where(finite, 0, 1)
        v = tl.math.div_rn(tl.where(finite, x.to(tl.float32), 0.0), scale[:, None])
        v = tl.minimum(tl.maximum(v, -128.0), 127.0)
        v = (v + 12582912.0) - 12582912.0
        tl.store(qx_ptr + offs_m[:, None] * K + offs_k[None, :], v.to(tl.int8), mask=mask)

    # -- the scale, nan for a row holding inf or nan: w8a8_gemm gives that row the float path -------
    scale = tl.where(tl.max(nonfinite, axis=1) > 0, float("nan"), scale)
    tl.store(sx_ptr + offs_m, scale, mask=mask_m)


@triton.jit
def w8a8_gemm(
    qx_ptr, sx_ptr, q_ptr, ws_ptr, out_ptr,
    M, N, K,
    stride_qn, stride_qk, stride_om, stride_on,
    {{epilogue_params}}
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # -- program id -> output block, its offsets and masks (helpers: kernels/tiles.py) ----------
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

    # -- scales: per output channel, then per token, in float32 (acc * ws cannot overflow) -------
    sx = tl.load(sx_ptr + offs_m, mask=mask_m, other=0.0)
    ws = tl.load(ws_ptr + offs_n, mask=mask_n, other=0.0)
    acc = acc.to(tl.float32) * ws[None, :] * sx[:, None]

    # -- epilogue hook: bias, activation, residual, gate -------------------------------------
    mask_mn = mask_m[:, None] & mask_n[None, :]
    {{epilogue}}

    # -- masked store --------------------------------------------------------------------------
    store_block(out_ptr, acc, offs_m, offs_n, mask_mn, stride_om, stride_on)


@triton.jit
def w8a8_float_rows(
    x_ptr, sx_ptr, q_ptr, ws_ptr, out_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_qn, stride_qk, stride_om, stride_on,
    {{epilogue_params}}
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # -- program id -> BLOCK_N output columns; it walks all rows, BLOCK_M at a time -----------
    offs_n = tl.program_id(axis=0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    ws = tl.load(ws_ptr + offs_n, mask=mask_n, other=0.0)
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < M
        sx = tl.load(sx_ptr + offs_m, mask=mask_m, other=0.0)
        nonfinite = sx != sx  # w8a8_quantize_rows marks a row holding inf or nan with sx = nan
        if tl.max(nonfinite.to(tl.int32), axis=0) > 0:  # rare: every other block of rows only loads sx
            # -- the float path of those rows: x @ (qweight * ws)^T in float32 (IEEE inf / nan) -------
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                mask_k = offs_k < K - k0
                x = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :] * stride_xk,
                            mask=nonfinite[:, None] & mask_k[None, :], other=0.0).to(tl.float32)
                w = tl.load(q_ptr + (k0 + offs_k)[:, None] * stride_qk + offs_n[None, :] * stride_qn,
                            mask=mask_k[:, None] & mask_n[None, :], other=0).to(tl.float32) * ws[None, :]
                acc = tl.dot(x, w, acc, input_precision="ieee")
            # -- epilogue hook, then a store of those rows only ----------------------------------
            mask_mn = mask_m[:, None] & mask_n[None, :]
            {{epilogue}}
            store_block(out_ptr, acc, offs_m, offs_n, mask_mn & nonfinite[:, None], stride_om, stride_on)
'''


TEMPLATE = gemm_template("w8a8", TEXT, [  # rows: BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages[, 90: sm_90 only]
    (128, 256, 128, 8, 3, 90), (128, 128, 128, 8, 4), (256, 128, 128, 8, 3, 90), (64, 128, 128, 4, 4),
    (16, 64, 256, 4, 4), (16, 128, 128, 4, 5),
], kernels=("w8a8_quantize_rows", "w8a8_gemm", "w8a8_float_rows"))
FLOAT_ROWS = dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=32)  # w8a8_float_rows: rows per step, columns per program
QUANT_BLOCK_K = 1024  # columns per step of the row quantization kernel
QUANT_ROWS = {False: 2, True: 32}  # rows per program of it: on a GPU / in the interpreter (fewer launches)


def launch(compiled: CompiledKernel, config: dict, x: torch.Tensor, qweight: torch.Tensor,
           weight_scale: torch.Tensor, input_scale: torch.Tensor | None, epilogue_args: Sequence = (),
           out: torch.Tensor | None = None, interpret: bool = False) -> torch.Tensor:
    """Check the inputs (layout above), allocate out unless given and the scratch qx, sx; launch
    w8a8_quantize_rows on M / ROWS programs (ROWS: QUANT_ROWS[interpret]), w8a8_gemm on one program
    per output block, then w8a8_float_rows on N / FLOAT_ROWS["BLOCK_N"] programs; return out."""
    check("w8a8", "x", x, FLOAT_DTYPES, (None, None), x.device)
    m, k = x.shape
    n = qweight.shape[0]
    check("w8a8", "qweight", qweight, (torch.int8,), (n, k), x.device)
    check("w8a8", "weight_scale", weight_scale.reshape(-1), None, (n,), x.device)
    weight_scale = weight_scale.float().reshape(-1).contiguous()
    if input_scale is not None:
        check("w8a8", "input_scale", input_scale.reshape(-1), None, (1,), x.device)
        input_scale = input_scale.float().reshape(1)
    out = output("w8a8", out, x, n)
    qx = torch.empty((m, k), dtype=torch.int8, device=x.device)
    sx = torch.empty((m,), dtype=torch.float32, device=x.device)
    rows = min(QUANT_ROWS[interpret], triton.next_power_of_2(m))
    compiled["w8a8_quantize_rows"][(triton.cdiv(m, rows),)](
        x, qx, sx, input_scale, m, k, *x.stride(),
        STATIC=input_scale is not None, ROWS=rows, BLOCK_K=min(QUANT_BLOCK_K, triton.next_power_of_2(k)),
    )
    constexprs, options = split_config(config)
    compiled["w8a8_gemm"][swizzled_grid(m, n, constexprs)](
        qx, sx, qweight, weight_scale, out,
        m, n, k,
        *qweight.stride(), *out.stride(),
        *epilogue_args,
        **constexprs, **options,
    )
    compiled["w8a8_float_rows"][(triton.cdiv(n, FLOAT_ROWS["BLOCK_N"]),)](
        x, sx, qweight, weight_scale, out,
        m, n, k,
        *x.stride(), *qweight.stride(), *out.stride(),
        *epilogue_args,
        **FLOAT_ROWS,
    )
    return out
