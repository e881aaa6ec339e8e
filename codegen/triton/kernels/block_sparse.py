"""block_sparse_gemm: y = x @ W^T for a dense weight most of whose [B, B] blocks are zero; the kernel
visits only the non-zero blocks, so it skips both their bytes and their FLOPs.

    blocks = block_map(weight, block)                                   # once per weight
    compiled = cache.load(TEMPLATE.render(**hooks), TEMPLATE.kernels)   # as codegen/triton/picker.py does
    y = launch(compiled, config, x, weight, blocks, epilogue_args)

The weight stays in its dense [N, K] layout. `block_map(weight, block)` lists, for each band of B
output rows, the indices of the K blocks holding a non-zero (computed on the weight's device). The
kernel steps along K in tiles of BLOCK_K = B (fixed by the map) and runs its K loop over the band's
list instead of over all of K; BLOCK_N may be a fraction of B (more programs for decode shapes), the
autotune table varies it with BLOCK_M, warps and stages.
Reads: x float16/bfloat16/float32 [M, K] and weight [N, K] of x's dtype (any strides); the BlockMap:
counts int32 [N / B] and columns int32 [N / B, most non-zero blocks in a band], both contiguous, B a
power of two >= 16. Writes out [M, N] (allocated in x's dtype unless given; any strides), nothing
else; preserves every input. Hooks: {{epilogue_params}}, {{epilogue}} (codegen/triton/epilogue.py),
{{compute_dtype}}, {{dot_precision}}. The picker runs it for the dense aten.linear nodes the
partition sends (weights with many all-zero blocks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import triton

from fxc.codegen.triton.cache import CompiledKernel, split_config
from fxc.codegen.triton.kernels.tiles import FLOAT_DTYPES, check, output, swizzled_grid
from fxc.codegen.triton.template import KernelTemplate

TEXT = '''
import triton
import triton.language as tl

from fxc.codegen.triton.kernels.tiles import block_offsets, store_block, swizzled_block


@triton.jit
def block_sparse_gemm(
    x_ptr, w_ptr, counts_ptr, columns_ptr, out_ptr,
    M, N, K, MAX_BLOCKS,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_om, stride_on,
    {{epilogue_params}}
    BAND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # -- program id -> output block, its offsets and masks (helpers: kernels/tiles.py) ----------
    pid_m, pid_n = swizzled_block(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m, offs_n, mask_m, mask_n = block_offsets(pid_m, pid_n, M, N, BLOCK_M, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)

    # -- K loop over the non-zero blocks of this block's band of BAND weight rows only -------
    band = (pid_n * BLOCK_N) // BAND
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    nonzero = tl.load(counts_ptr + band)
    for i in range(0, nonzero):
        k0 = tl.load(columns_ptr + band * MAX_BLOCKS + i) * BLOCK_K
        mask_k = offs_k < K - k0
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_ptr + (k0 + offs_k)[:, None] * stride_wk + offs_n[None, :] * stride_wn,
                    mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(x.to({{compute_dtype}}), w.to({{compute_dtype}}), acc, input_precision={{dot_precision}})

    # -- epilogue hook: bias, activation, residual, gate (float32) ---------------------------
    mask_mn = mask_m[:, None] & mask_n[None, :]
    {{epilogue}}

    # -- masked store --------------------------------------------------------------------------
    store_block(out_ptr, acc, offs_m, offs_n, mask_mn, stride_om, stride_on)
'''


def _config(bm, bn, warps, stages, group_m=8):
    return dict(BLOCK_M=bm, BLOCK_N=bn, GROUP_M=group_m, num_warps=warps, num_stages=stages)


TEMPLATE = KernelTemplate(
    name="block_sparse_gemm",
    text=TEXT,
    kernels=("block_sparse_gemm",),
    configs=(
        _config(128, 128, 8, 3), _config(128, 64, 4, 4), _config(64, 64, 4, 4), _config(16, 32, 4, 4),
        _config(16, 16, 4, 4),
    ),
    interpreter_config=_config(32, 64, 1, 1, group_m=2),
)


class BlockMap(NamedTuple):
    """Where a weight's non-zero [block, block] tiles are: per band of `block` rows, how many and which."""

    counts: torch.Tensor  # int32 [N / block]: non-zero K blocks per band
    columns: torch.Tensor  # int32 [N / block, max count]: their K block indices, first `count` of each row
    block: int
    zero: float  # the fraction of all-zero tiles


def block_map(weight: torch.Tensor, block: int) -> BlockMap:
    """The BlockMap of `weight` [N, K] (ragged edges padded with zeros), on the weight's device."""
    n, k = weight.shape
    bands, kblocks = triton.cdiv(n, block), triton.cdiv(k, block)
    padded = weight
    if (n, k) != (bands * block, kblocks * block):
        padded = weight.new_zeros(bands * block, kblocks * block)
        padded[:n, :k] = weight
    nonzero = padded.view(bands, block, kblocks, block).ne(0).any(dim=3).any(dim=1)  # [bands, kblocks]
    counts = nonzero.sum(dim=1).to(torch.int32)
    order = torch.argsort((~nonzero).to(torch.int8), dim=1, stable=True)  # non-zero block indices first
    columns = order[:, : max(int(counts.max()), 1)].to(torch.int32).contiguous()
    return BlockMap(counts, columns, block, 1.0 - nonzero.float().mean().item())


def launch(compiled: CompiledKernel, config: dict, x: torch.Tensor, weight: torch.Tensor, blocks: BlockMap,
           epilogue_args: Sequence = (), out: torch.Tensor | None = None) -> torch.Tensor:
    """Check the inputs (layout above), allocate out unless given, launch one program per output block
    (BLOCK_N capped at the map's block, so a tile never spans two bands); return out."""
    check("block_sparse_gemm", "x", x, FLOAT_DTYPES, (None, None), x.device)
    m, k = x.shape
    n = weight.shape[0]
    check("block_sparse_gemm", "weight", weight, (x.dtype,), (n, k), x.device)
    bands = triton.cdiv(n, blocks.block)
    if blocks.block < 16 or blocks.block & (blocks.block - 1):
        raise ValueError(f"block_sparse_gemm: the block map's block must be a power of two >= 16, got {blocks.block}")
    check("block_sparse_gemm", "counts", blocks.counts, (torch.int32,), (bands,), x.device)
    check("block_sparse_gemm", "columns", blocks.columns, (torch.int32,), (bands, None), x.device)
    if not (blocks.counts.is_contiguous() and blocks.columns.is_contiguous()):
        raise ValueError("block_sparse_gemm: the block map's counts and columns must be contiguous")
    out = output("block_sparse_gemm", out, x, n)
    constexprs, options = split_config(config)
    constexprs["BLOCK_N"] = min(constexprs["BLOCK_N"], blocks.block)
    compiled["block_sparse_gemm"][swizzled_grid(m, n, constexprs)](
        x, weight, blocks.counts, blocks.columns, out,
        m, n, k, blocks.columns.shape[1],
        *x.stride(), *weight.stride(), *out.stride(),
        *epilogue_args,
        BAND=blocks.block, BLOCK_K=blocks.block, **constexprs, **options,
    )
    return out
