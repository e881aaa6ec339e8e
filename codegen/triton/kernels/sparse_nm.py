"""sparse_nm_gemm: y = x @ W^T with W stored N:M sparse, as its kept values plus in-group indices.

    compiled = cache.load(TEMPLATE.render(**hooks), TEMPLATE.kernels)   # as codegen/triton/picker.py does
    y = launch(compiled, config, x, values, indices, scale, n_keep, m_group, epilogue_args)

Reads (layout of fxc.ir.ops.sparse_nm_linear, n of every m columns kept): x float16/bfloat16/float32
[M, K]; values [N, K * n / m] (float, or int8 with a per-output-channel scale) hold the n kept weights
of each group of m columns in order; indices uint8 [N, K * n / m] their positions inside the group;
scale (None: none) of N elements, any dtype (passed on as contiguous float32). x, values, indices and
out may have any strides. The kernel reads only the kept values and their indices (n/m of the weight
plus one byte per kept value) and rebuilds the dense [BLOCK_K, BLOCK_N] tile in registers. 2:4 (the
pattern of the sparse tensor cores, and the common one): the tile's kept values and indices are read
with one wide load each, contiguous along K, split into each group's slot 0 and slot 1, and column p
of every group takes the slot whose index is p (zero if none); the four columns are joined back in
order. Any other n:m: for each of the n slots j, the value of slot j lands where its index equals the
column's position in its group (gathered loads); every other element stays zero. A per-channel scale
multiplies the values before the dot (x near float32's max stays finite wherever x @ W^T does).
Writes out [M, N] (allocated in x's dtype unless given), nothing else; preserves every input. Hooks:
{{epilogue_params}}, {{epilogue}} (codegen/triton/epilogue.py), {{compute_dtype}}, {{dot_precision}}.
The picker runs it for every fxc.sparse_nm_linear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fxc.codegen.triton.cache import CompiledKernel, split_config
from fxc.codegen.triton.kernels.tiles import FLOAT_DTYPES, check, gemm_template, output, swizzled_grid

TEXT = '''
import triton
import triton.language as tl

from fxc.codegen.triton.kernels.tiles import block_offsets, store_block, swizzled_block


@triton.jit
def sparse_nm_gemm(
    x_ptr, values_ptr, indices_ptr, scale_ptr, out_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_vn, stride_vk, stride_in, stride_ik, stride_om, stride_on,
    {{epilogue_params}}
    KEEP: tl.constexpr, GROUP: tl.constexpr, HAS_SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # -- program id -> output block, its offsets and masks (helpers: kernels/tiles.py) ----------
    pid_m, pid_n = swizzled_block(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m, offs_n, mask_m, mask_n = block_offsets(pid_m, pid_n, M, N, BLOCK_M, BLOCK_N)
    if HAS_SCALE:
        s = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)

    # -- K loop: rebuild the dense W^T tile [BLOCK_K, BLOCK_N] from the kept values, accumulate ------
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        if KEEP == 2 and GROUP == 4:  # 2:4: the tile's kept values and indices in one wide load each
            offs_kept = tl.multiple_of(k0 // 2, BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)  # k0: a multiple of BLOCK_K
            mask_kept = mask_n[:, None] & (offs_kept[None, :] < K // 2)
            v = tl.load(values_ptr + offs_n[:, None] * stride_vn + offs_kept[None, :] * stride_vk, mask=mask_kept,
                        other=0)
            idx = tl.load(indices_ptr + offs_n[:, None] * stride_in + offs_kept[None, :] * stride_ik, mask=mask_kept,
                          other=0)
            v = v.to(tl.float32)
            if HAS_SCALE:  # scaled before the dot: x near float32's max stays finite where x @ W^T does
                v = v * s[:, None]
            v0, v1 = tl.split(tl.reshape(v, (BLOCK_N, BLOCK_K // 4, 2)))  # slot 0 / 1 of each group
            i0, i1 = tl.split(tl.reshape(idx.to(tl.int32), (BLOCK_N, BLOCK_K // 4, 2)))
            d0 = tl.where(i0 == 0, v0, tl.where(i1 == 0, v1, 0.0))  # the group's column 0, 1, 2, 3
            d1 = tl.where(i0 == 1, v0, tl.where(i1 == 1, v1, 0.0))
            d2 = tl.where(i0 == 2, v0, tl.where(i1 == 2, v1, 0.0))
            d3 = tl.where(i0 == 3, v0, tl.where(i1 == 3, v1, 0.0))
            dense = tl.reshape(tl.join(tl.join(d0, d2), tl.join(d1, d3)), (BLOCK_N, BLOCK_K))  # column 4g + p = dp
            w = tl.trans(dense)
        else:  # any n:m: slot j of each group lands where its index equals the column's place in the group
            mask_kn = mask_k[:, None] & mask_n[None, :]
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


TEMPLATE = gemm_template("sparse_nm_gemm", TEXT, [  # rows: BLOCK_M, BLOCK_N, BLOCK_K, warps, stages[, 90: sm_90]
    (128, 128, 64, 8, 3), (64, 128, 64, 4, 4), (128, 64, 128, 4, 3, 90), (16, 64, 128, 4, 4), (16, 32, 128, 4, 4),
])


def launch(compiled: CompiledKernel, config: dict, x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
           scale: torch.Tensor | None, n_keep: int, m_group: int, epilogue_args: Sequence = (),
           out: torch.Tensor | None = None) -> torch.Tensor:
    """Check the inputs (layout above), allocate out unless given, launch one program per output block;
    return out."""
    check("sparse_nm_gemm", "x", x, FLOAT_DTYPES, (None, None), x.device)
    m, k = x.shape
    n = values.shape[0]
    if not 0 < n_keep < m_group or k % m_group:
        raise ValueError(f"sparse_nm_gemm: {n_keep}:{m_group} sparsity does not fit K={k}")
    kept = k // m_group * n_keep
    check("sparse_nm_gemm", "values", values, (*FLOAT_DTYPES, torch.int8), (n, kept), x.device)
    check("sparse_nm_gemm", "indices", indices, (torch.uint8,), (n, kept), x.device)
    if scale is not None:
        check("sparse_nm_gemm", "scale", scale.reshape(-1), None, (n,), x.device)
        scale = scale.float().reshape(-1).contiguous()
    out = output("sparse_nm_gemm", out, x, n)
    constexprs, options = split_config(config)
    compiled["sparse_nm_gemm"][swizzled_grid(m, n, constexprs)](
        x, values, indices, scale, out,
        m, n, k,
        *x.stride(), *values.stride(), *indices.stride(), *out.stride(),
        *epilogue_args,
        KEEP=n_keep, GROUP=m_group, HAS_SCALE=scale is not None,
        **constexprs, **options,
    )
    return out
