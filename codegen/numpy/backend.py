"""The `numpy` backend: fxc's reference semantics and a CPU backend with no torch on its run path.

    cm = fxc.compile(model, passes="...", example_inputs=(x,), backend="numpy")
    cm(x)                      # torch tensors in, torch tensors out (same structure as the model)
    cm.runner.code             # the generated numpy function
    cm.runner.notes            # kernel choices (sparse vs dense, int8 GEMM chunks, ...)
    cm.runner.run_numpy(*arrays)   # the flat numpy function itself

`compile` lowers the graph once (codegen/numpy/lowering.py); every op it cannot lower exactly is
reported at once, each with its node and the source line it was traced from, as a BackendError,
so nothing fails later at call time. At the boundary, inputs are flattened by the graph's own
input spec (`gm._in_spec`: positional and keyword inputs, as the traced model took them),
converted to numpy without copies, and outputs are converted back and rebuilt with the graph's
output spec (a Hugging Face ModelOutput stays a ModelOutput). Reads the graph; writes nothing.

Files: lowering.py (graph -> generated function), context.py (dtype map, op-table decorators),
op tables ops/{elementwise,reduce,shape,create,nn,conv,norm,symbolic,fxc_ops}.py, quant.py
(quantized formats, exact int8 GEMM), and codegen/common/nm_sparse.py (CSR vs dense choice).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.fx
import torch.fx._pytree as fx_pytree
import torch.utils._pytree as pytree

from fxc.api.backend import Backend
from fxc.codegen.common import nm_sparse
from fxc.codegen.numpy import lowering
from fxc.codegen.numpy.lowering import LoweringProblem, NumpyProgram
from fxc.errors import BackendError, describe_node
from fxc.passmgr.options import option, validate_options


@dataclass(frozen=True)
class NumpyBackend(Backend):
    """Lower the compressed IR to numpy (the reference: every op, integer GEMMs exact)."""

    name: ClassVar[str] = "numpy"
    sparse_crossover: float | None = option(
        None, "density at or below which N:M sparse linears use CSR (default: codegen/common/nm_sparse.py)",
        low=0.0, high=1.0,
    )

    def __post_init__(self):
        validate_options(self)

    @property
    def crossover(self) -> nm_sparse.Crossover:
        if self.sparse_crossover is None:
            return nm_sparse.NUMPY_CROSSOVER
        return nm_sparse.Crossover(self.sparse_crossover, self.sparse_crossover)

    def unsupported(self, gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
        _, problems = lowering.lower(gm, self)
        return [p.node for p in problems]

    def compile(self, gm: torch.fx.GraphModule, example_inputs: Any = None) -> NumpyModule:
        program, problems = lowering.lower(gm, self)
        if problems:
            raise BackendError(unsupported_message(problems))
        return NumpyModule(gm, program)


def unsupported_message(problems: list[LoweringProblem]) -> str:
    lines = [f"the numpy backend cannot lower {len(problems)} node(s):"]
    lines += [f"  {describe_node(p.node)}\n      -> {p.reason}" for p in problems]
    lines.append("  use backend='torch' for this model, or rewrite these ops before lowering")
    return "\n".join(lines)


class NumpyModule:
    """The compiled callable: torch in, numpy inside, torch out."""

    def __init__(self, gm: torch.fx.GraphModule, program: NumpyProgram):
        self.program = program
        self._signature, self._in_spec, self._positional = _input_layout(gm)
        output = next(n for n in gm.graph.nodes if n.op == "output")
        leaves = pytree.tree_leaves(output.args[0])
        self._tensor_outputs = [isinstance(n, torch.fx.Node) and isinstance(n.meta.get("val"), torch.Tensor)
                                for n in leaves]
        info = getattr(gm.graph._codegen, "pytree_info", None)
        self._out_spec = info.out_spec if info is not None and info.out_spec is not None else program.out_spec

    @property
    def code(self) -> str:
        return self.program.code

    @property
    def notes(self) -> list[str]:
        return self.program.notes

    def report_notes(self) -> list[str]:
        """Kernel choices, for CompiledModule.report()."""
        return [f"numpy backend: {note}" for note in self.program.notes]

    def run_numpy(self, *flat_inputs: Any) -> list[Any]:
        """The numpy function: flat numpy inputs in placeholder order -> flat outputs."""
        with np.errstate(all="ignore"):  # torch does not warn on overflow to inf or 0/0
            return self.program.fn(*flat_inputs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        flat = self._flatten(args, kwargs)
        outputs = self.run_numpy(*[_to_numpy(x) for x in flat])
        leaves = [_to_torch(v) if is_tensor else v for v, is_tensor in zip(outputs, self._tensor_outputs)]
        return pytree.tree_unflatten(leaves, self._out_spec)

    def _flatten(self, args: tuple, kwargs: dict) -> list[Any]:
        bound = self._signature.bind(*args, **kwargs).arguments
        names = list(self._signature.parameters)
        if self._in_spec is None:
            return [bound[n] for n in names]
        positional = [bound[n] for n in names[: self._positional]]
        keywords = {n: bound[n] for n in names[self._positional :]}
        return fx_pytree.tree_flatten_spec((positional, keywords), self._in_spec)


def _input_layout(gm: torch.fx.GraphModule) -> tuple[inspect.Signature, Any, int]:
    """The forward signature of the graph, its input spec and how many inputs the spec takes
    positionally (the rest by keyword)."""
    info = getattr(gm.graph._codegen, "pytree_info", None)
    placeholders = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
    names = list(info.orig_args) if info is not None else placeholders
    signature = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    if info is None or info.in_spec is None:
        return signature, None, len(names)
    spec = info.in_spec
    positional = spec.child(0).num_children if spec.type is tuple and spec.num_children == 2 else len(names)
    return signature, spec, positional


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16:
            raise BackendError("numpy has no bfloat16: convert the inputs (and model) to float32 for the numpy backend")
        return value.detach().cpu().numpy()
    return value


def _to_torch(value: Any) -> torch.Tensor:
    return torch.from_numpy(np.require(np.asarray(value), requirements=["C", "W"]))
