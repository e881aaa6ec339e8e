"""gemv: the decode kernel, weight-only int8/int4 x @ dequantize(W)^T for M <= 16, optionally split
along K, plus `gemv_splitk_reduce`, which sums the split-K partials and runs the epilogue.

    compiled = cache.load(TEMPLATE.render(load_weight=load_weight(bits), ...), TEMPLATE.kernels)
    y = launch(compiled, config, x, qweight, scale, zero_point, bits, epilogue_args)

At decode shapes the weight bytes dominate, so the kernel spreads the weight over many programs:
grid (N / BLOCK_N, SPLIT_K), each program streaming a [BLOCK_N, K / SPLIT_K] slab of the weight
once, for all M rows. M = 1 multiplies and sums on the CUDA cores; 2 <= M <= 16 pads the rows to 16
and uses tl.dot. With SPLIT_K = 1 the epilogue runs in the kernel; with SPLIT_K > 1 each program
writes float32 partial sums and `gemv_splitk_reduce` adds them and runs the epilogue.
Reads (layout of fxc/ir/qformat.py): x float16/bfloat16/float32 [M <= 16, K]; qweight int8 [N, K]
(bits=8) or uint8 [N, K/2] (bits=4: two signed nibbles per byte, column 2j in the low one); scale and
zero point (None: symmetric) [N, G] with G dividing K, any dtype (passed on as contiguous float32).
x, qweight and out may have any strides. Writes out [M, N] (allocated in x's dtype unless given) and,
when SPLIT_K > 1, a float32 [SPLIT_K, M, N] scratch tensor it allocates; preserves every input.
Hooks: {{load_weight}} (`load_weight(bits)`: LOAD_INT8 or LOAD_INT4 below, int32 q [BLOCK_N, BLOCK_K]
from q_ptr), {{epilogue_params}}, {{epilogue}} (codegen/triton/epilogue.py), {{compute_dtype}},
{{dot_precision}}. The picker runs it for weight-only linears with M <= its decode_max_m.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton

from fxc.codegen.triton.cache import CompiledKernel, split_config
from fxc.codegen.triton.kernels.tiles import FLOAT_DTYPES, check, group_scale_args, output
from fxc.codegen.triton.template import KernelTemplate

LOAD_INT8 = """
q = tl.load(q_ptr + offs_n[:, None] * stride_qn + offs_k[None, :] * stride_qk, mask=mask_nk, other=0)
q = q.to(tl.int32)
"""

LOAD_INT4 = """
offs_byte = k0 // 2 + tl.arange(0, BLOCK_K // 2)
packed = tl.load(q_ptr + offs_n[:, None] * stride_qn + offs_byte[None, :] * stride_qk,
                 mask=mask_n[:, None] & (offs_byte[None, :] < K // 2), other=0).to(tl.int32)
q = tl.interleave(packed & 0xF, (packed >> 4) & 0xF)  # low nibble = even column
q = q - ((q & 0x8) << 1)  # two's complement: 8..15 -> -8..-1
"""

TEXT = '''
import triton
import triton.language as tl


@triton.jit
def gemv(
    x_ptr, q_ptr, scale_ptr, zero_ptr, out_ptr, partial_ptr,
    M, N, K, K_PER_SPLIT,
    stride_xm, stride_xk, stride_qn, stride_qk, stride_sn, stride_sg, stride_om, stride_on,
    {{epilogue_params}}
    GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, SCALE_PER_TILE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
):
    # -- program id -> a slab of BLOCK_N weight rows and one K range -------------------------
    pid_n = tl.program_id(axis=0)
    pid_k = tl.program_id(axis=1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    mask_n = offs_n < N
    mask_m = offs_m < M
    k_start = pid_k * K_PER_SPLIT

    # -- masked K loop over this program's range ---------------------------------------------
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_start + K_PER_SPLIT, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        mask_nk = mask_n[:, None] & mask_k[None, :]
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        {{load_weight}}
        w = q.to(tl.float32)
        if SCALE_PER_TILE:  # the whole K tile lies in one group: one scale per weight row
            group = k0 // GROUP_SIZE
            s = tl.load(scale_ptr + offs_n * stride_sn + group * stride_sg, mask=mask_n, other=0.0)
            if HAS_ZERO:
                w = w - tl.load(zero_ptr + offs_n * stride_sn + group * stride_sg, mask=mask_n, other=0.0)[:, None]
            w = w * s[:, None]
        else:  # groups change inside the tile: one scale per element
            s_offs = offs_n[:, None] * stride_sn + (offs_k[None, :] // GROUP_SIZE) * stride_sg
            if HAS_ZERO:
                w = w - tl.load(zero_ptr + s_offs, mask=mask_nk, other=0.0)
            w = w * tl.load(scale_ptr + s_offs, mask=mask_nk, other=0.0)
        w = w.to({{compute_dtype}})
        if BLOCK_M == 1:  # one row: multiply and reduce along K on the CUDA cores
            acc += tl.sum(w.to(tl.float32) * x.to(tl.float32), axis=1)[None, :]
        else:  # up to 16 rows: tensor cores, rows beyond M masked to zero
            acc = tl.dot(x.to({{compute_dtype}}), tl.trans(w), acc, input_precision={{dot_precision}})

    mask_mn = mask_m[:, None] & mask_n[None, :]
    if SPLIT_K == 1:
        # -- epilogue hook, then masked store ------------------------------------------------
        {{epilogue}}
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_mn)
    else:
        # -- partial sums of this K range: partial[pid_k, m, n] ------------------------------
        partial_ptrs = partial_ptr + pid_k * M * N + offs_m[:, None] * N + offs_n[None, :]
        tl.store(partial_ptrs, acc, mask=mask_mn)


@triton.jit
def gemv_splitk_reduce(
    partial_ptr, out_ptr, M, N, stride_om, stride_on,
    {{epilogue_params}}
    SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # -- program id -> BLOCK_N output columns, all M rows --------------------------------------
    offs_n = tl.program_id(axis=0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    mask_mn = (offs_m[:, None] < M) & (offs_n[None, :] < N)

    # -- sum the SPLIT_K partials ------------------------------------------------------------
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for split in range(SPLIT_K):
        acc += tl.load(partial_ptr + split * M * N + offs_m[:, None] * N + offs_n[None, :], mask=mask_mn, other=0.0)

    # -- epilogue hook, then masked store ----------------------------------------------------
    {{epilogue}}
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on,
             acc.to(out_ptr.dtype.element_ty), mask=mask_mn)
'''


def _config(bn, bk, split, warps, stages=3):
    return dict(BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split, num_warps=warps, num_stages=stages)


TEMPLATE = KernelTemplate(
    name="gemv",
    text=TEXT,
    kernels=("gemv", "gemv_splitk_reduce"),
    configs=(  # BLOCK_K <= 128 keeps one scale per row and tile for group size 128
        _config(16, 256, 1, 4),
        _config(32, 256, 1, 4),
        _config(16, 128, 1, 4),
        _config(16, 128, 2, 4),
        _config(32, 128, 4, 4),
        _config(64, 128, 4, 8),
        _config(16, 512, 2, 4),
        _config(16, 256, 8, 4),
    ),
    interpreter_config=_config(64, 64, 1, 1, 1),
)

MAX_M = 16


def block_m(m: int) -> int:
    return 1 if m == 1 else 16


def load_weight(bits: int) -> str:
    """The {{load_weight}} hook for a weight of `bits` (8: int8 [N, K]; 4: packed uint8 [N, K/2])."""
    return LOAD_INT8 if bits == 8 else LOAD_INT4


def launch(compiled: CompiledKernel, config: dict, x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor,
           zero_point: torch.Tensor | None, bits: int, epilogue_args: Sequence = (),
           out: torch.Tensor | None = None) -> torch.Tensor:
    """Check the inputs (layout above; `compiled` rendered with load_weight(bits)), allocate out unless
    given and the split-K partials, launch gemv on grid (N / BLOCK_N, SPLIT_K), then, when split,
    gemv_splitk_reduce on N / 64 programs; return out."""
    check("gemv", "x", x, FLOAT_DTYPES, (None, None), x.device)
    m, k = x.shape
    n = qweight.shape[0]
    if m > MAX_M or bits not in (4, 8) or k % (8 // bits):
        raise ValueError(f"gemv serves M <= {MAX_M} and bits 4 (K even) or 8, got M={m}, K={k}, bits={bits}")
    check("gemv", "qweight", qweight, (torch.int8 if bits == 8 else torch.uint8,), (n, k * bits // 8), x.device)
    scale, zero_point, group_size = group_scale_args("gemv", scale, zero_point, n, k, x.device)
    out = output("gemv", out, x, n)
    constexprs, options = split_config(config)
    block_k, split_k = constexprs["BLOCK_K"], constexprs["SPLIT_K"]
    k_per_split = triton.cdiv(triton.cdiv(k, split_k), block_k) * block_k
    partial = torch.empty((split_k, m, n), dtype=torch.float32, device=x.device) if split_k > 1 else None
    bm = block_m(m)
    grid = (triton.cdiv(n, constexprs["BLOCK_N"]), split_k)
    compiled["gemv"][grid](
        x, qweight, scale, zero_point, out, partial,
        m, n, k, k_per_split,
        *x.stride(), *qweight.stride(), *scale.stride(), *out.stride(),
        *epilogue_args,
        GROUP_SIZE=group_size, HAS_ZERO=zero_point is not None,
        SCALE_PER_TILE=group_size % block_k == 0, BLOCK_M=bm, **constexprs, **options,
    )
    if split_k > 1:
        reduce_block_n = 64
        compiled["gemv_splitk_reduce"][(triton.cdiv(n, reduce_block_n),)](
            partial, out, m, n, *out.stride(), *epilogue_args,
            SPLIT_K=split_k, BLOCK_M=bm, BLOCK_N=reduce_block_n,
        )
    return out
