"""Structured pruning for prune{pattern=channel}: remove whole channels from every coupled layer.

A *channel group* is found on the graph (networkx): producers (linear / conv2d layers whose output
channels define the space, e.g. an MLP's gate and up projections, or a conv's filters), the ops the
channels flow through unchanged (activations, elementwise products of members, eval BatchNorm,
pooling, depthwise conv, means over other dims) and consumers (linear / conv2d layers that read the
channels as their input: the down projection, the next conv). A space that reaches anything else
(a norm over channels, a reshape, a residual add with an outside tensor, the output) cannot shrink
and is left alone. Each group keeps its highest-scoring channels:
    magnitude  Σ ||producer row j||² + Σ ||consumer column j||²
    wanda      Σ over consumers ||W[:, j]||·||x_j|| (x_j from `act-stats`), structured Wanda
and every coupled tensor (weights, biases, BatchNorm statistics, depthwise kernels) is sliced, so
the model gets smaller and faster with dense kernels. The output shape does not change.

Reads: `act-stats` (wanda). Writes: smaller tensors (fxc.ir.set_tensor), the groups argument of
depthwise convs, meta.Sparsity("channel", fraction of channels removed) on producers and
consumers; refresh_meta. Everything is planned and checked before any tensor changes.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import networkx as nx
import torch
import torch.fx

from fxc import ir
from fxc.errors import OptionError
from fxc.ir import meta
from fxc.passes.algorithms.prune_scores import as_matrix
from fxc.passes.aten_groups import COPIES, POINTWISE
from fxc.passes.select import select_layers
from fxc.passmgr.passbase import PassResult

aten = torch.ops.aten
_UNARY = POINTWISE | COPIES | {
    aten.hardtanh.default,
    aten.leaky_relu.default,
    aten.hardswish.default,
    aten.elu.default,
    aten.hardsigmoid.default,
    aten.max_pool2d.default,
    aten.avg_pool2d.default,
    aten.adaptive_avg_pool2d.default,
}
_BINARY = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor}
_REDUCE = {aten.mean.dim, aten.sum.dim_IntList, aten.amax.default}
_NORMS = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}


@dataclass
class ChannelGroup:
    channels: int
    producers: list[ir.WeightLayer] = field(default_factory=list)
    consumers: list[ir.WeightLayer] = field(default_factory=list)
    sliced: dict[str, int] = field(default_factory=dict)  # per-channel get_attr tensor -> its channel dim
    depthwise: list[torch.fx.Node] = field(default_factory=list)  # convs whose groups arg follows the count
    graph: nx.Graph = field(default_factory=nx.Graph)  # the coupled nodes, edges along the channel flow

    @property
    def layers(self) -> list[ir.WeightLayer]:
        return self.producers + self.consumers


class _Blocked(Exception):
    """The channel space reaches an op that cannot shrink with it."""


def channel_groups(gm: torch.fx.GraphModule) -> list[ChannelGroup]:
    """Every prunable channel group, in graph order of its first producer."""
    layers = {layer.node: layer for layer in ir.weight_layers(gm, ("linear", "conv2d"))}
    groups, seen = [], set()
    for node, layer in layers.items():
        if node in seen:
            continue
        graph = nx.Graph()
        try:
            group = _grow(gm, layer, layers, graph)
        except _Blocked:
            continue
        finally:
            seen |= {n for n in graph.nodes if n in layers}
        if group.consumers:
            groups.append(group)
    return groups


def _grow(gm, start: ir.WeightLayer, layers: dict, graph: nx.Graph) -> ChannelGroup:
    """Walk the channel space from `start`'s output; raise _Blocked when it leaks."""
    weight = ir.get_tensor(gm, start.weight)
    group = ChannelGroup(channels=weight.shape[0], graph=graph)
    axes: dict[torch.fx.Node, int] = {}

    def add_producer(node: torch.fx.Node) -> None:
        layer = layers.get(node)
        if layer is None or node in axes or ir.get_tensor(gm, layer.weight).shape[0] != group.channels:
            raise _Blocked
        if layer.kind == "conv2d" and _groups(node) != 1:
            raise _Blocked
        group.producers.append(layer)
        _own(gm, group, layer.weight, 0, node)
        if layer.bias:
            _own(gm, group, layer.bias, 0, node)
        axes[node] = 1 if layer.kind == "conv2d" else _rank(node) - 1
        graph.add_node(node)

    add_producer(start.node)
    todo = [start.node]
    while todo:
        node = todo.pop()
        for user in list(node.users):
            if user in axes:
                continue
            new_axis = _step(gm, group, layers, user, node, axes, add_producer, todo)
            graph.add_edge(node, user)
            if new_axis is not None:  # None: a consumer, where the space ends
                axes[user] = new_axis
                todo.append(user)
    return group


