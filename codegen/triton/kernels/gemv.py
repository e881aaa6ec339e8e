"""gemv: the decode kernel, weight-only int8/int4 x @ dequantize(W)^T for M <= 16, optionally split
along K, plus `gemv_splitk_reduce`, which sums the split-K partials and runs the epilogue.

    compiled = cache.load(TEMPLATE.render(load_weight=load_weight(bits), ...), TEMPLATE.kernels)
    y = launch(compiled, config, x, qweight, scale, zero_point, bits, epilogue_args)

At decode shapes the weight bytes dominate, so the kernel spreads the weight over many programs:
grid (N / BLOCK_N, SPLIT_K), each program streaming a [BLOCK_N, K / SPLIT_K] slab of the weight
once, for all M rows. The {{load_weight}} hook (`load_weight(bits)`) reads one K tile as two halves,
x0 / x1 [BLOCK_M, BLOCK_K / 2] of x and q0 / q1 [BLOCK_N, BLOCK_K / 2] of the weight (int32), with the
columns they hold, offs_k0 / offs_k1: int8 (LOAD_INT8) splits the tile into its first and second half;
int4 (LOAD_INT4) loads the packed bytes once, contiguous along K, and takes the low nibbles (even
columns) as q0 and the high nibbles (odd columns) as q1 with shifts only, x loaded whole and split into
its even and odd columns in registers. No interleave, so each packed byte is read once and every
weight load stays a wide contiguous one (EVEN_K, K a multiple of BLOCK_K, drops the K masks).
M = 1 multiplies on the CUDA cores into a [BLOCK_N, BLOCK_K / 2] float32 accumulator and reduces it
along K once, after the loop (no cross-thread reduction inside it); 2 <= M <= 16 pads the rows to 16
and uses tl.dot on the halves. Scales (SCALES, tiles.scale_mode): 0, one group per row (per channel):
scale and zero point loaded once, before the loop; 1, each K tile inside one group: one scale per row
and tile (the wrapper lowers BLOCK_K to the largest power of two dividing the group size when that is
>= 32, so each half tile still feeds tl.dot); 2 otherwise (small or odd groups): one scale per
element. Every weight is scaled before x multiplies it, so x near float32's max stays finite wherever
x @ W^T does. With SPLIT_K = 1 the epilogue runs in the kernel; with SPLIT_K > 1 each program writes
float32 partial sums and `gemv_splitk_reduce` adds them and runs the epilogue.
Reads (layout of fxc/ir/qformat.py): x float16/bfloat16/float32 [M <= 16, K]; qweight int8 [N, K]
(bits=8) or uint8 [N, K/2] (bits=4: two signed nibbles per byte, column 2j in the low one); scale and
zero point (None: symmetric) [N, G] with G dividing K, any dtype (passed on as contiguous float32).
x, qweight and out may have any strides. Writes out [M, N] (allocated in x's dtype unless given) and,
when SPLIT_K > 1, a float32 [SPLIT_K, M, N] scratch tensor it allocates; preserves every input.
Hooks: {{load_weight}}, {{epilogue_params}}, {{epilogue}} (codegen/triton/epilogue.py),
{{compute_dtype}}, {{dot_precision}}. The picker runs it for weight-only linears with M <= its
decode_max_m.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton

from fxc.codegen.triton.cache import CompiledKernel, split_config
from fxc.codegen.triton.kernels.tiles import FLOAT_DTYPES, check, group_scale_args, output, scale_mode
from fxc.codegen.triton.template import KernelTemplate

LOAD_INT8 = """
offs_k0 = k0 + tl.arange(0, BLOCK_K // 2)  # the first half of the tile
offs_k1 = offs_k0 + BLOCK_K // 2  # the second half
if EVEN_K:  # no column of the tile lies past K: masks constant along K keep the loads wide
    mask_x0, mask_x1 = mask_m[:, None], mask_m[:, None]
    mask_q0, mask_q1 = mask_n[:, None], mask_n[:, None]
else:
    mask_x0, mask_x1 = mask_m[:, None] & (offs_k0[None, :] < K), mask_m[:, None] & (offs_k1[None, :] < K)
    mask_q0, mask_q1 = mask_n[:, None] & (offs_k0[None, :] < K), mask_n[:, None] & (offs_k1[None, :] < K)
x0 = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k0[None, :] * stride_xk, mask=mask_x0, other=0.0)
x1 = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k1[None, :] * stride_xk, mask=mask_x1, other=0.0)
q0 = tl.load(q_ptr + offs_n[:, None] * stride_qn + offs_k0[None, :] * stride_qk, mask=mask_q0, other=0)
q1 = tl.load(q_ptr + offs_n[:, None] * stride_qn + offs_k1[None, :] * stride_qk, mask=mask_q1, other=0)
q0 = q0.to(tl.int32)
q1 = q1.to(tl.int32)
"""

LOAD_INT4 = """
offs_byte = tl.multiple_of(k0 // 2, BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)  # k0: a multiple of BLOCK_K
offs_k0 = 2 * offs_byte  # even columns: low nibbles
offs_k1 = offs_k0 + 1  # odd columns: high nibbles
offs_k = k0 + tl.arange(0, BLOCK_K)
if EVEN_K:  # no column of the tile lies past K: masks constant along K keep the loads wide
    mask_x, mask_q = mask_m[:, None], mask_n[:, None]
else:
    mask_x, mask_q = mask_m[:, None] & (offs_k[None, :] < K), mask_n[:, None] & (offs_k0[None, :] < K)
x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk, mask=mask_x, other=0.0)
x0, x1 = tl.split(tl.reshape(x, (BLOCK_M, BLOCK_K // 2, 2)))
packed = tl.load(q_ptr + offs_n[:, None] * stride_qn + offs_byte[None, :] * stride_qk, mask=mask_q, other=0)
packed = packed.to(tl.int32)
q0 = (packed << 28) >> 28  # the low nibble, sign-extended (arithmetic shift)
q1 = (packed << 24) >> 28  # the high nibble
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
    GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, SCALES: tl.constexpr,
    EVEN_K: tl.constexpr,
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
    k_end = tl.minimum(k_start + K_PER_SPLIT, K)
    if SCALES == 0:  # one scale (and zero point) per row for all of K
        s = tl.load(scale_ptr + offs_n * stride_sn, mask=mask_n, other=0.0)
        if HAS_ZERO:
            z = tl.load(zero_ptr + offs_n * stride_sn, mask=mask_n, other=0.0)

    # -- K loop over this program's range: even and odd columns of each tile ------------------
    if BLOCK_M == 1:
        acc_k = tl.zeros((BLOCK_N, BLOCK_K // 2), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        {{load_weight}}
        w0 = q0.to(tl.float32)
        w1 = q1.to(tl.float32)
        if SCALES == 2:  # groups change inside the tile: one scale (and zero) per element
            s0_offs = offs_n[:, None] * stride_sn + (offs_k0[None, :] // GROUP_SIZE) * stride_sg
            s1_offs = offs_n[:, None] * stride_sn + (offs_k1[None, :] // GROUP_SIZE) * stride_sg
            mask0 = mask_n[:, None] & (offs_k0[None, :] < K)
            mask1 = mask_n[:, None] & (offs_k1[None, :] < K)
            if HAS_ZERO:
                w0 = w0 - tl.load(zero_ptr + s0_offs, mask=mask0, other=0.0)
                w1 = w1 - tl.load(zero_ptr + s1_offs, mask=mask1, other=0.0)
            w0 = w0 * tl.load(scale_ptr + s0_offs, mask=mask0, other=0.0)
            w1 = w1 * tl.load(scale_ptr + s1_offs, mask=mask1, other=0.0)
        else:
            if SCALES == 1:  # the whole K tile lies in one group: one scale (and zero) per weight row
                s_offs = offs_n * stride_sn + (k0 // GROUP_SIZE) * stride_sg
                s = tl.load(scale_ptr + s_offs, mask=mask_n, other=0.0)
                if HAS_ZERO:
                    z = tl.load(zero_ptr + s_offs, mask=mask_n, other=0.0)
            if HAS_ZERO:
                w0 = w0 - z[:, None]
                w1 = w1 - z[:, None]
            w0 = w0 * s[:, None]  # scaled before x multiplies it: x near float32's max stays finite
            w1 = w1 * s[:, None]
        if BLOCK_M == 1:  # one row: multiply on the CUDA cores, reduce along K after the loop
            acc_k += w0 * x0.to(tl.float32) + w1 * x1.to(tl.float32)
        else:  # up to 16 rows: tensor cores, rows beyond M masked to zero
            acc = tl.dot(x0.to({{compute_dtype}}), tl.trans(w0.to({{compute_dtype}})), acc,
                         input_precision={{dot_precision}})
            acc = tl.dot(x1.to({{compute_dtype}}), tl.trans(w1.to({{compute_dtype}})), acc,
                         input_precision={{dot_precision}})
    if BLOCK_M == 1:
        acc = tl.sum(acc_k, axis=1)[None, :]

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
    configs=(  # the wrapper lowers BLOCK_K to 128 for groups of 128; the likeliest first (--quick tunes 4)
        _config(64, 128, 2, 4, 2),
        _config(16, 256, 1, 4),
        _config(32, 128, 4, 4, 2),
        _config(64, 256, 2, 4, 2),
        _config(32, 256, 1, 4),
        _config(16, 128, 1, 4),
        _config(16, 128, 2, 4),
        _config(64, 128, 4, 4, 2),
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
    scales, constexprs["BLOCK_K"] = scale_mode(scale.shape[1], group_size, constexprs["BLOCK_K"])
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
        GROUP_SIZE=group_size, HAS_ZERO=zero_point is not None, SCALES=scales,
        EVEN_K=k % block_k == 0, BLOCK_M=bm,
        **constexprs, **options,
    )
    if split_k > 1:
        reduce_block_n = 64
        compiled["gemv_splitk_reduce"][(triton.cdiv(n, reduce_block_n),)](
            partial, out, m, n, *out.stride(), *epilogue_args,
            SPLIT_K=split_k, BLOCK_M=bm, BLOCK_N=reduce_block_n,
        )
    return out
