"""The `torch` backend: runs the compressed GraphModule with torch, fxc ops through fast kernels.

    cm = fxc.compile(model, passes="quantize{act-bits=8}", example_inputs=(x,), backend="torch")
    cm.runner.notes        # what each fxc op became, e.g. "linear: int8_linear -> torch._int_mm"
    fxc.compile(..., backend="torch", backend_options={"fast": False})   # the reference ops as is
    fxc.compile(..., backend="torch", backend_options={"torch_compile": True})  # and under torch.compile
    fxc.compile(..., backend="torch", backend_options={"native": False})  # no native (C) kernel
    fxc.compile(..., backend="torch", backend_options={"isa": "avx2"})   # kernels of an AVX2-only CPU
    cm.runner.summary_note()  # one line: the CPU family in force and the kernel each op family gets

With `fast` (the default) compile builds a copy of the graph (sharing the module's tensors) in which
each fxc op node is swapped for a fast implementation of the same semantics (codegen/torch/fast_ops.py),
chosen by the CPU's instruction-set family (codegen/torch/native/isa.py: generic, avx2, avx512,
avx512_vnni, amx; the option `isa` caps it, so one machine tests the kernels of lower families):

    fxc.int8_linear        avx2, avx512 (where torch._int_mm is a scalar loop), with `native`: the AVX2
                           int8 kernel (native/avx2_int8.c); avx512_vnni, amx: the same for up to
                           W8A8_INT_MM_ROWS rows, torch._int_mm (oneDNN's VNNI/AMX int8 GEMM) above; generic,
                           native=False or torch.compile: torch._int_mm. All bit-exact with the reference;
                           linears reading the same input (q/k/v, gate/up) quantize it once, shared
    fxc.quantized_linear   amx (and the option `native`, on by default): the native plane kernel
                           (codegen/torch/native/amx_plane_gemm.c); avx2 and above (and amx calls it does
                           not take), with `native`: the AVX2 kernel (native/avx2_weight_only.c: weights
                           converted in registers for decode, float32 panels + FMA micro-kernels for more
                           rows); else, on avx512_vnni, per-channel scales and few rows (decode): x split
                           into int8 planes, one torch._int_mm over the int8 weight; else the float weight
                           built tile by tile in a reused scratch buffer + addmm (codegen/torch/weight_only.py)
    fxc.sparse_nm_linear   torch CSR (MKL sparse) when density <= crossover, else densified once
    fxc.quantized_conv2d   the reference op (conv weights are small)

The rule behind each choice is benchmarks/cpu_speed.py's measurement (benchmarks/RESULTS.md). `cm.runner.notes`
holds one note per layer (the kernel it got, and why not a faster one); `summary_note()` (of the backend and
of the runner) sums the choice up in one line. The options are saved with the model (fxc.save) like every
backend option. The native kernels are compiled once per machine into $XDG_CACHE_HOME/fxc/native (default
~/.cache/fxc/native). Reads the graph; never changes it (the compiled module's `.graph` stays the canonical IR).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.fx

from fxc import ir
from fxc.api.backend import Backend
from fxc.codegen.common import nm_sparse
from fxc.codegen.torch import fast_ops, weight_only
from fxc.codegen.torch.native import avx2
from fxc.codegen.torch.native import build as native_build
from fxc.codegen.torch.native import isa as cpu_isa
from fxc.ir.ops import Int8LinearArgs, QuantizedLinearArgs, SparseNMLinearArgs, densify_nm
from fxc.passmgr.options import option, validate_options

fxc_ops = torch.ops.fxc


@dataclass(frozen=True)
class TorchBackend(Backend):
    """Run the graph with torch; fxc ops through fast CPU kernels."""

    name: ClassVar[str] = "torch"
    fast: bool = option(True, "swap fxc ops for fast kernels (torch._int_mm, tiled dequantization, CSR)")
    torch_compile: bool = option(
        False, "run the graph under torch.compile (inductor fuses quantization and epilogues; 1st call compiles)"
    )
    sparse_crossover: float | None = option(
        None, "density at or below which N:M sparse linears use CSR (default: codegen/common/nm_sparse.py)",
        low=0.0, high=1.0,
    )
    native: bool = option(
        True, "use the native CPU kernels (AMX-int8 plane kernel; AVX2 weight-only and W8A8 kernels), compiled once "
        "per machine"
    )
    isa: str = option(
        "auto", "highest CPU instruction-set family the kernels may use (auto: this CPU's; lower: test that family's "
        "kernels)", choices=cpu_isa.CHOICES,
    )

    def __post_init__(self):
        validate_options(self)

    def compile(self, gm: torch.fx.GraphModule, example_inputs: Any = None) -> torch.nn.Module:
        runner = self._swap_fast_kernels(gm) if self.fast else gm
        if not self.torch_compile:
            return runner
        if runner is gm:
            runner = _copy_sharing_tensors(gm)  # torch.compile wraps it; the IR stays as it is
            runner.notes = []
        runner.notes.append("graph under torch.compile (inductor, dynamic shapes)")
        runner.report_notes = [f"torch backend: {note}" for note in runner.notes].copy
        runner.summary_note = self.summary_note
        return torch.compile(runner, dynamic=True)

    def _swap_fast_kernels(self, gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
        if not any(n.op == "call_function" and n.target in _SWAPS for n in gm.graph.nodes):
            return gm
        fast = _copy_sharing_tensors(gm)
        notes = []
        for node in list(fast.graph.nodes):
            if node.op == "call_function" and node.target in _SWAPS:
                notes.append(f"{node.name}: {_SWAPS[node.target](self, fast, node)}")
        _share_activation_quantization(fast)
        if self.native_loaded() or (self.int8_dot() and not self.avx2_loaded()):
            _share_int8_planes(fast, self.native_loaded(), self.isa)
        ir.remove_unused_tensors(fast)  # drops only this copy's references to the packed N:M tensors
        fast.graph.lint()
        fast.notes = notes
        fast.report_notes = [f"torch backend: {note}" for note in notes].copy  # read by CompiledModule.report
        fast.summary_note = self.summary_note
        return fast

    def family(self) -> str:
        """The CPU family the kernels are chosen for: this CPU's, capped by the option `isa`."""
        return cpu_isa.effective_family(self.isa)

    def native_loaded(self) -> bool:
        """Whether weight-only linears may take the native AMX kernel: the options (native, isa), and the kernel
        loaded."""
        return self.native and self.isa in ("auto", "amx") and native_build.plane_kernel() is not None

    def native_status(self) -> str:
        """Which native kernel runs, or why none does."""
        if not self.native:
            return "native kernels off (option native=False)"
        if self.isa not in ("auto", "amx"):
            return f"AMX kernel off (option isa={self.isa})"
        return native_build.plane_kernel_status()

    def avx2_loaded(self) -> bool:
        """Whether the AVX2 kernels may run: the option native, a family of avx2 or above, and the library loaded."""
        return self.native and cpu_isa.at_least(self.family(), "avx2") and native_build.avx2_kernel() is not None

    def avx2_status(self) -> str:
        """Why the AVX2 kernels do not run (or "AVX2 kernels")."""
        if not self.native:
            return "native kernels off (option native=False)"
        if not cpu_isa.at_least(self.family(), "avx2"):
            return f"no AVX2 in the family {self.family()}"
        return native_build.avx2_kernel_status()

    def int8_dot(self) -> bool:
        """Whether torch._int_mm has fast int8 kernels in the family in force (AVX-512 VNNI or AMX)."""
        return cpu_isa.at_least(self.family(), "avx512_vnni")

    def w8a8_on_avx2(self) -> bool:
        """The W8A8 rule (benchmarks/cpu_speed.py --layers): the AVX2 int8 kernel at every number of rows where
        torch._int_mm has no VNNI/AMX kernel (a scalar loop there, far slower than float32 BLAS); on avx512_vnni
        and amx for up to W8A8_INT_MM_ROWS rows (decode: the weights read once, and the AVX2 quantization costs a
        fraction of torch's), torch._int_mm above (the VNNI/AMX GEMM)."""
        return self.avx2_loaded() and not self.torch_compile

    def summary_note(self) -> str:
        """One line: the CPU family in force and the kernel each op family gets (per-layer detail: runner.notes)."""
        if not self.fast:
            return "torch backend: reference ops (option fast=False)"
        if self.native_loaded():
            wo_kernel = "AMX-int8 plane kernel (AVX2 kernel for groups it does not take)"
        elif self.avx2_loaded():
            wo_kernel = "AVX2 kernel (decode: weights converted in registers; more rows: float32 panels + FMA)"
        elif self.int8_dot():
            wo_kernel = (f"int8 planes via torch._int_mm (<= {weight_only.PLANE_ROWS} rows) / dequantized tiles + BLAS "
                         f"(AVX2 kernel: {self.avx2_status()})")
        else:
            wo_kernel = f"dequantized tiles + BLAS ({self.avx2_status()})"
        if self.w8a8_on_avx2() and self.int8_dot():
            w8a8 = f"AVX2 int8 kernel (<= {W8A8_INT_MM_ROWS} rows), torch._int_mm (oneDNN VNNI/AMX) above"
        elif self.w8a8_on_avx2():
            w8a8 = "AVX2 int8 kernel (int16 madd, exact int32)"
        elif self.int8_dot():
            w8a8 = "torch._int_mm (oneDNN VNNI/AMX)"
        else:
            w8a8 = f"torch._int_mm (no VNNI/AMX: a scalar loop; {self.avx2_status()})"
        compiled = "; under torch.compile" if self.torch_compile else ""
        family = cpu_isa.describe(self.isa)
        return f"torch backend: CPU {family}: weight-only -> {wo_kernel}; W8A8 -> {w8a8}{compiled}"

    def crossover(self) -> nm_sparse.Crossover:
        if self.sparse_crossover is None:
            return nm_sparse.TORCH_CROSSOVER
        return nm_sparse.Crossover(self.sparse_crossover, self.sparse_crossover)


