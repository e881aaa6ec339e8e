"""w8a16_gemm and w4a16_gemm: y = x @ dequantize(W)^T for a weight-only int8 or int4 W, the weight
loaded (int4: unpacked) and dequantized group-wise inside the K loop. One kernel text, two templates.

    template = TEMPLATES[bits]                                          # w8a16_gemm or w4a16_gemm
    compiled = cache.load(template.render(**hooks), template.kernels)   # as codegen/triton/picker.py does
    y = launch(compiled, config, x, qweight, scale, zero_point, bits, epilogue_args)

Reads (layout of fxc/ir/qformat.py): x float16/bfloat16/float32 [M, K]; qweight int8 [N, K] (bits=8)
or uint8 [N, K/2] (bits=4, K even: two signed nibbles per byte, column 2j in the low nibble and 2j+1
in the high one); scale and zero point (None: symmetric) [N, G] with G dividing K, any dtype (passed
on as contiguous float32); W[n, k] = (q[n, k] - z[n, g]) * s[n, g] with g = k // (K / G). x, qweight
and out may have any strides. For int4 the kernel loads each K tile's packed bytes [BLOCK_K / 2,
BLOCK_N] once, contiguous along K (wide loads), takes the low nibbles (the even columns) and the high
ones (the odd columns) with two shifts each, and runs one dot per half against the even / odd columns
of x, split in registers. Scales (SCALES, tiles.scale_mode): per column, loaded once before the loop;
per K tile (BLOCK_K lowered to fit a group); or per element. Every weight is scaled before the dot, so
x near float32's max stays finite wherever x @ W^T does. EVEN_K (K a multiple of BLOCK_K) drops the K
masks, which keeps the loads wide. Writes out [M, N] (allocated in x's dtype unless given), nothing
else; preserves every input.
The two templates share the text but not its rendering: each names the kernel after itself (the
text's {{kernel}}, filled here) and has its own autotune table; BITS is a constexpr, so each compiled
kernel holds only its own weight load. Hooks left to the picker: {{epilogue_params}}, {{epilogue}}
(codegen/triton/epilogue.py), {{compute_dtype}} (the dtype the dot takes), {{dot_precision}}. The
picker runs it for weight-only linears above the GEMV's largest M.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fxc.codegen.triton.cache import CompiledKernel, split_config
from fxc.codegen.triton.kernels.tiles import (
    FLOAT_DTYPES,
    check,
    gemm_template,
    group_scale_args,
    output,
    scale_mode,
    swizzled_grid,
)

TEXT = '''
import triton
import triton.language as tl

from fxc.codegen.triton.kernels.tiles import block_offsets, store_block, swizzled_block


@triton.jit
def {{kernel}}(
    x_ptr, q_ptr, scale_ptr, zero_ptr, out_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_qn, stride_qk, stride_sn, stride_sg, stride_om, stride_on,
    {{epilogue_params}}
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, SCALES: tl.constexpr,
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # -- program id -> output block, its offsets and masks (helpers: kernels/tiles.py) ----------
    pid_m, pid_n = swizzled_block(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m, offs_n, mask_m, mask_n = block_offsets(pid_m, pid_n, M, N, BLOCK_M, BLOCK_N)
    if SCALES == 0:  # one scale (and zero point) per column for all of K
        s = tl.load(scale_ptr + offs_n * stride_sn, mask=mask_n, other=0.0)
        if HAS_ZERO:
            z = tl.load(zero_ptr + offs_n * stride_sn, mask=mask_n, other=0.0)

    # -- K loop: load x [BLOCK_M, BLOCK_K] and W^T, dequantize W, accumulate ---------------------
    #    int8: W^T [BLOCK_K, BLOCK_N], one dot; int4: the packed bytes [BLOCK_K / 2, BLOCK_N] (read
    #    once, contiguous along K), low nibbles = even columns, high = odd, one dot each with the
    #    even / odd columns of x
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    offs_half = tl.arange(0, BLOCK_K // 2)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:  # no column of the tile lies past K: masks constant along K keep the loads wide
            mask_x = mask_m[:, None]
        else:
            mask_x = mask_m[:, None] & (offs_k[None, :] < K - k0)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :] * stride_xk, mask=mask_x, other=0.0)
        if BITS == 4:
            offs_byte = tl.multiple_of(k0 // 2, BLOCK_K // 2) + offs_half  # k0: a multiple of BLOCK_K
            if EVEN_K:
                mask_q = mask_n[None, :]
            else:
                mask_q = (2 * offs_half[:, None] < K - k0) & mask_n[None, :]
            packed = tl.load(q_ptr + offs_byte[:, None] * stride_qk + offs_n[None, :] * stride_qn, mask=mask_q,
                             other=0).to(tl.int32)
            w0 = ((packed << 28) >> 28).to(tl.float32)  # low nibbles, sign-extended: the even columns
            w1 = ((packed << 24) >> 28).to(tl.float32)  # high nibbles: the odd columns
            x0, x1 = tl.split(tl.reshape(x, (BLOCK_M, BLOCK_K // 2, 2)))
            offs_k0 = k0 + 2 * offs_half
            offs_k1 = offs_k0 + 1
        else:
            if EVEN_K:
                mask_q = mask_n[None, :]
            else:
                mask_q = (offs_k[:, None] < K - k0) & mask_n[None, :]
            w0 = tl.load(q_ptr + (k0 + offs_k)[:, None] * stride_qk + offs_n[None, :] * stride_qn, mask=mask_q,
                         other=0).to(tl.float32)
            offs_k0 = k0 + offs_k
        if SCALES == 1:  # the whole K tile lies in one group: one scale (and zero) per column
            s_offs = offs_n * stride_sn + (k0 // GROUP_SIZE) * stride_sg
            s = tl.load(scale_ptr + s_offs, mask=mask_n, other=0.0)
            if HAS_ZERO:
                z = tl.load(zero_ptr + s_offs, mask=mask_n, other=0.0)
        if SCALES == 2:  # groups change inside the tile: one scale (and zero) per element
            s0_offs = (offs_k0 // GROUP_SIZE)[:, None] * stride_sg + offs_n[None, :] * stride_sn
            mask0 = (offs_k0 < K)[:, None] & mask_n[None, :]
            if HAS_ZERO:
                w0 = w0 - tl.load(zero_ptr + s0_offs, mask=mask0, other=0.0)
            w0 = w0 * tl.load(scale_ptr + s0_offs, mask=mask0, other=0.0)
            if BITS == 4:
                s1_offs = (offs_k1 // GROUP_SIZE)[:, None] * stride_sg + offs_n[None, :] * stride_sn
                mask1 = (offs_k1 < K)[:, None] & mask_n[None, :]
                if HAS_ZERO:
                    w1 = w1 - tl.load(zero_ptr + s1_offs, mask=mask1, other=0.0)
                w1 = w1 * tl.load(scale_ptr + s1_offs, mask=mask1, other=0.0)
        else:  # scaled before the dot: x near float32's max stays finite where x @ W^T does
            if HAS_ZERO:
                w0 = w0 - z[None, :]
                if BITS == 4:
                    w1 = w1 - z[None, :]
            w0 = w0 * s[None, :]
            if BITS == 4:
                w1 = w1 * s[None, :]
        if BITS == 4:
            acc = tl.dot(x0.to({{compute_dtype}}), w0.to({{compute_dtype}}), acc, input_precision={{dot_precision}})
            acc = tl.dot(x1.to({{compute_dtype}}), w1.to({{compute_dtype}}), acc, input_precision={{dot_precision}})
        else:
            acc = tl.dot(x.to({{compute_dtype}}), w0.to({{compute_dtype}}), acc, input_precision={{dot_precision}})

    # -- epilogue hook: bias, activation, residual, gate (float32) ---------------------------
    mask_mn = mask_m[:, None] & mask_n[None, :]
    {{epilogue}}

    # -- masked store --------------------------------------------------------------------------
    store_block(out_ptr, acc, offs_m, offs_n, mask_mn, stride_om, stride_on)
'''


def _template(bits: int, configs: Sequence[tuple]):
    """The template of one weight width: the text with its kernel named w{bits}a16_gemm, and its table."""
    name = f"w{bits}a16_gemm"
    return gemm_template(name, TEXT.replace("{{kernel}}", name), configs)


TEMPLATES = {  # bits -> template; rows: BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages (likeliest first)[, 90:
    # sm_90 only, where they fit wgmma; they spill registers under sm_80's mma.sync (benchmarks/kernel_report.py)]
    8: _template(8, [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3, 90), (64, 128, 64, 4, 4), (128, 64, 128, 4, 4, 90),
                     (64, 64, 128, 4, 3)]),
    4: _template(4, [(128, 128, 64, 8, 3), (256, 128, 64, 8, 3), (128, 256, 64, 8, 3, 90), (128, 128, 128, 8, 3, 90),
                     (64, 128, 128, 4, 4, 90), (64, 64, 64, 4, 3)]),
}


def launch(compiled: CompiledKernel, config: dict, x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor,
           zero_point: torch.Tensor | None, bits: int, epilogue_args: Sequence = (),
           out: torch.Tensor | None = None) -> torch.Tensor:
    """Check the inputs (layout above; `compiled` rendered from TEMPLATES[bits], whose name the errors
    carry), allocate out unless given, launch one program per output block; return out."""
    if bits not in TEMPLATES:
        raise ValueError(f"dequant_gemm serves bits 4 or 8, got bits={bits}")
    kernel = TEMPLATES[bits].name
    check(kernel, "x", x, FLOAT_DTYPES, (None, None), x.device)
    m, k = x.shape
    if bits == 4 and k % 2:
        raise ValueError(f"{kernel}: K={k} is odd; int4 packs two columns per byte")
    n = qweight.shape[0]
    check(kernel, "qweight", qweight, (torch.int8 if bits == 8 else torch.uint8,), (n, k * bits // 8), x.device)
    out = output(kernel, out, x, n)
    scale, zero_point, group_size = group_scale_args(kernel, scale, zero_point, n, k, x.device)
    constexprs, options = split_config(config)
    scales, constexprs["BLOCK_K"] = scale_mode(scale.shape[1], group_size, constexprs["BLOCK_K"])
    compiled[kernel][swizzled_grid(m, n, constexprs)](
        x, qweight, scale, zero_point, out,
        m, n, k,
        *x.stride(), *qweight.stride(), *scale.stride(), *out.stride(),
        *epilogue_args,
        BITS=bits, GROUP_SIZE=group_size, HAS_ZERO=zero_point is not None, SCALES=scales,
        EVEN_K=k % constexprs["BLOCK_K"] == 0, **constexprs, **options,
    )
    return out
