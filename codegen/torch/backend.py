"""The `torch` backend: runs the compressed GraphModule with torch, fxc ops through fast kernels.

    cm = fxc.compile(model, passes="quantize{act-bits=8}", example_inputs=(x,), backend="torch")
    cm.runner.notes        # what each fxc op became, e.g. "linear: int8_linear -> torch._int_mm"
    fxc.compile(..., backend="torch", backend_options={"fast": False})   # the reference ops as is
    fxc.compile(..., backend="torch", backend_options={"torch_compile": True})  # and under torch.compile
    fxc.compile(..., backend="torch", backend_options={"native": False})  # no native (C) kernel

With `fast` (the default) compile builds a copy of the graph (sharing the module's tensors) in which
each fxc op node is swapped for a fast implementation of the same semantics (codegen/torch/fast_ops.py):

    fxc.int8_linear        torch._int_mm (VNNI/AMX int8 GEMM); bit-exact with the reference; linears
                           reading the same input (q/k/v, gate/up) quantize it once, shared
    fxc.quantized_linear   on a CPU with AMX-int8 (and the option `native`, on by default): the native
                           plane kernel (codegen/torch/native/); else per-channel scales and few rows
                           (decode): x split into int8 planes, one torch._int_mm over the int8 weight;
                           else the float weight built tile by tile in a reused scratch buffer + addmm
                           (codegen/torch/weight_only.py)
    fxc.sparse_nm_linear   torch CSR (MKL sparse) when density <= crossover, else densified once
    fxc.quantized_conv2d   the reference op (conv weights are small)

The options are saved with the model (fxc.save) like every backend option. The native kernel is
compiled once per machine into $XDG_CACHE_HOME/fxc/native (default ~/.cache/fxc/native).
Reads the graph; never changes it (the compiled module's `.graph` stays the canonical IR).
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
from fxc.codegen.torch.native import build as native_build
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
        True, "use the native CPU kernel of weight-only linears where the CPU has AMX-int8 (compiled once per machine)"
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
        _share_int8_planes(fast, self.native_loaded())
        ir.remove_unused_tensors(fast)  # drops only this copy's references to the packed N:M tensors
        fast.graph.lint()
        fast.notes = notes
        fast.report_notes = [f"torch backend: {note}" for note in notes].copy  # read by CompiledModule.report
        return fast

    def native_loaded(self) -> bool:
        """Whether weight-only linears may take the native AMX kernel: the option, and the kernel loaded."""
        return self.native and native_build.plane_kernel() is not None

    def native_status(self) -> str:
        """Which native kernel runs, or why none does."""
        return native_build.plane_kernel_status() if self.native else "native kernels off (option native=False)"

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


def _int8_linear(backend: TorchBackend, gm: torch.fx.GraphModule, node: torch.fx.Node) -> str:
    _swap(node, fast_ops.int8_linear_int_mm, tuple(Int8LinearArgs.of(node)))
    return "int8_linear -> torch._int_mm (int8 x int8 -> int32, exact)"


def _quantized_linear(backend: TorchBackend, gm: torch.fx.GraphModule, node: torch.fx.Node) -> str:
    args = QuantizedLinearArgs.of(node)
    qweight, scale, zero_point, bits = args.qweight, args.scale, args.zero_point, args.bits
    rows, stored = _shape(gm, qweight)
    columns = stored * (2 if bits == 4 else 1)
    # (*args, shared planes, native): _share_int8_planes fills in the shared planes
    _swap(node, weight_only.weight_only_linear, (*args, None, backend.native))
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
    if groups != 1:
        why = "groups of a multiple of 64 columns" if backend.native_loaded() else native
        return f"quantized_linear {kind} {scales} -> {dequantized} (int8 planes: {why})"
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


def _share_activation_quantization(gm: torch.fx.GraphModule) -> None:
    """Dynamic int8 linears reading the same tensor quantize it once: one quantize_per_token node
    feeds them all (the per-token quantization is a function of the input alone)."""
    readers: dict[torch.fx.Node, list[torch.fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is fast_ops.int8_linear_int_mm:
            args = Int8LinearArgs(*node.args[:5])
            if args.input_scale is None:
                readers.setdefault(args.x, []).append(node)
    for x, linears in readers.items():
        if len(linears) < 2:
            continue
        with gm.graph.inserting_before(linears[0]):
            quantized = gm.graph.call_function(fast_ops.quantize_per_token, (x,))
        for linear in linears:
            linear.args = (*linear.args[:5], quantized)


def _share_int8_planes(gm: torch.fx.GraphModule, native: bool) -> None:
    """Per-channel weight-only linears reading the same tensor (q/k/v, gate/up) split it into int8
    planes once: one shared_planes node feeds them all (it returns None where no plane kernel applies).
    `native`: the AMX kernel may run (it takes any groups); the nodes are weight_only_linear(*QuantizedLinearArgs,
    shared planes, native)."""
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
            planes = gm.graph.call_function(weight_only.shared_planes, (x, native))
        for linear in linears:
            linear.args = (*linear.args[:6], planes, *linear.args[7:])


_SWAPS = {
    fxc_ops.int8_linear.default: _int8_linear,
    fxc_ops.quantized_linear.default: _quantized_linear,
    fxc_ops.sparse_nm_linear.default: _sparse_nm_linear,
}
