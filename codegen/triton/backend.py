"""The `triton` backend: each compressed linear plus its epilogue becomes one generated Triton kernel;
every other node runs through torch.

    cm = fxc.compile(model.cuda(), passes="quantize{bits=4,group-size=128}", example_inputs=(ids,),
                     backend="triton", backend_options={"autotune": True})
    cm.runner.summary()          # which nodes were fused into which kernels, which fell back
    cm.runner.source("mul_19")   # the kernel text of one fused call (names: cm.runner.calls)

Method tree of `TritonBackend.compile(gm, example_inputs)`:

    check_environment    triton importable; CUDA tensors, or Triton's interpreter (TRITON_INTERPRET=1)
    partition            codegen/triton/partition.py: fxc op + elementwise chain -> FusionGroup
    lower                a copy of the graph with one call_function(FusedLinear) per group;
                         FusedLinear (codegen/triton/picker.py) picks the kernel per call, renders
                         its template, loads it through the KernelCache, autotunes it once per shape
                         and runs it through the kernel file's launch wrapper (codegen/triton/kernels/)
    -> TritonProgram     an nn.Module running the lowered graph, with summary()/source()/kernels()

Options (backend_options; declared fields with their help, checked like the other backends' options):
fuse_epilogue (fold elementwise followers into the kernel), autotune (time the template's config
table on the GPU; off: its first config), decode_max_m (largest M the GEMV template serves),
block_sparse_block / block_sparse_min_zero (a dense linear whose weight has at least that fraction of
all-zero block x block tiles runs the block-sparse template; above 1: never), cache_dir (where
generated kernel files go; default $XDG_CACHE_HOME/fxc/triton, else ~/.cache/fxc/triton),
poison_outputs (fill outputs with NaN before each launch, so an element a kernel fails to write shows
up; for tests).
Inference only: the kernels record no autograd history. The IR `gm` is never modified; the
lowered graph shares its tensors. Writes kernel source files under cache_dir.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.fx

from fxc.api.backend import Backend
from fxc.errors import BackendError
from fxc.ir.ops import node_arguments
from fxc.passmgr.options import option, validate_options

INTERPRETER_HINT = (
    "to run the Triton kernels on the CPU (slowly, for testing), start Triton's interpreter: set "
    "TRITON_INTERPRET=1 in the environment before triton is imported (e.g. `TRITON_INTERPRET=1 python ...`)"
)


@dataclass(frozen=True)
class TritonBackend(Backend):
    """Lower each compressed linear plus its epilogue to one generated Triton kernel; the rest runs in torch."""

    name: ClassVar[str] = "triton"
    fuse_epilogue: bool = option(True, "fold the elementwise followers of each compressed linear into its kernel")
    autotune: bool = option(True, "time the template's config table on the GPU once per shape (off: its first config)")
    decode_max_m: int = option(16, "largest M (rows) the GEMV template serves (the template's limit is 16)",
                               low=0, high=16)
    block_sparse_block: int = option(64, "tile size of the block-sparse template", choices=(16, 32, 64, 128))
    block_sparse_min_zero: float = option(
        0.3, "a dense linear with at least this fraction of all-zero weight tiles runs the block-sparse template "
        "(above 1: never)",
    )
    cache_dir: str | os.PathLike | None = option(
        None, "folder of the generated kernel files (default: $XDG_CACHE_HOME/fxc/triton, else ~/.cache/fxc/triton)"
    )
    poison_outputs: bool = option(
        False, "fill outputs with NaN before each launch, so an element a kernel fails to write shows up (tests)"
    )

    def __post_init__(self):
        validate_options(self)

    def compile(self, gm: torch.fx.GraphModule, example_inputs) -> TritonProgram:
        interpret = check_environment(gm, example_inputs)
        from fxc.codegen.triton.cache import KernelCache
        from fxc.codegen.triton.partition import BlockSparse, partition

        cache = KernelCache(self.cache_dir, interpret=interpret, autotune=self.autotune)
        block_sparse = None
        if self.block_sparse_min_zero <= 1:
            block_sparse = BlockSparse(self.block_sparse_block, self.block_sparse_min_zero)
        part = partition(gm, fuse_epilogue=self.fuse_epilogue, block_sparse=block_sparse)
        module, calls = self.lower(gm, part, cache)
        return TritonProgram(module, calls, part, cache)

    def lower(self, gm: torch.fx.GraphModule, part, cache):
        from fxc.codegen.triton.picker import FusedLinear

        graph = torch.fx.Graph()
        copies: dict[torch.fx.Node, torch.fx.Node] = {}
        graph.output(graph.graph_copy(gm.graph, copies))
        graph._codegen = copy.deepcopy(gm.graph._codegen)
        calls = {}
        for group in part.groups:
            name = group.output.name
            out_val = group.output.meta.get("val")
            call = FusedLinear(
                group.op_node.target, group.epilogue, cache, name=f"fused_{name}",
                out_dtype=out_val.dtype if isinstance(out_val, torch.Tensor) else None,
                fallback=group_module(group), decode_max_m=self.decode_max_m,
                poison_outputs=self.poison_outputs,
                block=self.block_sparse_block,
            )
            last = copies[group.output]
            mapped = lambda a: copies[a] if isinstance(a, torch.fx.Node) else a
            args = tuple(mapped(a) for a in node_arguments(group.op_node)) + tuple(copies[o] for o in group.operands)
            with graph.inserting_before(last):
                fused = graph.call_function(call, args)
            fused.meta.update({k: v for k, v in last.meta.items() if k == "val" or k.startswith("fxc.")})
            fused.meta["stack_trace"] = last.meta.get("stack_trace")
            last.replace_all_uses_with(fused)
            for node in reversed(group.nodes):
                graph.erase_node(copies[node])
            copies[group.output] = fused  # later groups that read this output read the fused call
            calls[name] = call
        module = torch.fx.GraphModule(gm, graph)
        module.recompile()
        return module, calls


class TritonProgram(torch.nn.Module):
    """The callable backend="triton" returns: the lowered graph plus what it fused and compiled.

    module        the lowered GraphModule (print(module.code) shows the fused calls)
    calls         {output node name: FusedLinear}
    partition     the Partition (groups fused, fxc ops left to torch and why)
    summary()     fused groups, fallbacks, and per call the templates launched and torch fallbacks
    source(name)  kernel text the fused call `name` last launched; kernels() every compiled source
    """

    def __init__(self, module: torch.fx.GraphModule, calls: dict, part, cache):
        super().__init__()
        self.module = module
        self.calls = calls
        self.partition = part
        self.cache = cache

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def kernels(self) -> list:
        return self.cache.entries()

    def source(self, name: str) -> str:
        if name not in self.calls:
            raise KeyError(f"no fused call '{name}'; fused calls: {', '.join(self.calls) or 'none'}")
        return self.calls[name].source()

    def summary(self) -> str:
        lines = [self.partition.summary()]
        for name, call in self.calls.items():
            launched = ", ".join(f"{t} x{c}" for t, c in call.launches.items()) or "not run yet"
            lines.append(f"  {name}: {launched}")
            lines += [f"    ran in torch x{c}: {reason}" for reason, c in call.fallbacks.items()]
        lines.append(f"  {len(self.cache)} kernel sources compiled (cache: {self.cache.directory})")
        return "\n".join(lines)

    def report_notes(self) -> list[str]:
        return self.summary().splitlines()


def check_environment(gm: torch.fx.GraphModule, example_inputs) -> bool:
    """Raise BackendError unless the kernels can run; return whether Triton's interpreter is on."""
    if importlib.util.find_spec("triton") is None:
        raise BackendError("backend 'triton' needs the triton package: pip install triton (or fxc[triton])")
    from fxc.codegen.triton.cache import interpreter_active

    if interpreter_active():
        return True
    tensors = [t for t in list(gm.parameters()) + list(gm.buffers())]
    tensors += [t for t in torch.utils._pytree.tree_leaves(example_inputs) if isinstance(t, torch.Tensor)]
    devices = sorted({t.device.type for t in tensors})
    if not torch.cuda.is_available():
        raise BackendError(f"backend 'triton' needs a CUDA GPU and none is available; {INTERPRETER_HINT}")
    if devices != ["cuda"]:
        raise BackendError(
            f"backend 'triton' needs the model and its inputs on a CUDA device; found {', '.join(devices) or 'no'} "
            f"tensors. Move them with model.cuda() before fxc.compile, or {INTERPRETER_HINT}"
        )
    return False


def group_module(group) -> torch.fx.GraphModule:
    """The group's nodes as a small torch graph taking the fused call's arguments (its fallback)."""
    graph = torch.fx.Graph()
    op_args = node_arguments(group.op_node)
    inputs = [graph.placeholder(f"arg{i}") for i in range(len(op_args) + len(group.operands))]
    env = {operand: inputs[len(op_args) + i] for i, operand in enumerate(group.operands)}
    env[group.op_node] = graph.call_function(group.op_node.target, tuple(inputs[: len(op_args)]))
    for node in group.epilogue_nodes:
        env[node] = graph.node_copy(node, lambda a: env[a])
    graph.output(env[group.output])
    return torch.fx.GraphModule(torch.nn.Module(), graph)

