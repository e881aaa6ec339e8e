"""Weight-only quantized linear (fxc.quantized_linear) on the CPU, never holding a float copy of
the whole weight. What the `torch` backend swaps quantized_linear nodes for.

`weight_only_linear` picks one of these kernels per call, by the instruction-set family in force (the
backend option `isa` caps this CPU's family: codegen/torch/native/isa.py); each computes the reference's
x @ dequantize(qweight, scale, zero_point)^T + bias (fxc/ir/ops.py) within fp32 rounding:

    AMX planes      family amx: per-channel scales or groups of a multiple of 64 columns, float32 x on a CPU with
                    AMX-int8 (codegen/torch/native/build.py, codegen/torch/native/amx_plane_gemm.c), any
                    number of rows, eager or under torch.compile (there as the op
                    torch.ops.fxc_native.plane_linear of fxc/ir/ops.py, whose "cpu" kernel this module
                    registers): x split exactly into 4 int8 planes, every plane times the stored int8
                    weight on the tile unit, the int32 accumulators combined exactly. Linears reading
                    one input share its split (`shared_planes`). Rows holding inf or nan take the
                    dequantized tiles (the reference's inf / nan). Off with the backend option
                    native=False (the `native` argument here); where it cannot load, the kernels below:
    AVX2 kernel     family avx2 or above (and amx calls the AMX kernel does not take), float32 x, eager:
                    codegen/torch/native/avx2_weight_only.c through native/avx2.py, any number of rows, per-channel
                    scales or groups of a multiple of 16 columns. Decode reads each weight once, converting it to
                    float32 in registers; more rows dequantize panels of the weight into float32 buffers of
                    L2 size and run FMA micro-kernels over them (no float weight written to memory and read
                    back, as the tiles below do; benchmarks/cpu_speed.py --layers compares them). inf and nan
                    propagate as in the reference. Off with native=False; where it cannot load (no compiler),
                    the kernels below:
    int8 planes     family avx512_vnni or amx (torch._int_mm has VNNI/AMX kernels there; elsewhere it is a
                    scalar loop), few rows (rows <= PLANE_ROWS: decode), per-channel scales, float32 x on the CPU.
                    Memory-bound, so the weight is read once as int8 by torch._int_mm (oneDNN,
                    VNNI/AMX). Each row of x is split into PLANES int8 planes,
                        x = a * (q0 + q1/254 + q2/254^2 + q3/254^3) + r,   a = max|x_row| / 127,
                        |r| <= max|x_row| * 2.4e-10 (below fp32 rounding of the row's largest element),
                    stacked as the rows of one _int_mm: int32 accumulators are exact, a zero point
                    is subtracted exactly in int32 (sum q_p (w - z) = acc_p - z sum q_p), the planes
                    are combined with float64 steps and scaled per channel in float64, rounded once to
                    float32 (x @ (W - z)^T before the scale would pass float32's max for x near it).
                    Linears reading one input (q/k/v, gate/up) share its planes (`shared_planes`,
                    inserted by the backend). int4 weights are unpacked to int8 by arithmetic shifts
                    first (N*K bytes, freed after the call).
    fused planes    family avx512_vnni or amx, under torch.compile (backend_options={"torch_compile": True}),
                    per-channel scales, float32 x, any number of rows: the same idea with a power-of-two
                    step and base 128, so the split and the combine are exact float32 elementwise steps
                    that Inductor fuses around one _int_mm (in eager mode each step would be its own pass over the
                    activations, which is why eager prefill takes the dequantized tiles). `fused_plane_linear`.
    dequantized     everything else (prefill in eager mode, group-wise scales, other dtypes, non-finite
    tiles           x, x that needs a gradient). Compute-bound: the float weight
                    is built one tile of output rows at a time (TILE_BYTES) into a per-thread scratch
                    buffer reused by every call and layer (a fresh one when autograd keeps the tile),
                    with the same elementwise ops as qformat.dequantize (so the same tile values),
                    then one addmm per tile with the bias fused.

Why not torch's own kernels: with float32 activations aten._weight_int8pack_mm and
aten._weight_int4pack_mm_for_cpu are slower than the float32 GEMM on the CPUs this backend targets
(their bf16 paths round the output to bf16); benchmarks/cpu_weight_only.py compares them.
Reads its arguments; writes the tensors it returns and this thread's scratch buffer; preserves every argument.
"""

from __future__ import annotations

import math
import threading

import torch

