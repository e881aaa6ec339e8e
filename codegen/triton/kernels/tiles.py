"""What the kernels in this folder share: three `@triton.jit` tile helpers, and the checks, output,
grid and template table their launch wrappers and templates use.

Kernel side. A GEMM kernel's text imports the helpers by name, like any other Python module:

    from fxc.codegen.triton.kernels.tiles import block_offsets, store_block, swizzled_block

    swizzled_block(M, N, ...)          program id -> (pid_m, pid_n) of the output block; programs walk
                                       the output in bands of GROUP_M block rows, so the weight
                                       columns a band reads stay in L2 while its rows are computed
    block_offsets(pid_m, pid_n, ...)   -> offs_m, offs_n, mask_m, mask_n of that block
    store_block(out_ptr, acc, ...)     masked store of the float32 accumulator in out's dtype

Triton inlines a `@triton.jit` function that a kernel calls when it compiles the kernel (in its
interpreter the call is a plain Python call), so a helper adds no call to the compiled kernel. The
kernel cache keys a kernel by its rendered text, which names the helpers but does not hold them;
Triton's compile cache hashes each kernel together with the jit functions it calls, so an edit here
recompiles them all. The group-wise dequantization of the K loop is not a helper: it stays written
out in gemv.py and dequant_gemm.py. The kernels with these imported helpers have not been timed on a
GPU yet.

Python side: `check` (an argument's dtype, sizes and device, or a ValueError naming the kernel),
`output` (the out tensor: allocated, or the caller's checked), `group_scale_args` (the
quantization-group scales of the weight-only kernels gemv, w8a16_gemm, w4a16_gemm), `scale_mode`
(how those kernels apply the scales: per row after the K loop, per K tile, or per element), `gemm_config`
(one autotune entry), `gemm_template` (a swizzled-block GEMM template from its table rows, with the
interpreter config they all use) and `swizzled_grid` (the 1-D grid swizzled_block decodes).
Reads and writes nothing; preserves its arguments (`group_scale_args` returns float32 copies where
the scales are not already contiguous float32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from fxc.codegen.triton.template import KernelTemplate

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# -- kernel side: @triton.jit helpers, inlined into the kernels that call them ------------------


@triton.jit
def swizzled_block(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """This program's output block (pid_m, pid_n), taking block rows in bands of GROUP_M: down a band's
    rows first, then to the next block column, so a band reuses each weight column it loads."""
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
    """Rows offs_m and columns offs_n of block (pid_m, pid_n), with their masks (offs_m < M, offs_n < N)."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_m, offs_n, offs_m < M, offs_n < N


@triton.jit
def store_block(out_ptr, acc, offs_m, offs_n, mask_mn, stride_om, stride_on):
    """out[offs_m, offs_n] = acc, cast to out's dtype, where mask_mn."""
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_mn)


# -- Python side: what the launch wrappers share --------------------------------------------------


def check(kernel: str, name: str, tensor: torch.Tensor, dtypes: tuple | None, shape: tuple,
          device: torch.device) -> None:
    """Raise ValueError (naming the kernel and the argument) unless `tensor` has one of `dtypes` (None:
    any), the sizes `shape` (None: any size) and lives on `device`."""
    if ((dtypes is None or tensor.dtype in dtypes) and tensor.device == device and tensor.dim() == len(shape)
            and all(want is None or want == got for want, got in zip(shape, tensor.shape))):
        return
    sizes = ", ".join("*" if s is None else str(s) for s in shape)
    names = [str(d).replace("torch.", "") for d in dtypes or ()]
    kinds = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    raise ValueError(f"{kernel}: {name} must be {kinds + ' ' if kinds else ''}[{sizes}] on {device}, got "
                     f"{str(tensor.dtype).replace('torch.', '')} {list(tensor.shape)} on {tensor.device}")


def output(kernel: str, out: torch.Tensor | None, x: torch.Tensor, n: int) -> torch.Tensor:
    """The [M, N] tensor a wrapper writes for x [M, K]: `out` checked (any float dtype, any strides),
    or a new one of x's dtype."""
    if out is None:
        return torch.empty((x.shape[0], n), dtype=x.dtype, device=x.device)
    check(kernel, "out", out, FLOAT_DTYPES, (x.shape[0], n), x.device)
    return out


def group_scale_args(kernel: str, scale: torch.Tensor, zero_point: torch.Tensor | None, n: int, k: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(scale, zero point, group size) of a weight-only layout (fxc/ir/qformat.py): scale and zero point
    [N, G] with G dividing K (any dtype), as contiguous float32, so the kernel addresses both with one pair
    of strides."""
    check(kernel, "scale", scale, None, (n, None), device)
    if k % scale.shape[1]:
        raise ValueError(f"{kernel}: scale has {scale.shape[1]} groups, which do not divide K={k}")
    if zero_point is not None:
        check(kernel, "zero_point", zero_point, None, tuple(scale.shape), device)
        zero_point = zero_point.float().contiguous()
    return scale.float().contiguous(), zero_point, k // scale.shape[1]


SCALE_MODES = {"per row": 0, "per tile": 1, "per element": 2}  # the SCALES constexpr of gemv / dequant_gemm


def scale_mode(groups: int, group_size: int, block_k: int) -> tuple[int, int]:
    """(SCALES, BLOCK_K) of a weight-only kernel for `groups` groups of `group_size` columns: per row
    when there is one group (the kernel scales its result once, after the K loop); else per tile, each
    K tile inside one group, with BLOCK_K lowered to the largest power of two dividing the group size
    where that is still >= 32 (a half tile of int4 feeds tl.dot, which takes K >= 16); else per element."""
    if groups == 1:
        return SCALE_MODES["per row"], block_k
    fitting = min(block_k, group_size & -group_size)  # the largest power of two dividing the group size
    if fitting >= min(block_k, 32):
        return SCALE_MODES["per tile"], fitting
    return SCALE_MODES["per element"], block_k


def gemm_config(bm: int, bn: int, bk: int, warps: int, stages: int, group_m: int = 8) -> dict:
    """One autotune entry: block sizes, the band height GROUP_M of swizzled_block, launch options."""
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group_m, num_warps=warps, num_stages=stages)


def gemm_template(name: str, text: str, table: Sequence[tuple], kernels: tuple[str, ...] | None = None,
                  ) -> KernelTemplate:
    """The template of swizzled-block GEMM kernels (`kernels`, default the one named `name`): its GPU
    autotune table from rows of gemm_config arguments (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages),
    a row's optional sixth number the lowest compute capability it is meant for (90: sm_90 only; none:
    every GPU), and under the interpreter 32 x 64 x 64 blocks in bands of 2 on one warp."""
    return KernelTemplate(name=name, text=text, kernels=kernels or (name,),
                          configs=tuple(gemm_config(*row[:5]) for row in table),
                          interpreter_config=gemm_config(32, 64, 64, 1, 1, group_m=2),
                          min_arch=tuple(row[5] if len(row) > 5 else 0 for row in table))


def swizzled_grid(m: int, n: int, constexprs: dict) -> tuple[int]:
    """One program per [BLOCK_M, BLOCK_N] output block, in the 1-D order swizzled_block decodes."""
    return (triton.cdiv(m, constexprs["BLOCK_M"]) * triton.cdiv(n, constexprs["BLOCK_N"]),)
