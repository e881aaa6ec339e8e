"""The attention regions of a graph, for prune{pattern=head}: which nodes the heads flow through.

An attention is found from its core (aten.scaled_dot_product_attention, or a softmax computed from a
matmul whose result feeds a matmul): walking back from the core through ops that keep heads apart
gives the *producers* (the linears whose output rows are heads: q/k/v, or a fused qkv); flooding
forward from them gives the *region* (view, transpose, rotary embedding, repeat_kv, the core, the
merge back) and the *consumers* (the linears reading the merged heads: o_proj). Region nodes that are graph
outputs (a KV-cache step graph's new keys and values, fxc/frontend/kv_cache.py) are its `outputs`: the trace
allows them only with every head kept. A head flowing into any other op (a norm over all heads, ...) is
`Unmatched(node, reason)`.
The op sets here are the ops passes/prune/heads_trace.py models. Reads the graph; writes nothing.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import sympy
import torch
import torch.fx

from fxc.passes.aten_groups import COPIES, POINTWISE

aten = torch.ops.aten
UNARY = POINTWISE | COPIES | {
    aten.to.device, aten.to.dtype_layout, aten._to_copy.default, aten.exp.default, aten.rsqrt.default,
    aten.sqrt.default, aten.pow.Tensor_Scalar, aten.detach.default, aten.contiguous.default,
}  # fmt: skip
BINARY = {
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.maximum.default,
    aten.minimum.default, aten.masked_fill.Scalar, aten.where.self,
}  # fmt: skip
RESHAPE = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}
REDUCE = {aten.mean.dim, aten.sum.dim_IntList, aten.amax.default}
SOFTMAX = {aten.softmax.int, aten._softmax.default, aten._log_softmax.default, aten.log_softmax.int}
MATMUL = {aten.matmul.default, aten.bmm.default}
SHAPE_OPS = {
    aten.transpose.int, aten.permute.default, aten.unsqueeze.default, aten.squeeze.dim, aten.slice.Tensor,
    aten.select.int, aten.cat.default, aten.expand.default, aten.chunk.default, aten.split.Tensor,
    aten.split_with_sizes.default, operator.getitem,
}  # fmt: skip
SDPA = aten.scaled_dot_product_attention.default
KNOWN = UNARY | BINARY | RESHAPE | REDUCE | SOFTMAX | MATMUL | SHAPE_OPS | {SDPA}
IGNORED = {aten._assert_tensor_metadata.default}
SIZE = aten.sym_size.int  # a size read off a region node: checked (must be a plain dim), not followed


class Unmatched(Exception):
    def __init__(self, node: torch.fx.Node, reason: str):
        self.node, self.reason = node, reason
        super().__init__(f"{node.name}: {reason}")


@dataclass
class Region:
    core: torch.fx.Node
    producers: list[torch.fx.Node]
    nodes: list[torch.fx.Node]  # graph order
    consumers: list[torch.fx.Node]
    outputs: list[torch.fx.Node] = field(default_factory=list)  # region nodes that are also graph outputs


def cores(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    """sdpa nodes, and for eager attention (softmax(q @ k^T ...) @ v) the matmul with v."""
    found = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is SDPA:
            found.append(node)
        elif node.op == "call_function" and node.target in SOFTMAX:
            found += _probs_matmul(node)
    return found


def _probs_matmul(softmax: torch.fx.Node, hops: int = 4) -> list[torch.fx.Node]:
    """[the matmul that applies these probabilities to v] if the scores come from a matmul, else []."""
    node = softmax.args[0]
    for _ in range(hops):  # scores = q @ k^T, then scaled / masked
        if not isinstance(node, torch.fx.Node) or node.op != "call_function" or node.target in MATMUL:
            break
        node = node.args[0] if node.target in UNARY | BINARY else None
    if not (isinstance(node, torch.fx.Node) and node.target in MATMUL):
        return []
    frontier = [softmax]
    for _ in range(hops):  # probs (maybe dropped out / cast) @ v
        users = [u for f in frontier for u in f.users]
        matmuls = [u for u in users if u.target in MATMUL]
        if matmuls:
            return matmuls[:1]
        frontier = [u for u in users if u.target in UNARY]
    return []


def feeding_linears(core: torch.fx.Node, linears: set[torch.fx.Node]) -> list[torch.fx.Node]:
    """The linears whose output reaches `core` through ops that keep heads apart."""
    producers, seen, stack = [], set(), [core]
    while stack:  # back from the core to the linears whose rows feed it
        for arg in stack.pop().all_input_nodes:
            if arg in seen:
                continue
            seen.add(arg)
            if arg in linears:
                producers.append(arg)
            elif arg.op == "call_function" and arg.target in KNOWN:
                stack.append(arg)
    return producers


def find_region(core: torch.fx.Node, linears: set[torch.fx.Node]) -> Region:
    producers = feeding_linears(core, linears)
    if not producers:
        raise Unmatched(core, "no linear layer feeds it through ops that keep heads apart")
    region, consumers, outputs, todo = set(), [], [], list(producers)
    while todo:  # forward from the producers: the head space
        node = todo.pop()
        for user in node.users:
            if user in region or user in consumers or (user.op == "call_function" and user.target in IGNORED):
                continue
            if user.op == "output":  # a KV-cache step's new keys / values: kept whole (checked by the trace)
                outputs.append(node)
            elif user in linears and user.args[0] is node and node not in user.args[1:]:
                if user in producers:
                    raise Unmatched(user, "a linear both produces and consumes the heads")
                consumers.append(user)
            elif user.op == "call_function" and user.target in KNOWN | {SIZE}:
                region.add(user)
                if user.target is not SIZE:
                    todo.append(user)
            else:
                raise Unmatched(user, f"the heads flow into {op_name(user)}, which is not known to keep them apart")
    order = {n: i for i, n in enumerate(core.graph.nodes)}
    by_order = lambda nodes: sorted(nodes, key=order.__getitem__)  # noqa: E731
    if core not in region:
        raise Unmatched(core, "the attention core is not reached from its own projections")
    return Region(core, by_order(producers), by_order(region), by_order(consumers), by_order(set(outputs)))


def blocker(side: torch.fx.Node) -> str:
    """Why a side input is not part of the head space: the first op above it not known to keep heads apart."""
    seen, stack = set(), [side]
    while stack:
        node = stack.pop()
        if node.op == "call_function" and node.target not in KNOWN:
            return f" and reaches it through {op_name(node)} (%{node.name}), which is not known to keep heads apart"
        for arg in node.all_input_nodes if node.op == "call_function" else []:
            if arg not in seen and isinstance(arg.meta.get("val"), torch.Tensor):
                seen.add(arg)
                stack.append(arg)
    return ""


def op_name(node: torch.fx.Node) -> str:
    return str(node.target).replace("torch.ops.", "") if node.op == "call_function" else node.op


# -- reshape arithmetic (shared with the trace) ---------------------------------------------------------


def size_hint(size) -> int | None:
    return size if isinstance(size, int) else size.node.hint


def size_expr(size):
    return sympy.Integer(size) if isinstance(size, int) else size.node.expr


def reshape_groups(node, in_shape: list, out_shape: list) -> list[tuple[list[int], list[int]]]:
    """Pair consecutive input and output dims of a reshape whose sizes multiply to the same value."""
    groups, i, j = [], 0, 0
    while i < len(in_shape) or j < len(out_shape):
        if groups and (i == len(in_shape) or j == len(out_shape)):  # trailing size-1 dims join the last group
            rest_in, rest_out = list(range(i, len(in_shape))), list(range(j, len(out_shape)))
            if any(size_hint(in_shape[d]) != 1 for d in rest_in) or any(size_hint(out_shape[d]) != 1 for d in rest_out):
                raise Unmatched(node, "cannot pair the reshape's input and output dimensions")
            groups[-1][0].extend(rest_in)
            groups[-1][1].extend(rest_out)
            break
        ins, outs, p_in, p_out = [], [], 1, 1
        while not ins or not outs or p_in != p_out:
            grow_in = i < len(in_shape) and (not ins or p_in < p_out or j >= len(out_shape))
            if grow_in:
                ins.append(i)
                p_in *= size_hint(in_shape[i]) or 0
                i += 1
            elif j < len(out_shape):
                outs.append(j)
                p_out *= size_hint(out_shape[j]) or 0
                j += 1
            else:
                raise Unmatched(node, "cannot pair the reshape's input and output dimensions")
        expr_in = sympy.Mul(*[size_expr(in_shape[d]) for d in ins])
        expr_out = sympy.Mul(*[size_expr(out_shape[d]) for d in outs])
        if sympy.simplify(expr_in - expr_out) != 0:
            raise Unmatched(node, f"reshape dims {ins} -> {outs} do not match symbolically")
        groups.append((ins, outs))
    return groups


def head_blocks(node, labels: tuple, inner: int) -> tuple:
    """Split a head axis into blocks of `inner` positions: each block must be one whole head."""
    if len(labels) % inner:
        raise Unmatched(node, f"{len(labels)} positions do not split into blocks of {inner}")
    out = []
    for start in range(0, len(labels), inner):
        block = labels[start : start + inner]
        first = block[0][1] if isinstance(block[0], tuple) else None
        if all(isinstance(b, tuple) and b[0] == "merge" and b[1] == first and b[2] == i for i, b in enumerate(block)):
            out.append(first)
            continue
        rows = [b[2] if isinstance(b, tuple) and b[0] == "row" and b[1] == first else None for b in block]
        if None in rows or rows[0] % inner or rows != list(range(rows[0], rows[0] + inner)):
            raise Unmatched(node, f"the view splits the rows into blocks of {inner} that are not whole heads")
        out.append(("head", block[0][1], rows[0] // inner, inner))
    return tuple(out)
