"""N:M sparse template: y = x @ W^T with W stored as its kept values plus in-group indices.

Layout (fxc.ops.sparse_nm_linear): values [N, K * n / m] (float, or int8 with a per-output-channel
scale [N, 1]) hold the n kept weights of each group of m columns in order; indices uint8 [N,
K * n / m] their positions inside the group. The kernel reads only the kept values and their
indices (n/m of the weight plus one byte per kept value) and rebuilds the dense [BLOCK_K, BLOCK_N]
tile in registers: for each of the n slots j, the value of slot j lands where its index equals the
column's position in its group; every other element stays zero. Hooks: {{epilogue_params}},
{{epilogue}}, {{compute_dtype}}, {{dot_precision}}. Reads and writes nothing.
"""

from __future__ import annotations

import triton

from fxc.codegen.triton_cache import CompiledKernel, split_config
from fxc.codegen.triton_template import KernelTemplate

TEXT = '''
import triton
import triton.language as tl


@triton.jit
def sparse_nm_gemm(
    x_ptr, values_ptr, indices_ptr, scale_ptr, out_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_vn, stride_vk, stride_in, stride_ik, stride_om, stride_on,
    {{epilogue_params}}
    KEEP: tl.constexpr, GROUP: tl.constexpr, HAS_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # -- program id -> output block (bands of GROUP_M block rows share weight columns in L2) ---
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
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_mn)
'''


def _config(bm, bn, bk, warps, stages, group_m=8):
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group_m, num_warps=warps, num_stages=stages)


TEMPLATE = KernelTemplate(
    name="sparse_nm_gemm",
    text=TEXT,
    kernels=("sparse_nm_gemm",),
    configs=(
        _config(128, 128, 64, 8, 3),
        _config(64, 128, 64, 4, 4),
        _config(128, 64, 128, 4, 3),
        _config(16, 64, 128, 4, 4),
        _config(16, 32, 256, 4, 3),
    ),
    interpreter_config=_config(32, 64, 64, 1, 1, group_m=2),
)


def launch(compiled: CompiledKernel, config: dict, x, values, indices, scale, n_keep: int, m_group: int,
           out, epilogue_args: list) -> None:
    """x [M, K], values/indices [N, K*n/m], scale float32 [N] or None, out [M, N]."""
    m, k = x.shape
    n = values.shape[0]
    constexprs, options = split_config(config)
    grid = (triton.cdiv(m, constexprs["BLOCK_M"]) * triton.cdiv(n, constexprs["BLOCK_N"]),)
    compiled["sparse_nm_gemm"][grid](
        x, values, indices, scale, out,
        m, n, k,
        x.stride(0), x.stride(1), values.stride(0), values.stride(1), indices.stride(0), indices.stride(1),
        out.stride(0), out.stride(1),
        *epilogue_args,
        KEEP=n_keep, GROUP=m_group, HAS_SCALE=scale is not None,
        **constexprs, **options,
    )
