"""Pieces shared by the GEMM templates: Triton tile helpers (HELPERS, source text placed before each
kernel), the autotune-entry and grid helpers, and the launch both weight-only GEMMs share.

The kernel templates (triton_w8a16.py, triton_w4a16.py, triton_w8a8.py, triton_sparse.py,
triton_block_sparse.py) start their text with HELPERS, so every generated kernel file stays
self-contained and inspectable; Triton inlines a `@triton.jit` function called from a kernel, so
the helpers cost nothing at run time. They are:

    swizzled_block(M, N, ...)          program id -> (pid_m, pid_n) of the output block; programs walk
                                       the output in bands of GROUP_M block rows, so the weight
                                       columns a band reads stay in L2 while its rows are computed
    block_offsets(pid_m, pid_n, ...)   -> offs_m, offs_n, mask_m, mask_n of that block
    store_block(out_ptr, acc, ...)     masked store of the float32 accumulator in out's dtype

Every load and the store is masked. The group-wise dequantization of the K loop stays written out in
triton_w8a16.py and triton_w4a16.py: as a shared helper it made w4a16_gemm about 4% slower on an
H200 (Triton 3.6; same shared memory and registers, different schedule), w8a16_gemm unchanged.
Python side: `gemm_config(...)` builds one autotune entry, `swizzled_grid(m, n, constexprs)` the
1-D grid swizzled_block expects, `launch_grouped_gemm(kernel, ...)` launches w8a16_gemm or
w4a16_gemm (same arguments). Reads and writes nothing.
"""

from __future__ import annotations

import triton

from fxc.codegen.triton.cache import CompiledKernel, split_config

HELPERS = '''
import triton
import triton.language as tl


@triton.jit
def swizzled_block(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(axis=0)
    blocks_m = tl.cdiv(M, BLOCK_M)
    blocks_n = tl.cdiv(N, BLOCK_N)
    per_band = GROUP_M * blocks_n
    band_first_m = (pid // per_band) * GROUP_M
    band_rows = tl.minimum(blocks_m - band_first_m, GROUP_M)
    pid_m = band_first_m + (pid % per_band) % band_rows
    pid_n = (pid % per_band) // band_rows
    return pid_m, pid_n


@triton.jit
def block_offsets(pid_m, pid_n, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_m, offs_n, offs_m < M, offs_n < N


@triton.jit
def store_block(out_ptr, acc, offs_m, offs_n, mask_mn, stride_om, stride_on):
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_mn)
'''


def gemm_config(bm: int, bn: int, bk: int, warps: int, stages: int, group_m: int = 8) -> dict:
    """One autotune entry: block sizes, the band height GROUP_M of swizzled_block, launch options."""
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group_m, num_warps=warps, num_stages=stages)


def swizzled_grid(m: int, n: int, constexprs: dict) -> tuple[int]:
    """One program per [BLOCK_M, BLOCK_N] output block, in the 1-D order swizzled_block decodes."""
    return (triton.cdiv(m, constexprs["BLOCK_M"]) * triton.cdiv(n, constexprs["BLOCK_N"]),)


def scale_per_tile(group_size: int, block_k: int) -> bool:
    """Whether every K tile lies inside one quantization group (one scale per column per tile)."""
    return group_size % block_k == 0


def launch_grouped_gemm(kernel: str, compiled: CompiledKernel, config: dict, x, qweight, scale, zero_point, out,
                        epilogue_args: list) -> None:
    """Launch w8a16_gemm or w4a16_gemm: x [M, K], qweight [N, K] int8 or [N, K/2] packed uint8,
    scale/zero [N, G], out [M, N] (all 2-D, any strides)."""
    m, k = x.shape
    n = qweight.shape[0]
    group_size = k // scale.shape[1]
    constexprs, options = split_config(config)
    compiled[kernel][swizzled_grid(m, n, constexprs)](
        x, qweight, scale, zero_point, out,
        m, n, k,
        x.stride(0), x.stride(1), qweight.stride(0), qweight.stride(1), scale.stride(0), scale.stride(1),
        out.stride(0), out.stride(1),
        *epilogue_args,
        GROUP_SIZE=group_size, HAS_ZERO=zero_point is not None,
        SCALE_PER_TILE=scale_per_tile(group_size, constexprs["BLOCK_K"]),
        **constexprs, **options,
    )