def _step(gm, group, layers, user, node, axes, add_producer, todo) -> int | None:
    axis = axes[node]
    if user.op != "call_function":
        raise _Blocked
    layer = layers.get(user)
    target = user.target
    if layer is not None and user.args[0] is node and user.args[1] is not node:
        rank = _rank(node)
        if layer.kind == "linear" and axis == rank - 1:
            group.consumers.append(layer)
            _own(gm, group, layer.weight, 1, user)
            return None
        if layer.kind == "conv2d" and axis == 1:
            groups = _groups(user)
            if groups == 1:
                group.consumers.append(layer)
                _own(gm, group, layer.weight, 1, user)
                return None
            if groups == group.channels and ir.get_tensor(gm, layer.weight).shape[:2] == (group.channels, 1):
                group.depthwise.append(user)
                _own(gm, group, layer.weight, 0, user)
                if layer.bias:
                    _own(gm, group, layer.bias, 0, user)
                return axis
        raise _Blocked
    if target in _UNARY and user.args[0] is node:
        return axis
    if target is operator.getitem and user.args[1] == 0 and node.target in _NORMS:
        return axis
    if target in _NORMS and user.args[0] is node and axis == 1:
        for param in user.args[1:5]:
            if isinstance(param, torch.fx.Node):
                _own(gm, group, param.target if param.op == "get_attr" else _blocked(), 0, user)
        return axis
    if target in _REDUCE and user.args[0] is node:
        dims = [d % _rank(node) for d in user.args[1]]
        keep = len(user.args) > 2 and user.args[2]
        if axis in dims:
            raise _Blocked
        return axis if keep else axis - sum(d < axis for d in dims)
    if target in _BINARY:
        out_rank = _rank(user)
        out_axis = axis + out_rank - _rank(node)
        for other in user.args:
            if other is node or not isinstance(other, torch.fx.Node):
                continue
            _couple(gm, group, other, user, out_axis, out_rank, axes, add_producer, todo)
        return out_axis
    raise _Blocked


def _couple(gm, group, other, user, out_axis, out_rank, axes, add_producer, todo) -> None:
    """The second operand of an elementwise op on the channel space: broadcast, a member, a producer,
    or a per-channel constant."""
    if other in axes:
        if axes[other] + out_rank - _rank(other) != out_axis:
            raise _Blocked
        return
    val = other.meta.get("val")
    rank = val.dim() if isinstance(val, torch.Tensor) else 0
    dim = out_axis - (out_rank - rank)
    size = val.shape[dim] if 0 <= dim < rank else 1
    if size == 1:
        return
    if other.op == "get_attr" and size == group.channels:
        _own(gm, group, other.target, dim, user)
        return
    if other.op == "call_function" and other.target in _UNARY and isinstance(other.args[0], torch.fx.Node):
        _couple(gm, group, other.args[0], other, dim, rank, axes, add_producer, todo)  # e.g. silu(gate)
        axes[other] = dim
    else:
        add_producer(other)
    group.graph.add_edge(other, user)
    todo.append(other)


def _own(gm, group: ChannelGroup, target: str, dim: int, user: torch.fx.Node) -> None:
    """Claim a tensor for slicing; it must be read only inside this group."""
    readers = [n for n in gm.graph.nodes if n.op == "get_attr" and n.target == target]
    if any(u is not user for r in readers for u in r.users):
        raise _Blocked
    if group.sliced.get(target, dim) != dim or ir.get_tensor(gm, target).shape[dim] != group.channels:
        raise _Blocked
    group.sliced[target] = dim


def _blocked():
    raise _Blocked


def _rank(node: torch.fx.Node) -> int:
    return node.meta["val"].dim()


def _groups(node: torch.fx.Node) -> int:
    return node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)


# -- scoring and slicing ------------------------------------------------------------------------------------


def channel_scores(gm, group: ChannelGroup, method: str, stats) -> torch.Tensor:
    scores = torch.zeros(group.channels, dtype=torch.float64)
    if method == "wanda":
        for layer in group.consumers:
            w = ir.get_tensor(gm, layer.weight).detach().double()
            column_norm = w.transpose(0, 1).reshape(group.channels, -1).norm(dim=1)
            scores += column_norm * stats[layer.node.name].l2.double()
        return scores
    for layer in group.producers:
        scores += as_matrix(ir.get_tensor(gm, layer.weight).detach().double()).pow(2).sum(1)
    for layer in group.consumers:
        scores += (
            ir.get_tensor(gm, layer.weight).detach().double().transpose(0, 1).reshape(group.channels, -1).pow(2).sum(1)
        )
    return scores


def prune_channels(gm: torch.fx.GraphModule, am, options) -> PassResult:
    selected = {layer.node for layer in select_layers(gm, options.layers, options.skip, ("linear", "conv2d"))}
    groups = [g for g in channel_groups(gm) if all(layer.node in selected for layer in g.layers)]
    if options.layers and not groups:
        raise OptionError(f"prune: option 'layers'={list(options.layers)} selects no prunable channel group")
    if not groups:
        return PassResult(False, summary="no prunable channel group")
    stats = options.wanda_stats(am)
    plans = []
    for group in groups:
        keep_count = max(1, group.channels - int(round(options.sparsity * group.channels)))
        keep = torch.topk(channel_scores(gm, group, options.method, stats), keep_count).indices.sort().values
        plans.append((group, keep))
    removed = total = 0
    for group, keep in plans:  # everything is checked: now slice
        for target, dim in group.sliced.items():
            ir.set_tensor(gm, target, ir.get_tensor(gm, target).detach().index_select(dim, keep).contiguous())
        for conv in group.depthwise:
            conv.args = conv.args[:6] + (len(keep),) + conv.args[7:]
        fraction = 1.0 - len(keep) / group.channels
        for node in [layer.node for layer in group.layers] + group.depthwise:
            meta.put(node, meta.Sparsity("channel", fraction, options.method))
        removed, total = removed + group.channels - len(keep), total + group.channels
    gm.recompile()
    ir.refresh_meta(gm)
    return PassResult(True, summary=f"removed {removed} of {total} channels in {len(plans)} groups ({options.method})")
