"""W4A16 template: y = x @ dequantize(int4 W)^T, group-wise, unpacked and dequantized in the K loop.

Kernel text (TEMPLATE) plus its wrapper (`launch`). Layout contract: fxc/ir/qformat.py, bits=4:
qweight uint8 [N, K/2] holds two signed nibbles per byte, column 2j in the low nibble and 2j+1 in
the high one; scale (and zero point) float32 [N, G]; W[n, k] = (q[n, k] - z[n, g]) * s[n, g] with
g = k // (K / G). The kernel loads the byte of column k at k // 2 (each byte serves two columns of
the tile, the second load hits the cache), shifts by 4 * (k % 2), masks the nibble and sign-extends
it. Hooks: {{epilogue_params}}, {{epilogue}}, {{compute_dtype}}, {{dot_precision}}.
Reads and writes nothing.
"""

from __future__ import annotations

from fxc.codegen.triton.cache import CompiledKernel
from fxc.codegen.triton.kernels.tiles import HELPERS, gemm_config, launch_grouped_gemm
from fxc.codegen.triton.template import KernelTemplate

TEXT = HELPERS + '''

@triton.jit
def w4a16_gemm(
    x_ptr, q_ptr, scale_ptr, zero_ptr, out_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_qn, stride_qk, stride_sn, stride_sg, stride_om, stride_on,
    {{epilogue_params}}
    GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, SCALE_PER_TILE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # -- program id -> output block, its offsets and masks (helpers: triton_tiles.py) ------------
    pid_m, pid_n = swizzled_block(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m, offs_n, mask_m, mask_n = block_offsets(pid_m, pid_n, M, N, BLOCK_M, BLOCK_N)

    # -- pointers to the first K tile of x and of the packed W^T bytes (column k in byte k // 2) --
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
    q_ptrs = q_ptr + (offs_k[:, None] // 2) * stride_qk + offs_n[None, :] * stride_qn
    shifts = (offs_k[:, None] % 2) * 4  # even column: low nibble; odd column: high nibble

    # -- masked K loop: load x, load packed bytes, unpack nibbles, dequantize, accumulate -------
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = offs_k < K - k0
        x = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        mask_kn = mask_k[:, None] & mask_n[None, :]
        nibble = (tl.load(q_ptrs, mask=mask_kn, other=0).to(tl.int32) >> shifts) & 0xF
        w = (nibble - ((nibble & 0x8) << 1)).to(tl.float32)  # two's complement: 8..15 -> -8..-1
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
        q_ptrs += (BLOCK_K // 2) * stride_qk

    # -- epilogue hook: bias, activation, residual, gate (float32) ---------------------------
    mask_mn = mask_m[:, None] & mask_n[None, :]
    {{epilogue}}

    # -- masked store --------------------------------------------------------------------------
    store_block(out_ptr, acc, offs_m, offs_n, mask_mn, stride_om, stride_on)
'''


TEMPLATE = KernelTemplate(
    name="w4a16_gemm",
    text=TEXT,
    kernels=("w4a16_gemm",),
    configs=(
        gemm_config(128, 128, 64, 8, 3),
        gemm_config(128, 256, 64, 8, 3),
        gemm_config(64, 128, 128, 4, 4),
        gemm_config(128, 64, 128, 4, 4),
        gemm_config(64, 64, 64, 4, 3),
    ),
    interpreter_config=gemm_config(32, 64, 64, 1, 1, group_m=2),
)


def launch(compiled: CompiledKernel, config: dict, x, qweight, scale, zero_point, out, epilogue_args: list) -> None:
    """x [M, K], qweight uint8 [N, K/2], scale/zero [N, G], out [M, N] (all 2-D, any strides)."""
    launch_grouped_gemm("w4a16_gemm", compiled, config, x, qweight, scale, zero_point, out, epilogue_args)