from fxc.codegen.torch.native import avx2
from fxc.codegen.torch.native import build as native_build
from fxc.codegen.torch.native import isa as cpu_isa
from fxc.ir import ops
from fxc.ir.ops import unpacked_columns
from fxc.ir.qformat import QuantizedWeight, apply_group_scales, unpack

TILE_BYTES = 16 << 20  # float32 weight tile of the dequantized path: a whole weight up to 4M elements;
# bigger tiles rather than L2-sized ones, since a GEMM on column slices of the output runs below full speed
PLANE_ROWS = 16  # at most this many activation rows go through the int8-plane kernel
PLANES = 4  # int8 planes per activation row (3 leave max|x_row| * 6e-8, 4 leave 2.4e-10)
PLANE_BASE = 254.0  # each plane holds the previous one's residual (|r| <= 1/2) times 254: |q| <= 127

_PLANE_POWERS = torch.tensor([PLANE_BASE**p for p in range(PLANES)], dtype=torch.float64).reshape(PLANES, 1, 1)
_PLANE_STEPS = 1 / _PLANE_POWERS  # [PLANES, 1, 1] float64
_TINY = torch.finfo(torch.float64).tiny
_TINY32 = torch.finfo(torch.float32).tiny
FUSED_PLANES = 4  # planes of the torch.compile kernel: base 128 (exact in float32), 4 leave max|x_row| * 3.7e-9
FUSED_BASE = 128.0
_workspace = threading.local()  # this thread's float32 scratch tile, keyed by device


MAX_PLANE_COLUMNS = (2**31 - 1) // (127 * 255)  # int32 accumulators of K products |q_p (w - z)| <= 127 * 255


def planes_can_take(columns: int, per_channel: bool, x: torch.Tensor) -> bool:
    """What both plane kernels need: per-channel scales, int32-safe K, float32 x on the CPU, no gradient."""
    differentiated = torch.is_grad_enabled() and x.requires_grad  # _int_mm on int8 planes has no gradient
    return (per_channel and columns <= MAX_PLANE_COLUMNS and not differentiated
            and x.dtype == torch.float32 and x.device.type == "cpu")


def uses_native_planes(columns: int, groups: int, x: torch.Tensor, native: bool = True, isa: str = "auto") -> bool:
    """Whether the AMX plane kernel runs this call: `native` (the backend option), `isa` (the backend option: the
    cap on the family) allowing amx, float32 x without gradient (planes_can_take), per-channel scales or groups
    of a multiple of 64 columns, and the kernel loaded on this CPU."""
    return (
        native
        and isa in ("auto", "amx")
        and planes_can_take(columns, True, x)
        and native_build.takes_groups(columns, groups)
        and native_kernel_loaded()
    )


@torch.compiler.assume_constant_result  # torch.compile: a constant of the trace, not code to trace
def native_kernel_loaded() -> bool:
    return native_build.plane_kernel() is not None


def uses_int8_planes(rows: int, columns: int, per_channel: bool, x: torch.Tensor, isa: str = "auto") -> bool:
    """Whether the eager int8-plane kernel applies (before the run-time check that x is finite): a family with
    fast int8 dot products (torch._int_mm), a few rows, planes_can_take."""
    return (0 < rows <= PLANE_ROWS and not torch.compiler.is_compiling() and has_int8_dot(isa)
            and planes_can_take(columns, per_channel, x))


@torch.compiler.assume_constant_result  # torch.compile: a constant of the trace (it reads /proc/cpuinfo once)
def has_int8_dot(isa: str = "auto") -> bool:
    """Whether torch._int_mm is fast in the family `isa` caps this CPU to (AVX-512 VNNI or AMX); on other CPUs it
    is a scalar loop, far slower than the float32 GEMM."""
    return cpu_isa.at_least(cpu_isa.effective_family(isa), "avx512_vnni")


@torch.compiler.assume_constant_result  # torch.compile: a constant of the trace, not code to trace
def avx2_kernel_loaded() -> bool:
    return native_build.avx2_kernel() is not None


def uses_avx2(columns: int, groups: int, bits: int, x: torch.Tensor, native: bool = True, isa: str = "auto") -> bool:
    """Whether the AVX2 kernel runs this call: eager, `native`, a family of avx2 or above, float32 x on the CPU
    without gradient, groups it takes (native/avx2.py), and the library loaded."""
    return (
        native
        and not torch.compiler.is_compiling()
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not (torch.is_grad_enabled() and x.requires_grad)
        and cpu_isa.at_least(cpu_isa.effective_family(isa), "avx2")
        and avx2.takes_weight_only(columns, groups, bits)
        and avx2_kernel_loaded()
    )


