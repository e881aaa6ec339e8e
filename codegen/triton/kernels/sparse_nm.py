"""N:M sparse template: y = x @ W^T with W stored as its kept values plus in-group indices.

Layout (fxc.ir.ops.sparse_nm_linear): values [N, K * n / m] (float, or int8 with a per-output-channel
scale [N, 1]) hold the n kept weights of each group of m columns in order; indices uint8 [N,
K * n / m] their positions inside the group. The kernel reads only the kept values and their
indices (n/m of the weight plus one byte per kept value) and rebuilds the dense [BLOCK_K, BLOCK_N]
tile in registers: for each of the n slots j, the value of slot j lands where its index equals the
column's position in its group; every other element stays zero. Hooks: {{epilogue_params}},
{{epilogue}}, {{compute_dtype}}, {{dot_precision}}. Reads and writes nothing.
"""

from __future__ import annotations

from fxc.codegen.triton.cache import CompiledKernel, split_config
from fxc.codegen.triton.kernels.tiles import HELPERS, gemm_config, swizzled_grid
from fxc.codegen.triton.template import KernelTemplate

TEXT = HELPERS + '''

@triton.jit
def sparse_nm_gemm(
    x_ptr, values_ptr, indices_ptr, scale_ptr, out_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_vn, stride_vk, stride_in, stride_ik, stride_om, stride_on,
    {{epilogue_params}}
    KEEP: tl.constexpr, GROUP: tl.constexpr, HAS_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # -- program id -> output block, its offsets and masks (helpers: triton_tiles.py) ------------
    pid_m, pid_n = swizzled_block(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m, offs_n, mask_m, mask_n = block_offsets(pid_m, pid_n, M, N, BLOCK_M, BLOCK_N)
    if HAS_SCALE:
        s = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)

    # -- masked K loop: rebuild the dense W^T tile from the kept values, accumulate ----------
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        mask_kn = mask_k[:, None] & mask_n[None, :]
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        group = offs_k // GROUP
        slot = (offs_k % GROUP)[:, None]
        w = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
        for j in tl.static_range(KEEP):
            kept = (group * KEEP + j)[:, None]
            v = tl.load(values_ptr + offs_n[None, :] * stride_vn + kept * stride_vk, mask=mask_kn, other=0)
            idx = tl.load(indices_ptr + offs_n[None, :] * stride_in + kept * stride_ik, mask=mask_kn, other=0)
            w = tl.where(idx.to(tl.int32) == slot, v.to(tl.float32), w)
        if HAS_SCALE:
            w = w * s[None, :]
        acc = tl.dot(x.to({{compute_dtype}}), w.to({{compute_dtype}}), acc, input_precision={{dot_precision}})

    # -- epilogue hook: bias, activation, residual, gate (float32) ---------------------------
    mask_mn = mask_m[:, None] & mask_n[None, :]
    {{epilogue}}

    # -- masked store --------------------------------------------------------------------------
    store_block(out_ptr, acc, offs_m, offs_n, mask_mn, stride_om, stride_on)
'''


TEMPLATE = KernelTemplate(
    name="sparse_nm_gemm",
    text=TEXT,
    kernels=("sparse_nm_gemm",),
    configs=(
        gemm_config(128, 128, 64, 8, 3),
        gemm_config(64, 128, 64, 4, 4),
        gemm_config(128, 64, 128, 4, 3),
        gemm_config(16, 64, 128, 4, 4),
        gemm_config(16, 32, 256, 4, 3),
    ),
    interpreter_config=gemm_config(32, 64, 64, 1, 1, group_m=2),
)


def launch(compiled: CompiledKernel, config: dict, x, values, indices, scale, n_keep: int, m_group: int,
           out, epilogue_args: list) -> None:
    """x [M, K], values/indices [N, K*n/m], scale float32 [N] or None, out [M, N]."""
    m, k = x.shape
    n = values.shape[0]
    constexprs, options = split_config(config)
    grid = swizzled_grid(m, n, constexprs)
    compiled["sparse_nm_gemm"][grid](
        x, values, indices, scale, out,
        m, n, k,
        x.stride(0), x.stride(1), values.stride(0), values.stride(1), indices.stride(0), indices.stride(1),
        out.stride(0), out.stride(1),
        *epilogue_args,
        KEEP=n_keep, GROUP=m_group, HAS_SCALE=scale is not None,
        **constexprs, **options,
    )
