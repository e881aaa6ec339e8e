"""Partition a compressed graph into fused kernels and torch: each lowered fxc op plus the elementwise
chain after it becomes one group; every other node stays a torch node.

    part = partition(gm, block_sparse=BlockSparse(block=64, min_zero=0.3))
    part.groups      [FusionGroup(op node, epilogue nodes, Epilogue, operand nodes)]
    part.fallbacks   [Fallback(node, reason)]: fxc op nodes no template serves (they run in torch)

Dense aten.linear nodes join too when their constant weight has at least `min_zero` of its
[block, block] tiles all zero (block-sparse pruning): the block-sparse template skips those tiles.

A chain grows from the op node while the value has exactly one user and that user is fusable:

    aten.add / aten.mul (Tensor or Scalar) with the value as one operand and, as the other, a Python
        number, a float [..., N] tensor of the op's output shape, or an [N] row (bias, scale);
        add only with alpha=1; the other operand must not come from the chain itself
    aten.relu / silu / sigmoid / tanh / gelu (approximate "none" or "tanh")

and the node's shape is the op's output shape (no broadcasting up). The SwiGLU multiply fuses into
whichever projection comes first in graph order (`silu(gate(x)) * up(x)` → [gate, silu, mul by up]).
The fused call is placed where the chain's last node was; every input of the chain is defined before
that point, so the graph stays topologically sorted. Shapes are compared as text so symbolic sizes
(dynamic batch or sequence) work. Reads the graph (node.meta["val"]) and the constant weights of
dense linears (their block map); writes nothing; preserves the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx

from fxc import ir
from fxc.codegen.triton.epilogue import Epilogue, Step
from fxc.codegen.triton.kernels.block_sparse import block_map
from fxc.codegen.triton.picker import FLOAT_DTYPES, LOWERED_OPS, unsupported_reason
from fxc.ir import ops

aten = torch.ops.aten
BINARY_TARGETS = {
    aten.add.Tensor: "add", aten.add.Scalar: "add", aten.mul.Tensor: "mul", aten.mul.Scalar: "mul",
}
UNARY_TARGETS = {
    aten.relu.default: "relu", aten.silu.default: "silu", aten.sigmoid.default: "sigmoid",
    aten.tanh.default: "tanh", aten.gelu.default: "gelu",
}


@dataclass(frozen=True)
class BlockSparse:
    """Which dense linears go to the block-sparse template: weights with >= min_zero zero tiles."""

    block: int = 64
    min_zero: float = 0.3


@dataclass
class FusionGroup:
    op_node: torch.fx.Node
    epilogue_nodes: list[torch.fx.Node] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    operands: list[torch.fx.Node] = field(default_factory=list)  # external epilogue tensors, in step order
    note: str = ""  # e.g. "block-sparse, 50% zero tiles"

    @property
    def nodes(self) -> list[torch.fx.Node]:
        return [self.op_node, *self.epilogue_nodes]

    @property
    def output(self) -> torch.fx.Node:
        return self.nodes[-1]

    @property
    def epilogue(self) -> Epilogue:
        return Epilogue(tuple(self.steps))

    def describe(self) -> str:
        op = str(self.op_node.target).replace("torch.ops.", "").replace(".default", "")
        op += f" ({self.note})" if self.note else ""
        return f"{op} + {self.epilogue.describe()}" if self.steps else op


@dataclass(frozen=True)
class Fallback:
    node: torch.fx.Node
    reason: str


@dataclass
class Partition:
    groups: list[FusionGroup]
    fallbacks: list[Fallback]

    def summary(self) -> str:
        fused_nodes = sum(len(g.nodes) for g in self.groups)
        lines = [f"triton: {len(self.groups)} fused kernels ({fused_nodes} graph nodes), "
                 f"{len(self.fallbacks)} fxc ops in torch"]
        lines += [f"  fused    {g.output.name}: {g.describe()}" for g in self.groups]
        lines += [f"  fallback {f.node.name}: {f.reason}" for f in self.fallbacks]
        return "\n".join(lines)


def partition(
    gm: torch.fx.GraphModule, fuse_epilogue: bool = True, block_sparse: BlockSparse | None = None
) -> Partition:
    groups, fallbacks = [], []
    claimed: set[torch.fx.Node] = set()
    for node in gm.graph.nodes:
        note = _block_sparse_note(gm, node, block_sparse) if block_sparse else None
        if node.op != "call_function" or not (ops.is_fxc_op(node.target) or note):
            continue
        reason = _static_reason(gm, node)
        if reason:
            if not note:  # a dense linear that cannot take the template simply stays dense
                fallbacks.append(Fallback(node, reason))
            continue
        group = FusionGroup(node, note=note or "")
        if fuse_epilogue:
            _grow(gm, group, claimed)
        claimed.update(group.nodes)
        groups.append(group)
    return Partition(groups, fallbacks)


def _block_sparse_note(gm: torch.fx.GraphModule, node: torch.fx.Node, policy: BlockSparse) -> str | None:
    if node.op != "call_function" or node.target != aten.linear.default:
        return None
    weight = node.args[1]
    if not (isinstance(weight, torch.fx.Node) and weight.op == "get_attr"):
        return None
    tensor = ir.get_tensor(gm, weight.target)
    if tensor.dim() != 2 or tensor.dtype not in FLOAT_DTYPES:
        return None
    zero = block_map(tensor.detach(), policy.block).zero
    return f"block-sparse, {zero:.0%} zero tiles" if zero >= policy.min_zero else None


def _static_reason(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str | None:
    if node.target not in LOWERED_OPS:
        return f"no Triton template for {str(node.target).replace('torch.ops.', '')}; runs in torch"
    args = tuple(_value(gm, a) for a in ops.node_arguments(node))
    if any(isinstance(a, torch.fx.Node) for a in args):
        return "an argument has no meta['val'] (shape and dtype unknown)"
    reason = unsupported_reason(node.target, args)
    return f"{reason}; runs in torch" if reason else None


def _grow(gm: torch.fx.GraphModule, group: FusionGroup, claimed: set[torch.fx.Node]) -> None:
    out_val = group.op_node.meta["val"]
    out_shape = _shape_text(out_val)
    width = str(out_val.shape[-1])
    current = group.op_node
    while len(current.users) == 1:
        user = next(iter(current.users))
        if user in claimed or user.op != "call_function" or "val" not in user.meta:
            return
        if _shape_text(user.meta["val"]) != out_shape or user.meta["val"].dtype not in FLOAT_DTYPES:
            return
        step = _unary_step(user, current) or _binary_step(gm, user, current, group, out_shape, width)
        if step is None:
            return
        group.epilogue_nodes.append(user)
        group.steps.append(step)
        current = user


def _unary_step(user: torch.fx.Node, current: torch.fx.Node) -> Step | None:
    kind = UNARY_TARGETS.get(user.target)
    if kind is None or user.args[0] is not current or len(user.args) > 2:
        return None
    if kind == "gelu":
        approximate = user.kwargs.get("approximate", user.args[1] if len(user.args) > 1 else "none")
        return Step("gelu_tanh" if approximate == "tanh" else "gelu")
    return Step(kind) if len(user.args) == 1 and not user.kwargs else None


def _binary_step(gm, user, current, group: FusionGroup, out_shape: str, width: str) -> Step | None:
    kind = BINARY_TARGETS.get(user.target)
    if kind is None or len(user.args) != 2 or user.kwargs.get("alpha", 1) != 1:
        return None
    if set(user.kwargs) - {"alpha"} or [a is current for a in user.args].count(True) != 1:
        return None
    other = user.args[1] if user.args[0] is current else user.args[0]
    if isinstance(other, (int, float)) and not isinstance(other, bool):
        return Step(kind, scalar=float(other))
    if not isinstance(other, torch.fx.Node) or other in group.nodes:
        return None
    val = _value(gm, other)
    if not isinstance(val, torch.Tensor) or val.dtype not in FLOAT_DTYPES:
        return None
    is_row = [str(d) for d in val.shape if str(d) != "1"] == [width]
    if _shape_text(val) != out_shape and not is_row:
        return None
    group.operands.append(other)
    return Step(kind, operand=len(group.operands) - 1)


def _value(gm: torch.fx.GraphModule, arg):
    """A node's value for checks: its meta['val'], or the tensor a get_attr names."""
    if not isinstance(arg, torch.fx.Node):
        return arg
    if "val" in arg.meta:
        return arg.meta["val"]
    return ir.get_tensor(gm, arg.target) if arg.op == "get_attr" else arg


def _shape_text(val) -> str:
    return "x".join(str(d) for d in val.shape)