def weight_only_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    bias: torch.Tensor | None,
    bits: int,
    shared_planes: native_build.SplitRows | tuple[torch.Tensor, torch.Tensor] | None = None,
    native: bool = True,
    isa: str = "auto",
) -> torch.Tensor:
    """fxc.quantized_linear: the AMX plane kernel where it runs (and `native`), else the AVX2 kernel, else int8
    planes for a few rows with per-channel scales, else dequantized tiles (module docstring). `shared_planes`: x
    already split by `shared_planes` (shared by the linears reading x); `isa`: the cap on the CPU family."""
    weight = QuantizedWeight(qweight, scale, zero_point, bits)
    columns = unpacked_columns(qweight, bits)
    rows = x.reshape(-1, columns)
    groups = scale.shape[-1]
    if uses_native_planes(columns, groups, x, native, isa):
        y = native_plane_linear(rows, weight, bias, shared_planes)
        return y.reshape(*x.shape[:-1], qweight.shape[0])
    if uses_avx2(columns, groups, bits, x, native, isa):
        return avx2.weight_only_linear(rows, weight, bias).reshape(*x.shape[:-1], qweight.shape[0])
    if uses_fused_planes(columns, groups == 1, x, isa):
        return fused_plane_linear(rows, weight, bias).reshape(*x.shape[:-1], -1)
    y = None
    if uses_int8_planes(rows.shape[0], columns, groups == 1, x, isa):
        y = int8_plane_linear(rows, weight, bias, shared_planes)
    if y is None:
        y = dequantized_tile_linear(rows, weight, bias)
    return y.reshape(*x.shape[:-1], qweight.shape[0])


def shared_planes(
    x: torch.Tensor, native: bool = True, isa: str = "auto"
) -> native_build.SplitRows | tuple[torch.Tensor, torch.Tensor] | None:
    """x [..., K] split once for several per-channel linears reading it: the AMX kernel's planes where it
    runs (and `native`; `isa` the cap on the family), else the int8 planes of a few rows; None where neither
    applies (the AVX2 kernel runs, many rows without the AMX kernel, torch.compile, not float32, not finite)."""
    rows = x.reshape(-1, x.shape[-1])
    if torch.compiler.is_compiling():
        return None
    if uses_native_planes(rows.shape[1], 1, x, native, isa):
        return native_build.split_rows(rows)
    if uses_avx2(rows.shape[1], 1, 8, x, native, isa):
        return None
    if not uses_int8_planes(rows.shape[0], rows.shape[1], True, x, isa):
        return None
    return split_into_int8_planes(rows)


# --- AMX planes (native) -----------------------------------------------------------------------------


def native_plane_linear(
    rows: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None, shared: object = None
) -> torch.Tensor:
    """rows [M, K] through the AMX plane kernel (under torch.compile: the op fxc_native.plane_linear, whose
    "cpu" kernel calls this function); rows holding inf or nan through the dequantized tiles, so the output
    is the reference's there."""
    if torch.compiler.is_compiling():
        qweight, scale, zero_point, bits = weight
        return ops.plane_linear(rows, qweight, scale, zero_point, bias, bits)
    split = shared if isinstance(shared, native_build.SplitRows) else native_build.split_rows(rows)
    if split is None:
        return dequantized_tile_linear(rows, weight, bias)
    return native_build.plane_gemm(split, weight, bias)


@ops.plane_linear.register_kernel("cpu")
def _plane_linear_cpu(rows, qweight, scale, zero_point, bias, bits) -> torch.Tensor:  # the op's schema (ops.py)
    """The CPU kernel of fxc_native.plane_linear (fxc/ir/ops.py): the AMX plane kernel where it takes the
    call, else the dequantized tiles (the same result as the op's reference)."""
    weight = QuantizedWeight(qweight, scale, zero_point, bits)
    if uses_native_planes(rows.shape[1], scale.shape[-1], rows):
        return native_plane_linear(rows, weight, bias)
    return dequantized_tile_linear(rows, weight, bias)


# --- int8 planes -------------------------------------------------------------------------------------


