"""Where attention heads live in one attention region (passes/prune/heads_region.py), axis by axis.

`HeadTrace` follows every axis of every region node. An axis is plain (None: batch, tokens,
head_dim; pruning never touches it), `Tracked` (a label per position: which producer rows, which
head, which combination of q/k/v heads it carries) or `Copies` (a broadcast from `expand`: every
position holds the same data, as repeat_kv's n_rep axis). Labels: a producer row is
("row", producer, r); a view that splits rows into head_dim-sized blocks makes ("head", producer,
j, head_dim); elementwise ops / matmul / sdpa combine the heads they pair into a frozenset; a
reshape merging heads with head_dim makes ("merge", head label, i). Any op not modelled here, a
head axis that a side input does not broadcast over, an uneven split: `Unmatched(node, reason)`.

Run once on the whole model (every row) it describes the attention: which q/k/v heads each o_proj
column block combines. Run again with only the kept rows (and the kept number of repeat_kv copies)
it *proves* the pruned graph pairs the same heads: every label it meets must exist in the first
run at the same node and axis, and it yields the rewritten view/reshape/expand sizes.
A KV-cache step graph concatenates a graph input (the past keys / values) to the new ones and outputs the new
ones: both carry the kv heads, which must then all be kept (`Unmatched` otherwise, naming the cache).
Reads the graph; writes nothing.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx

from fxc.passes.prune.heads_region import (
    BINARY,
    MATMUL,
    REDUCE,
    RESHAPE,
    SDPA,
    SIZE,
    SOFTMAX,
    UNARY,
    Region,
    Unmatched,
    aten,
    blocker,
    head_blocks,
    op_name,
    reshape_groups,
    size_hint,
)

_CACHE = ("the keys and values of these heads are a KV cache ({}) whose layout pruning them would change (compile the "
          "model with kv_cache=False to prune kv heads)")


@dataclass(frozen=True)
class Tracked:
    labels: tuple


@dataclass(frozen=True)
class Copies:
    origin: tuple[str, int]  # (expand node name, dim)
    size: int


def _combine(labels: list) -> object:
    if all(label == labels[0] for label in labels):
        return labels[0]
    atoms = set()
    for label in labels:
        atoms |= label if isinstance(label, frozenset) else {label}
    return frozenset(atoms)


@dataclass
class HeadTrace:
    """Follow the head axes of `region` for the given producer rows and repeat counts (see module doc)."""

    region: Region
    rows: dict[torch.fx.Node, tuple]  # producer -> the row labels it keeps
    copies: dict[tuple[str, int], int] = field(default_factory=dict)  # expand axis -> copies kept
    states: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)  # node -> new size list (view/reshape/expand args)
    merged: dict = field(default_factory=dict)  # expand axis merged into a head axis (repeat_kv) -> copies
    columns: dict = field(default_factory=dict)  # consumer -> labels of its input columns

    def run(self) -> HeadTrace:
        for producer in self.region.producers:
            rank = producer.meta["val"].dim()
            self.states[producer] = [None] * (rank - 1) + [Tracked(self.rows[producer])]
        for node in self.region.nodes:
            self.states[node] = self._step(node)
        for consumer in self.region.consumers:
            state = self.states[consumer.args[0]]
            if not isinstance(state[-1], Tracked) or any(state[:-1]):
                raise Unmatched(consumer, "the linear reads the heads without merging them into its last dimension")
            self.columns[consumer] = state[-1].labels
        for node in self.region.outputs:  # a KV-cache step's new keys / values: the cache layout stays as it is
            shape = node.meta["val"].shape
            if any(axis is not None and self.length(node, d) != size_hint(shape[d])
                   for d, axis in enumerate(self.states[node])):
                raise Unmatched(node, _CACHE.format("a graph output"))
        return self

    def length(self, node: torch.fx.Node, dim: int) -> int:
        axis = self.states[node][dim]
        return len(axis.labels) if isinstance(axis, Tracked) else axis.size

    # -- one op ---------------------------------------------------------------------------------------------

    def _state(self, arg, lo: int = 0, hi: int | None = None) -> list[tuple]:
        """(axis, original size hint, operand) for dims lo:hi of an operand, region member or side input."""
        shape = arg.meta["val"].shape
        state = self.states.get(arg) or [None] * len(shape)
        return [(state[d], size_hint(shape[d]), arg) for d in range(len(shape))[lo:hi]]

    def _broadcast(self, node, operands: list[list[tuple]]) -> list:
        """Right-aligned elementwise combination of operands' axes; a head axis must be in every operand
        of size > 1 on that dim, paired position by position."""
        rank = max((len(o) for o in operands), default=0)
        out = []
        for d in range(rank):
            entries = [o[d - rank + len(o)] for o in operands if d - rank + len(o) >= 0]
            live = [e for e in entries if e[0] is not None or e[1] != 1]
            kinds = {type(e[0]) for e in live}
            if not kinds or kinds == {type(None)}:
                out.append(None)
            elif kinds == {Tracked}:
                lengths = {len(e[0].labels) for e in live}
                if len(lengths) > 1:
                    raise Unmatched(node, f"operands have {sorted(lengths)} heads on dim {d}")
                out.append(Tracked(tuple(_combine(list(ls)) for ls in zip(*(e[0].labels for e in live)))))
            elif kinds == {Copies} and len({e[0] for e in live}) == 1:
                out.append(live[0][0])
            else:
                side = next(e[2] for e in live if e[0] is None)
                raise Unmatched(node, f"%{side.name} is not broadcast over the head axis (dim {d}){blocker(side)}")
        return out

    def _step(self, node: torch.fx.Node) -> list:
        target, args = node.target, node.args
        rank = node.meta["val"].dim() if isinstance(node.meta.get("val"), torch.Tensor) else None
        if target in UNARY:
            return list(self.states[args[0]])
        if target in BINARY:
            return self._broadcast(node, [self._state(a) for a in args if isinstance(a, torch.fx.Node)])
        if target in RESHAPE:
            return self._reshape(node)
        if target in (aten.transpose.int, aten.permute.default):
            state = list(self.states[args[0]])
            if target is aten.transpose.int:
                a, b = args[1] % len(state), args[2] % len(state)
                state[a], state[b] = state[b], state[a]
                return state
            return [state[d % len(state)] for d in args[1]]
        if target is aten.unsqueeze.default:
            state = list(self.states[args[0]])
            state.insert(args[1] % rank, None)
            return state
        if target in (aten.squeeze.dim, aten.select.int):
            return self._drop_plain(node, [args[1]])
        if target in REDUCE:
            state = self._drop_plain(node, list(args[1]) if len(args) > 1 else [])
            keep = len(args) > 2 and args[2]
            return list(self.states[args[0]]) if keep else state
        if target in SOFTMAX:
            self._require_plain(node, args[0], args[1])
            return list(self.states[args[0]])
        if target is aten.slice.Tensor:
            return self._slice(node)
        if target is aten.cat.default:
            dim = (args[1] if len(args) > 1 else 0) % rank
            for t in args[0]:
                self._require_plain(node, t, dim)
            parts = [self._cache_input(node, self._state(t), args[0]) for t in args[0]]
            return self._broadcast(node, [p[:dim] + [(None, 1, p[dim][2])] + p[dim + 1 :] for p in parts])
        if target is aten.expand.default:
            return self._expand(node)
        if target in (aten.chunk.default, aten.split.Tensor, aten.split_with_sizes.default):
            return self._split(node)
        if target is operator.getitem:
            return list(self.states[args[0]][args[1]])
        if target in MATMUL:
            a, b = self._state(args[0]), self._state(args[1])
            if a[-1][0] is not None or b[-2][0] is not None:
                raise Unmatched(node, "the matmul contracts over a head axis")
            return self._broadcast(node, [a[:-2], b[:-2]]) + [a[-2][0], b[-1][0]]
        if target is SDPA:
            return self._sdpa(node)
        if target is SIZE:
            self._require_plain(node, args[0], args[1])
            return []
        raise Unmatched(node, f"{op_name(node)} is not modelled")

    def _cache_input(self, node, part: list[tuple], tensors) -> list[tuple]:
        """A graph input concatenated to region keys / values (a KV-cache step's past) carries their heads on the
        dims where its size is the region operand's original head count: it takes that head axis when every head
        is kept, and any pruning of those heads is refused (the cache layout would change)."""
        side = part[0][2] if part else None
        if not (isinstance(side, torch.fx.Node) and side.op == "placeholder"):
            return part
        members = [t for t in tensors if isinstance(t, torch.fx.Node) and t in self.states]
        out = list(part)
        for member in members:
            for d, axis in enumerate(self.states[member]):
                if axis is None or size_hint(member.meta["val"].shape[d]) != part[d][1]:
                    continue
                if self.length(member, d) != part[d][1]:
                    raise Unmatched(node, _CACHE.format(f"the graph input %{side.name}"))
                out[d] = (axis, part[d][1], side)
        return out

    def _require_plain(self, node, arg, dim: int) -> None:
        state = self.states.get(arg)
        if state is not None and state[dim % len(state)] is not None:
            raise Unmatched(node, f"{op_name(node)} works along a head axis (dim {dim})")

    def _drop_plain(self, node, dims: list[int]) -> list:
        state = self.states[node.args[0]]
        dims = [d % len(state) for d in dims] if dims else list(range(len(state)))
        for d in dims:
            self._require_plain(node, node.args[0], d)
        return [a for d, a in enumerate(state) if d not in dims]

    def _slice(self, node) -> list:
        state = self.states[node.args[0]]
        dim, start, end, step = (list(node.args[1:]) + [0, None, None, 1][len(node.args) - 1 :])[:4]
        if state[dim % len(state)] is not None:
            full = size_hint(node.args[0].meta["val"].shape[dim])
            if start not in (0, None) or step != 1 or not (end is None or (isinstance(end, int) and end >= full)):
                raise Unmatched(node, "a slice cuts through a head axis")
        return list(state)

    def _expand(self, node) -> list:
        source, sizes = node.args[0], list(node.args[1])
        state = [None] * (len(sizes) - len(self.states[source])) + list(self.states[source])
        in_shape = [1] * (len(sizes) - source.meta["val"].dim()) + list(source.meta["val"].shape)
        out_shape = node.meta["val"].shape
        for d, axis in enumerate(state):
            if axis is None and size_hint(in_shape[d]) == 1 and size_hint(out_shape[d]) != 1:
                origin = (node.name, d)
                state[d] = Copies(origin, self.copies.get(origin, size_hint(out_shape[d])))
        self._new_sizes(node, state, sizes)
        return state

    def _split(self, node) -> list:
        source, state = node.args[0], self.states[node.args[0]]
        dim = (node.args[2] if len(node.args) > 2 else 0) % len(state)
        count = len(node.meta["val"])
        if state[dim] is None:
            return [list(state) for _ in range(count)]
        if node.target is not aten.chunk.default or not isinstance(state[dim], Tracked):
            raise Unmatched(node, "a split with fixed sizes cuts a head axis; use chunk")
        labels = state[dim].labels
        if len(labels) % count or node.args[1] != count or size_hint(source.meta["val"].shape[dim]) % count:
            raise Unmatched(node, f"chunk({node.args[1]}) does not split the head axis evenly")
        part = len(labels) // count
        return [state[:dim] + [Tracked(labels[i * part : (i + 1) * part])] + state[dim + 1 :] for i in range(count)]

    def _sdpa(self, node) -> list:
        q, k, v = (self._state(a) for a in node.args[:3])
        enable_gqa = node.kwargs.get("enable_gqa", node.args[7] if len(node.args) > 7 else False)
        if enable_gqa:
            raise Unmatched(node, "sdpa with enable_gqa=True; repeat the kv heads with expand instead")
        for part in (q[-2:], k[-2:], v[-2:]):
            if any(axis is not None for axis, _, _ in part):
                raise Unmatched(node, "a head axis in the sequence or head_dim position of sdpa")
        mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
        batch = [q[:-2], k[:-2], v[:-2]]
        if isinstance(mask, torch.fx.Node):
            batch.append(self._state(mask)[:-2])
        return self._broadcast(node, batch) + [None, None]

    # -- reshape -------------------------------------------------------------------------------------------

    def _reshape(self, node) -> list:
        source = node.args[0]
        in_shape, out_shape = list(source.meta["val"].shape), list(node.meta["val"].shape)
        state = self.states[source]
        out: list = [None] * len(out_shape)
        for ins, group_outs in reshape_groups(node, in_shape, out_shape):
            ins = [d for d in ins if state[d] is not None or size_hint(in_shape[d]) != 1]
            outs = [d for d in group_outs if size_hint(out_shape[d]) != 1]
            if len(outs) == 1 and outs[0] - 1 in group_outs and len(ins) == 1 and isinstance(state[ins[0]], Tracked):
                outs.insert(0, outs[0] - 1)  # [.., 1 head, head_dim]: a single head (multi-query kv)
            axes = [state[d] for d in ins]
            if all(a is None for a in axes):
                continue
            if len(ins) == 1 and len(outs) == 1:
                out[outs[0]] = axes[0]
            elif len(ins) == 1 and len(outs) == 2 and isinstance(axes[0], Tracked):
                inner = out_shape[outs[1]]
                if not isinstance(inner, int):
                    raise Unmatched(node, "the head axis is split by a runtime size")
                out[outs[0]] = Tracked(head_blocks(node, axes[0].labels, inner))
            elif len(ins) == 2 and len(outs) == 1 and isinstance(axes[0], Tracked) and axes[1] is None:
                inner = in_shape[ins[1]]
                if not isinstance(inner, int):
                    raise Unmatched(node, "heads are merged with a runtime-sized axis")
                out[outs[0]] = Tracked(tuple(("merge", la, i) for la in axes[0].labels for i in range(inner)))
            elif len(ins) == 2 and len(outs) == 1 and isinstance(axes[0], Tracked) and isinstance(axes[1], Copies):
                self.merged[axes[1].origin] = axes[1].size
                out[outs[0]] = Tracked(tuple(la for la in axes[0].labels for _ in range(axes[1].size)))
            else:
                raise Unmatched(node, "the reshape mixes a head axis with other axes (e.g. batch x heads)")
        self._new_sizes(node, out, list(node.args[1]))
        return out

    def _new_sizes(self, node, state: list, sizes: list) -> None:
        """The size argument with every head axis's literal rewritten to its new length."""
        shape = node.meta["val"].shape
        new = list(sizes)
        for d, axis in enumerate(state):
            if axis is None:
                continue
            length = len(axis.labels) if isinstance(axis, Tracked) else axis.size
            if sizes[d] == -1 or length == size_hint(shape[d]):
                continue
            if not isinstance(sizes[d], int):
                raise Unmatched(node, f"the head-axis size (dim {d}) is a runtime value {sizes[d]}; cannot rewrite it")
            new[d] = length
        if new != list(sizes):
            self.sizes[node] = new
