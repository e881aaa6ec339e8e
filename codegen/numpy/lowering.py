"""Lower a canonical fxc graph once, at compile time, to one Python function over numpy arrays.

Reads the GraphModule (nodes, meta['val'] dtypes, weights); writes nothing to the graph. The result
is a `NumpyProgram`: `fn(*flat_inputs) -> list[flat_outputs]` whose body is generated Python source
(`program.code`, inspectable) calling one kernel per node, so the run path is numpy only:

    def run(v_x):
        v_linear = k_linear(v_x, c_fc_weight, c_fc_bias)
        del v_x
        v_relu = k_relu(v_linear)
        ...
        return [v_linear_1]

Steps, in graph order: weights (`get_attr`) become read-only numpy arrays, shared with the module's
tensors (no copy); each call_function node gets its kernel from the op tables (codegen/numpy/ops/*.py);
a node whose inputs are all constants is evaluated now (constant folding: rotary tables, position
ids, folded BatchNorm scales); everything else becomes one line of the function, and each variable
is deleted after its last use. Nodes no table covers, and argument combinations a kernel cannot
reproduce exactly, are all collected and reported together (`LoweringProblem`), never found at
call time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.utils._pytree as pytree

from fxc import ir
from fxc.codegen.numpy.context import (
    NUMPY_DTYPES,
    LoweringContext,
    OpTable,
    Unsupported,
    numpy_dtype,
)
from fxc.codegen.numpy.ops import conv, create, elementwise, fxc_ops, nn, norm, reduce, shape, symbolic

_TABLES = (
    elementwise.TABLE, reduce.TABLE, shape.TABLE, nn.TABLE,
    conv.TABLE, norm.TABLE, create.TABLE, fxc_ops.TABLE, symbolic.TABLE,
)


def op_table() -> OpTable:
    """Every target the numpy backend lowers."""
    table: OpTable = {}
    for part in _TABLES:
        table.update(part)
    elementwise.add_in_place_variants(table)  # add_, copy_, masked_fill_, index_put_, ...
    return table


@dataclass
class LoweringProblem:
    node: torch.fx.Node
    reason: str


@dataclass
class NumpyProgram:
    fn: Callable[..., list]  # flat numpy inputs (placeholder order) -> flat outputs
    code: str
    out_spec: pytree.TreeSpec  # structure of the output node's argument (leaves = the flat outputs)
    notes: list[str] = field(default_factory=list)


def lower(gm: torch.fx.GraphModule, options: Any = None) -> tuple[NumpyProgram | None, list[LoweringProblem]]:
    """The numpy program of `gm`, or None and every problem found."""
    return _Lowerer(gm, options).run()


class _Lowerer:
    def __init__(self, gm: torch.fx.GraphModule, options: Any):
        self.gm = gm
        self.table = op_table()
        self.constants: dict[torch.fx.Node, Any] = {}
        self.ctx = LoweringContext(self.constants, options)
        self.globals: dict[str, Any] = {}
        self.lines: list[str] = []
        self.inputs: list[str] = []
        self.runtime: set[torch.fx.Node] = set()
        self.problems: list[LoweringProblem] = []
        self._arrays_by_tensor: dict[int, tuple[torch.Tensor, np.ndarray]] = {}
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        self.last_user = {n: max(n.users, key=order.__getitem__) for n in gm.graph.nodes if n.users}

    def run(self) -> tuple[NumpyProgram | None, list[LoweringProblem]]:
        output = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.inputs.append(_var(node))
                self.runtime.add(node)
            elif node.op == "get_attr":
                self._get_attr(node)
            elif node.op == "call_function":
                self._call(node)
            elif node.op == "output":
                output = node
            else:
                self.problems.append(LoweringProblem(node, f"'{node.op}' nodes are not canonical IR"))
        if self.problems:
            return None, self.problems
        leaves, out_spec = pytree.tree_flatten(output.args[0])
        self.lines.append(f"return [{', '.join(self._render(leaf) for leaf in leaves)}]")
        code = f"def run({', '.join(self.inputs)}):\n" + "\n".join("    " + line for line in self.lines) + "\n"
        namespace = dict(self.globals)
        exec(compile(code, "<fxc-numpy>", "exec"), namespace)  # noqa: S102  (our own generated source)
        return NumpyProgram(namespace["run"], code, out_spec, self.ctx.notes), []

    # -- nodes ------------------------------------------------------------------------------------

    def _get_attr(self, node: torch.fx.Node) -> None:
        tensor = ir.get_tensor(self.gm, node.target)
        try:
            numpy_dtype(tensor.dtype)
        except Unsupported as error:
            self.problems.append(LoweringProblem(node, str(error)))
            return
        known = self._arrays_by_tensor.get(id(tensor))
        if known is None:  # tied weights share one array; the tensor is kept so its id stays unique
            array = tensor.detach().cpu().numpy()
            array.flags.writeable = False  # a kernel must never write into the model's weights
            known = self._arrays_by_tensor[id(tensor)] = (tensor, array)
        self.constants[node] = known[1]

    def _call(self, node: torch.fx.Node) -> None:
        factory = self.table.get(node.target)
        if factory is None:
            self.problems.append(LoweringProblem(node, "no numpy kernel for this op"))
            return
        try:
            _check_output_dtypes(node)
            fn = factory(self.ctx, node)
        except Unsupported as error:
            self.problems.append(LoweringProblem(node, str(error)))
            return
        if fn is None:  # a check that is a no-op here (asserts on metadata)
            self.constants[node] = None
            return
        inputs = node.all_input_nodes
        if all(n in self.constants for n in inputs) and _foldable(node):
            args, kwargs = pytree.tree_map_only(torch.fx.Node, self.constants.__getitem__, (node.args, node.kwargs))
            args, kwargs = pytree.tree_map(_convert_constant, (args, kwargs))
            try:
                with np.errstate(all="ignore"):
                    value = fn(*args, **kwargs)
                for array in pytree.tree_leaves(value):
                    if isinstance(array, np.ndarray):
                        array.flags.writeable = False  # shared by every call: in-place ops must not write it
                self.constants[node] = value
            except Exception as error:  # it would fail the same way at run time: report it now
                self.problems.append(LoweringProblem(node, f"folding a constant failed: {error}"))
            return
        if any(n not in self.constants and n not in self.runtime for n in inputs):
            return  # an input already reported as a problem
        self.globals[f"k_{node.name}"] = fn
        rendered = [self._render(a) for a in node.args] + [f"{k}={self._render(v)}" for k, v in node.kwargs.items()]
        self.lines.append(f"{_var(node)} = k_{node.name}({', '.join(rendered)})")
        self.runtime.add(node)
        dead = [n for n in node.all_input_nodes if n in self.runtime and self.last_user.get(n) is node]
        dead += [node] if not node.users else []
        if dead:  # free what no later line reads (views keep their base alive, as in torch)
            self.lines.append(f"del {', '.join(_var(n) for n in dict.fromkeys(dead))}")

    # -- arguments --------------------------------------------------------------------------------

    def _render(self, arg: Any) -> str:
        if isinstance(arg, torch.fx.Node):
            if arg in self.constants:
                return self._bind(f"c_{arg.name}", self.constants[arg])
            return _var(arg)
        if isinstance(arg, list):
            return "[" + ", ".join(self._render(a) for a in arg) + "]"
        if isinstance(arg, tuple):
            return "(" + "".join(self._render(a) + ", " for a in arg) + ")"
        if arg is None or isinstance(arg, (bool, int, str)):
            return repr(arg)
        if isinstance(arg, float) and math.isfinite(arg):
            return repr(arg)
        return self._bind(f"c_{len(self.globals)}", _convert_constant(arg))

    def _bind(self, name: str, value: Any) -> str:
        self.globals[name] = value
        return name


def _var(node: torch.fx.Node) -> str:
    return f"v_{node.name}"


def _convert_constant(value: Any) -> Any:
    """A non-node argument as kernels see it: torch dtypes become numpy dtypes, tensors arrays."""
    if isinstance(value, torch.dtype):
        return NUMPY_DTYPES.get(value, value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def _check_output_dtypes(node: torch.fx.Node) -> None:
    for value in pytree.tree_leaves(node.meta.get("val")):
        if isinstance(value, torch.Tensor):
            numpy_dtype(value.dtype)


_NOT_FOLDABLE_SUFFIXES = ("_",)


def _foldable(node: torch.fx.Node) -> bool:
    """In-place ops write their input (never fold them into a constant); the rest are pure."""
    name = getattr(node.target, "_opname", None) or getattr(node.target, "__name__", "")
    return not (name.endswith(_NOT_FOLDABLE_SUFFIXES) and not name.startswith("__"))