def split_into_int8_planes(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """rows [M, K] float32 -> (planes [PLANES*M, K] int8, plane steps [PLANES, M, 1] float64) with
    rows = sum_p steps[p] * planes[p*M:(p+1)*M] up to max|row| * 2.4e-10, steps[p] = a / PLANE_BASE^p,
    a = max|row| / 127; None when a row is not finite (the planes cannot represent inf or nan).

    With z = rows / a (|z| <= 127) and R_p = round(z * PLANE_BASE^p) (in float64, which carries
    |R_p| <= 127 * 254^3 < 2^31 with 22 bits to spare), plane p >= 1 is R_p - PLANE_BASE * R_{p-1} =
    round(PLANE_BASE * (u - round(u))) for u = z * PLANE_BASE^(p-1), so |plane| <= 127, and the planes
    telescope: sum_p plane_p / PLANE_BASE^p = R_{PLANES-1} / PLANE_BASE^(PLANES-1) = z +- 0.5 / 254^3."""
    rows64 = rows.to(torch.float64)
    amax = rows64.abs().amax(dim=-1, keepdim=True)
    if not math.isfinite(amax.max().item()):  # max propagates nan
        return None
    step = amax.mul_(1 / 127).add_(_TINY)  # > 0: an all-zero row gets planes of 0
    scaled = rows64.div_(step).unsqueeze(0).mul(_PLANE_POWERS).round_()  # R_p: [PLANES, M, K]
    planes = scaled.clone()
    planes[1:].sub_(scaled[:-1], alpha=PLANE_BASE)
    return planes.view(-1, rows.shape[1]).to(torch.int8), _PLANE_STEPS * step


def int8_weight(weight: QuantizedWeight) -> torch.Tensor:
    """int8 [N, K]: qweight itself for bits 8; for bits 4 unpacked (N*K bytes, freed after the call)."""
    return unpack(weight.qweight, weight.bits)


def plane_products(planes: torch.Tensor, weight: QuantizedWeight) -> torch.Tensor:
    """int8 planes [P*M, K] @ (W - z)^T as exact int32 [P*M, N]: one torch._int_mm on the int8 weight, the
    zero point subtracted in int32 (sum q_p (w - z) = acc_p - z sum q_p; |q_p (w - z)| sums fit int32)."""
    acc = torch._int_mm(planes, int8_weight(weight).t())
    if weight.zero_point is not None:
        plane_sums = planes.sum(dim=-1, keepdim=True, dtype=torch.int32)
        acc.sub_(plane_sums * weight.zero_point.reshape(1, -1).to(torch.int32))
    return acc


def int8_plane_linear(
    rows: torch.Tensor,
    weight: QuantizedWeight,
    bias: torch.Tensor | None,
    shared_planes: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """rows [M, K] float32 through torch._int_mm on PLANES int8 planes; None when rows are not finite."""
    split = shared_planes if shared_planes is not None else split_into_int8_planes(rows)
    if split is None:
        return None
    planes, plane_steps = split
    acc = plane_products(planes, weight)  # [PLANES*M, N], exact
    m, n = rows.shape[0], weight.qweight.shape[0]
    # int32 * float64 steps in one pass (float64: the last plane's step of a 1e-30 row is no float32 subnormal), the
    # planes summed and the channel scale applied in float64 too, then one rounding to float32: x @ (W - z)^T before
    # the scale can pass float32's max where the result does not (x near float32's max)
    y = torch.mul(acc.view(PLANES, m, n), plane_steps).sum(dim=0)
    y = y.mul_(weight.scale.to(torch.float64).reshape(1, n)).to(torch.float32)
    return y.add_(bias) if bias is not None else y


# --- int8 planes under torch.compile ----------------------------------------------------------------


def uses_fused_planes(columns: int, per_channel: bool, x: torch.Tensor, isa: str = "auto") -> bool:
    """Whether torch.compile traces the fused plane kernel (a family with fast torch._int_mm)."""
    return torch.compiler.is_compiling() and has_int8_dot(isa) and planes_can_take(columns, per_channel, x)


def split_into_fused_planes(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rows [M, K] float32 -> (planes [FUSED_PLANES*M, K] int8, power-of-two step [M, 1], max|row| [M, 1])
    with rows = step * sum_p planes[p] / 128^p up to max|row| * 3.7e-9 (finite rows)."""
    amax = rows.abs().amax(dim=-1, keepdim=True)
    step = torch.exp2(torch.ceil(torch.log2(amax.clamp_min(_TINY32) * (1 / 127))))
    z = rows / step
    planes = []
    for _ in range(FUSED_PLANES):
        plane = torch.round(z).clamp_(-127, 127)
        planes.append(plane)
        z = (z - plane) * FUSED_BASE
    return torch.cat(planes).to(torch.int8), step, amax


def fused_plane_linear(rows: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """int8 planes written for Inductor to fuse: every step but the _int_mm is elementwise float32, exact.

    The step a = 2^ceil(log2(max|row| / 127)) is a power of two, so z = row / a is exact; plane p is
    round(z_p) with z_{p+1} = (z_p - round(z_p)) * 128 (exact: a power-of-two scaling of an exact
    difference), |plane 0| <= 127 (clamped where log2 rounds low), |plane p>0| <= 64, and
    row = a * sum_p plane_p / 128^p up to a * 0.5 / 128^3 < max|row| * 3.7e-9. The int32 accumulators
    are exact, their float32 sum rounds like a float32 GEMM. A row holding inf or nan gives nan in
    every output of that row (the reference gives inf or nan there; planes cannot carry inf, and a
    data-dependent fallback would break the compiled graph)."""
    stacked, step, amax = split_into_fused_planes(rows)
    acc = plane_products(stacked, weight)
    m = rows.shape[0]
    y = acc[:m].to(torch.float32)
    for p in range(1, FUSED_PLANES):
        y = y + acc[p * m : (p + 1) * m].to(torch.float32) * FUSED_BASE**-p
    poison = torch.where(torch.isfinite(amax), 0.0, float("nan"))  # [M, 1]: nan rows for inf / nan input
    # the scale before the step: y * scale is bounded by the weights (|plane sums| <= 128 * 255 * K), and the
    # power-of-two step is exact after it, so the same rounding as (y * step) * scale without y * step (x @ (W - z)^T
    # before the scale) passing float32's max where the result is finite
    y = y * weight.scale.to(torch.float32).reshape(1, -1) * step + poison
    return y if bias is None else y + bias


# --- dequantized tiles -------------------------------------------------------------------------------


def scratch_tile(numel: int, device: torch.device) -> torch.Tensor:
    """This thread's float32 scratch of `numel` elements on `device`, grown when too small, reused after."""
    buffers = getattr(_workspace, "buffers", None)
    if buffers is None:
        buffers = _workspace.buffers = {}
    buffer = buffers.get(device)
    if buffer is None or buffer.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: written in and out of inference mode
            buffer = buffers[device] = torch.empty(numel, dtype=torch.float32, device=device)
    return buffer[:numel]


def dequantize_into(out: torch.Tensor, weight: QuantizedWeight) -> torch.Tensor:
    """out [n, K] float32 = qformat.dequantize(qweight [n, ...], scale [n, G], zero_point, bits), by the same
    elementwise float32 ops (so the same values), without allocating a float weight."""
    out.copy_(int8_weight(weight))
    zero = weight.zero_point.to(torch.float32) if weight.zero_point is not None else None
    return apply_group_scales(out, weight.scale.to(torch.float32), zero)


def tile_rows(columns: int) -> int:
    """Output rows per float32 weight tile of TILE_BYTES (at least one)."""
    return max(TILE_BYTES // (4 * columns), 1)


def dequantized_tile_linear(rows: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """rows [M, K] @ dequantize(weight)^T + bias, the float weight built tile by tile in scratch."""
    qweight, scale, zero_point, bits = weight
    outputs, columns = qweight.shape[0], rows.shape[1]
    tile = min(tile_rows(columns), outputs)
    keeps_weight = torch.is_grad_enabled() and rows.requires_grad  # autograd saves the tile for backward
    if keeps_weight or torch.compiler.is_compiling():  # torch.compile: no thread-local state, inductor fuses
        scratch = torch.empty(tile * columns, dtype=torch.float32, device=rows.device)
    else:
        scratch = scratch_tile(tile * columns, rows.device)

    def weight_tile(n0: int, n1: int) -> torch.Tensor:
        zero = zero_point[n0:n1] if zero_point is not None else None
        band = QuantizedWeight(qweight[n0:n1], scale[n0:n1], zero, bits)
        return dequantize_into(scratch[: (n1 - n0) * columns].view(n1 - n0, columns), band).to(rows.dtype)

    if tile >= outputs:
        whole = weight_tile(0, outputs)
        return torch.addmm(bias, rows, whole.t()) if bias is not None else rows @ whole.t()
    y = rows.new_empty(rows.shape[0], outputs)
    for n0 in range(0, outputs, tile):
        n1 = min(n0 + tile, outputs)
        if bias is not None:
            torch.addmm(bias[n0:n1], rows, weight_tile(n0, n1).t(), out=y[:, n0:n1])
        else:
            torch.mm(rows, weight_tile(n0, n1).t(), out=y[:, n0:n1])
    return y
