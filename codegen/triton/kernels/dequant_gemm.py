"""w8a16_gemm and w4a16_gemm: y = x @ dequantize(W)^T for a weight-only int8 or int4 W, the weight
loaded (int4: unpacked) and dequantized group-wise inside the K loop. One kernel text, two templates.

    template = TEMPLATES[bits]                                          # w8a16_gemm or w4a16_gemm
    compiled = cache.load(template.render(**hooks), template.kernels)   # as codegen/triton/picker.py does
    y = launch(compiled, config, x, qweight, scale, zero_point, bits, epilogue_args)

Reads (layout of fxc/ir/qformat.py): x float16/bfloat16/float32 [M, K]; qweight int8 [N, K] (bits=8)
or uint8 [N, K/2] (bits=4, K even: two signed nibbles per byte, column 2j in the low nibble and 2j+1
in the high one); scale and zero point (None: symmetric) [N, G] with G dividing K, any dtype (passed
on as contiguous float32); W[n, k] = (q[n, k] - z[n, g]) * s[n, g] with g = k // (K / G). x, qweight
and out may have any strides. For int4 the kernel loads the byte of column k at k // 2 (each byte
serves two columns of the tile, the second load hits the cache), shifts by 4 * (k % 2), masks the
nibble and sign-extends it. Writes out [M, N] (allocated in x's dtype unless given), nothing else;
preserves every input.
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
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, SCALE_PER_TILE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # -- program id -> output block, its offsets and masks (helpers: kernels/tiles.py) ----------
    pid_m, pid_n = swizzled_block(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m, offs_n, mask_m, mask_n = block_offsets(pid_m, pid_n, M, N, BLOCK_M, BLOCK_N)

    # -- pointers to the first K tile of x [BLOCK_M, BLOCK_K] and of W^T [BLOCK_K, BLOCK_N] -----
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
    if BITS == 4:  # packed W^T bytes: column k in byte k // 2
        q_ptrs = q_ptr + (offs_k[:, None] // 2) * stride_qk + offs_n[None, :] * stride_qn
        shifts = (offs_k[:, None] % 2) * 4  # even column: low nibble; odd column: high nibble
    else:
        q_ptrs = q_ptr + offs_k[:, None] * stride_qk + offs_n[None, :] * stride_qn

    # -- masked K loop: load x and W^T tiles (int4: unpack the nibbles), dequantize W, accumulate --
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = offs_k < K - k0
        x = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        mask_kn = mask_k[:, None] & mask_n[None, :]
        if BITS == 4:
            nibble = (tl.load(q_ptrs, mask=mask_kn, other=0).to(tl.int32) >> shifts) & 0xF
            w = (nibble - ((nibble & 0x8) << 1)).to(tl.float32)  # two's complement: 8..15 -> -8..-1
        else:
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
        q_ptrs += (BLOCK_K * BITS // 8) * stride_qk

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


TEMPLATES = {  # bits -> template; autotune rows: BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages
    8: _template(8, [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (64, 128, 64, 4, 4), (128, 64, 128, 4, 4),
                     (64, 64, 128, 4, 3)]),
    4: _template(4, [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (64, 128, 128, 4, 4), (128, 64, 128, 4, 4),
                     (64, 64, 64, 4, 3)]),
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
    compiled[kernel][swizzled_grid(m, n, constexprs)](
        x, qweight, scale, zero_point, out,
        m, n, k,
        *x.stride(), *qweight.stride(), *scale.stride(), *out.stride(),
        *epilogue_args,
        BITS=bits, GROUP_SIZE=group_size, HAS_ZERO=zero_point is not None,
        SCALE_PER_TILE=group_size % constexprs["BLOCK_K"] == 0,
        **constexprs, **options,
    )
    return out