def _copy_sharing_tensors(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A GraphModule over a copy of gm's graph that shares gm's parameters and buffers."""
    graph = copy.deepcopy(gm.graph)
    fast = torch.fx.GraphModule(gm, graph)
    fast.meta = dict(gm.meta)
    return fast


def _swap(node: torch.fx.Node, fn, args: tuple) -> None:
    node.target = fn
    node.args = args
    node.kwargs = {}


W8A8_INT_MM_ROWS = 16  # on avx512_vnni / amx, W8A8 calls of more rows take torch._int_mm (TorchBackend.w8a8_on_avx2)


def _int8_linear(backend: TorchBackend, gm: torch.fx.GraphModule, node: torch.fx.Node) -> str:
    args = Int8LinearArgs.of(node)
    columns = _shape(gm, args.qweight)[1]
    if backend.w8a8_on_avx2() and avx2.takes_int8(columns):
        _swap(node, fast_ops.int8_linear_avx2, tuple(args))
        kernel = "AVX2 int8 kernel (int16 madd, exact int32"
        if not backend.int8_dot():
            return f"int8_linear -> {kernel}; float32 x, else torch._int_mm)"
        node.kwargs = {"int_mm_above": W8A8_INT_MM_ROWS}
        return f"int8_linear -> rows <= {W8A8_INT_MM_ROWS}: {kernel}); more: torch._int_mm (VNNI/AMX, exact)"
    _swap(node, fast_ops.int8_linear_int_mm, tuple(args))
    if backend.int8_dot():
        return "int8_linear -> torch._int_mm (int8 x int8 -> int32, exact)"
    why = "torch.compile" if backend.torch_compile else backend.avx2_status()
    return f"int8_linear -> torch._int_mm (int8 x int8 -> int32, exact; no VNNI/AMX: scalar loop; AVX2 kernel: {why})"


def _quantized_linear(backend: TorchBackend, gm: torch.fx.GraphModule, node: torch.fx.Node) -> str:
    args = QuantizedLinearArgs.of(node)
    qweight, scale, zero_point, bits = args.qweight, args.scale, args.zero_point, args.bits
    rows, stored = _shape(gm, qweight)
    columns = stored * (2 if bits == 4 else 1)
    # (*args, shared planes, native), isa=: _share_int8_planes fills in the shared planes
    _swap(node, weight_only.weight_only_linear, (*args, None, backend.native))
    node.kwargs = {"isa": backend.isa}
    whole = 4 * rows * columns <= weight_only.TILE_BYTES
    tiles = "whole weight" if whole else f"tiles of {weight_only.TILE_BYTES >> 20} MiB"
    kind = f"w{bits}{' zero-point' if zero_point is not None else ''}"
    dequantized = f"dequantized in scratch ({tiles}) + addmm"
    groups = _shape(gm, scale)[-1]
    native = backend.native_status()
    scales = "per-channel" if groups == 1 else f"group-wise ({columns // groups} columns)"
    if backend.native_loaded() and native_build.takes_groups(columns, groups):
        amx = f"{native}: {native_build.PLANES} int8 planes of x times the stored int8 weight"
        return f"quantized_linear {kind} {scales} -> {amx} (float32 x; rows with inf/nan: {dequantized})"
    if backend.avx2_loaded() and not backend.torch_compile and avx2.takes_weight_only(columns, groups, bits):
        loops = (f"rows <= {avx2.GEMV_ROWS[bits]}: weights converted in registers; rows < {avx2.OUTER_ROWS}: "
                 f"float32 panels, dot products; more: float32 panels, outer products")
        return f"quantized_linear {kind} {scales} -> AVX2 kernel ({loops}; float32 x, else {dequantized})"
    if groups != 1:
        why = "groups of a multiple of 64 columns" if backend.native_loaded() else native
        return f"quantized_linear {kind} {scales} -> {dequantized} (int8 planes: {why})"
    if not backend.int8_dot():
        why = "torch.compile" if backend.avx2_loaded() else backend.avx2_status()
        return (f"quantized_linear {kind} per-channel -> {dequantized} (int8 planes: no VNNI/AMX in "
                f"{backend.family()}; no AVX2 kernel: {why})")
    if backend.torch_compile:
        fused = f"{weight_only.FUSED_PLANES} int8 planes fused by inductor around one torch._int_mm"
        return f"quantized_linear {kind} per-channel -> torch.compile: {fused}"
    few_rows = f"rows <= {weight_only.PLANE_ROWS}"
    planes = f"{weight_only.PLANES} int8 planes of x times the int8 weight (torch._int_mm)"
    return f"quantized_linear {kind} per-channel -> {few_rows}: {planes}; else {dequantized} (no AMX kernel: {native})"


def _shape(gm: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[int, ...]:
    if node.op == "get_attr":
        return tuple(ir.get_tensor(gm, node.target).shape)
    return tuple(node.meta["val"].shape)


def _sparse_nm_linear(backend: TorchBackend, gm: torch.fx.GraphModule, node: torch.fx.Node) -> str:
    x, values, indices, scale, bias, n, m = SparseNMLinearArgs.of(node)
    if not all(isinstance(a, torch.fx.Node) and a.op == "get_attr" for a in (values, indices)):
        return "sparse_nm_linear -> reference op (weights computed at run time)"
    choice = nm_sparse.choose(n / m, nm_sparse.example_rows(x), backend.crossover())
    weight = ir.get_tensor(gm, values.target).to(torch.float32)
    if isinstance(scale, torch.fx.Node):
        weight = weight * ir.get_tensor(gm, scale.target).to(torch.float32).reshape(-1, 1)
    dense = densify_nm(weight, ir.get_tensor(gm, indices.target), n, m).to(x.meta["val"].dtype)
    stored = dense.to_sparse_csr() if choice.use_sparse else dense
    name = ir.add_tensor(gm, f"{values.target}_{'csr' if choice.use_sparse else 'dense'}", stored)
    with gm.graph.inserting_before(node):
        weight_node = gm.graph.get_attr(name)
    _swap(node, fast_ops.csr_linear if choice.use_sparse else fast_ops.dense_linear, (x, weight_node, bias))
    return f"sparse_nm_linear {n}:{m} -> {choice.describe('torch CSR')}"


_QUANTIZERS = {  # the W8A8 kernel -> its per-token quantization, shared by the linears reading one input
    fast_ops.int8_linear_int_mm: fast_ops.quantize_per_token,
    fast_ops.int8_linear_avx2: fast_ops.quantize_rows_avx2,
}


def _share_activation_quantization(gm: torch.fx.GraphModule) -> None:
    """Dynamic int8 linears reading the same tensor quantize it once: one quantize_per_token (or
    quantize_rows_avx2) node feeds them all (the per-token quantization is a function of the input alone)."""
    readers: dict[tuple[torch.fx.Node, object], list[torch.fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _QUANTIZERS:
            args = Int8LinearArgs(*node.args[:5])
            if args.input_scale is None:
                readers.setdefault((args.x, node.target), []).append(node)
    for (x, kernel), linears in readers.items():
        if len(linears) < 2:
            continue
        with gm.graph.inserting_before(linears[0]):
            quantized = gm.graph.call_function(_QUANTIZERS[kernel], (x,))
        for linear in linears:
            linear.args = (*linear.args[:5], quantized)


def _share_int8_planes(gm: torch.fx.GraphModule, native: bool, isa: str = "auto") -> None:
    """Per-channel weight-only linears reading the same tensor (q/k/v, gate/up) split it into int8
    planes once: one shared_planes node feeds them all (it returns None where no plane kernel applies).
    `native`: the AMX kernel may run (it takes any groups); the nodes are weight_only_linear(*QuantizedLinearArgs,
    shared planes, native, isa=)."""
    readers: dict[torch.fx.Node, list[torch.fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is weight_only.weight_only_linear:
            args = QuantizedLinearArgs(*node.args[:6])
            if _shape(gm, args.scale)[-1] == 1 or native:
                readers.setdefault(args.x, []).append(node)
    for x, linears in readers.items():
        if len(linears) < 2:
            continue
        with gm.graph.inserting_before(linears[0]):
            planes = gm.graph.call_function(weight_only.shared_planes, (x, native), {"isa": isa})
        for linear in linears:
            linear.args = (*linear.args[:6], planes, *linear.args[7:])


_SWAPS = {
    fxc_ops.int8_linear.default: _int8_linear,
    fxc_ops.quantized_linear.default: _quantized_linear,
    fxc_ops.sparse_nm_linear.default: _sparse_nm_linear,
}
