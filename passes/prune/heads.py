"""Structured pruning for prune{pattern=head}: remove whole attention heads from every coupled layer.

Each attention is found (passes/prune/heads_region.py: q/k/v or fused qkv linears, the view/rotary/repeat_kv/
sdpa or softmax(q @ k^T) @ v ops between, o_proj) and traced (passes/prune/heads_trace.py). A *head* is a
head_dim-sized column block of o_proj; the trace says which q/k/v row blocks it combines. An attention
is pruned only when all its linears are selected (`layers`, `skip`).

Which heads go (`sparsity` = fraction of a layer's query heads removed, rounded):
- multi-head attention (every head has its own q, k and v rows): the lowest-scoring heads of the
  layer, their q/k/v rows and o_proj columns removed;
- grouped-query attention (query heads share a kv head through repeat_kv's expand): the same number
  of query heads is removed in every kv group (round(sparsity x group size)), the lowest-scoring of
  each group; kv heads are all kept and the expand's repeat count shrinks. Uneven groups cannot be
  expressed with expand + reshape, and removing a kv head would force removing its whole group.
At least one head (per kv group) is kept: a sparsity that would remove them all is an OptionError.

Head score: magnitude = Σ W² over the head's own q/k/v rows and its o_proj columns (shared kv rows
score every head of a group alike, so they are left out); wanda = Σ |W|·||x|| over the same
weights, x the layer's input channels from `act-stats` (for o_proj: its input, the attention
output). sparse-gpt removes single weights and is refused for pattern=head (use magnitude/wanda).

Every head count baked into the graph (view/reshape/expand sizes: literal 4 in [b, 4, t, 8], the
repeat count 2 in [b, 2, 2, t, 8]; -1 entries are left alone) is rewritten. Before any tensor
changes, the trace is re-run with the kept rows: it must pair exactly the heads the original paired
(or an Unmatched becomes a NodeError naming the node and the fix). After the rewrite, shapes are
re-propagated and checked; any failure restores the original tensors and graph.

Reads: `act-stats` (wanda). Writes: smaller q/k/v/o weights and biases, new size arguments, meta.Sparsity(
"head", fraction of heads removed, method) on each linear that shrank; refresh_meta. Preserves: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch
import torch.fx

from fxc import ir
from fxc.errors import NodeError, OptionError
from fxc.ir import meta
from fxc.passes.prune.heads_region import Region, Unmatched, cores, feeding_linears, find_region
from fxc.passes.prune.heads_trace import HeadTrace, Tracked
from fxc.passes.select import select_layers
from fxc.passmgr.passbase import PassResult

_FIX = "leave its layers out with skip=[...] or prune MLP channels with pattern=channel"


@dataclass
class Attention:
    region: Region
    full: HeadTrace  # every row kept
    units: list  # head labels, in o_proj column order
    atoms: list[frozenset]  # per head: the q/k/v row blocks ("head", producer, block, head_dim) it combines
    groups: list[list[int]]  # heads sharing a kv head (one group per head without GQA)

    @property
    def name(self) -> str:
        info = meta.get(self.region.consumers[0], meta.LayerInfo)
        return info.fqn if info else self.region.consumers[0].name


def find_attentions(gm: torch.fx.GraphModule, selected: set[torch.fx.Node]) -> list[Attention]:
    """Every attention whose layers are all selected; raises NodeError for one that cannot be matched."""
    linears = {layer.node for layer in ir.weight_layers(gm, ("linear",))}
    found, covered = [], set()
    for core in cores(gm):
        if core in covered or not set(feeding_linears(core, linears)) <= selected:  # some of its layers skipped
            continue
        try:
            region = find_region(core, linears)
            covered |= set(region.nodes)
            if not set(region.producers + region.consumers) <= selected:
                continue
            full = HeadTrace(region, {p: _rows(p, range(_out_rows(p))) for p in region.producers}).run()
            found.append(_describe(region, full))
        except Unmatched as error:
            raise NodeError(
                error.node, f"prune{{pattern=head}}: cannot match the attention at %{core.name}: {error.reason}; {_FIX}"
            ) from None
    return found


def _rows(producer: torch.fx.Node, rows) -> tuple:  # the trace's labels of a producer's output rows
    return tuple(("row", producer.name, r) for r in rows)


def _out_rows(node: torch.fx.Node) -> int:
    return node.meta["val"].shape[-1]


def _describe(region: Region, full: HeadTrace) -> Attention:
    units: list = []
    for consumer, labels in full.columns.items():
        if any(not (isinstance(la, tuple) and la[0] == "merge") for la in labels):
            raise Unmatched(consumer, "its input columns are not whole heads x head_dim")
        heads = list(dict.fromkeys(la[1] for la in labels))
        if units and heads != units:
            raise Unmatched(consumer, "the consumers of the heads read them in different orders")
        units = heads
    atoms = [u if isinstance(u, frozenset) else frozenset({u}) for u in units]
    for unit, parts in zip(units, atoms):
        if any(not (isinstance(a, tuple) and a[0] == "head") for a in parts):
            raise Unmatched(region.core, f"head {unit} is not a block of projection rows")
    for producer in region.producers:
        covered = sorted(r for a in set().union(*atoms) if a[1] == producer.name for r in _block(a))
        if covered != list(range(_out_rows(producer))):
            raise Unmatched(producer, "some of its output rows belong to no head")
    graph, by_atom = nx.Graph(), {}  # heads sharing a row block (a kv head) form one group
    graph.add_nodes_from(range(len(atoms)))
    for index, parts in enumerate(atoms):
        for atom in parts:
            by_atom.setdefault(atom, []).append(index)
    for members in by_atom.values():
        nx.add_path(graph, members)
    groups = sorted(sorted(c) for c in nx.connected_components(graph))
    if len({len(g) for g in groups}) > 1:
        raise Unmatched(region.core, "kv groups of different sizes")
    return Attention(region, full, units, atoms, groups)


def _block(atom: tuple) -> range:
    _, _, index, size = atom
    return range(index * size, (index + 1) * size)


# -- scores and choice --------------------------------------------------------------------------------------


def head_scores(gm, attention: Attention, method: str, stats) -> torch.Tensor:
    layers = {layer.node: layer for layer in ir.weight_layers(gm, ("linear",))}
    counts: dict = {}
    for parts in attention.atoms:
        for atom in parts:
            counts[atom] = counts.get(atom, 0) + 1
    by_name = {p.name: p for p in attention.region.producers}

    def weight_score(node, w: torch.Tensor, dim: int, index: list[int]) -> float:
        w = w.detach().double().index_select(dim, torch.tensor(index))
        if method == "magnitude":
            return float(w.pow(2).sum())
        l2 = stats[node.name].l2.double()
        return float((w.abs() * (l2.index_select(0, torch.tensor(index)) if dim == 1 else l2)).sum())

    scores = []
    for unit, parts in zip(attention.units, attention.atoms):
        score = 0.0
        for atom in parts:
            if counts[atom] == 1:  # shared kv rows score every head of a group alike
                producer = by_name[atom[1]]
                score += weight_score(producer, ir.get_tensor(gm, layers[producer].weight), 0, list(_block(atom)))
        for consumer, labels in attention.full.columns.items():
            columns = [c for c, la in enumerate(labels) if la[1] == unit]
            score += weight_score(consumer, ir.get_tensor(gm, layers[consumer].weight), 1, columns)
        scores.append(score)
    return torch.tensor(scores, dtype=torch.float64)


def choose_heads(attention: Attention, scores: torch.Tensor, sparsity: float) -> list[int]:
    """The heads kept (indices into attention.units), per the rule in the module docstring."""
    groups = attention.groups if len(attention.groups[0]) > 1 else [list(range(len(attention.units)))]
    size = len(groups[0])
    removed = int(round(sparsity * size))
    if removed >= size:
        what = f"{size} query heads of each kv group" if len(groups) > 1 else f"all {size} heads"
        raise OptionError(
            f"prune: option 'sparsity'={sparsity} would remove {what} of the attention feeding "
            f"{attention.name}; keep at least one: use sparsity <= {(size - 1) / size:.3g}"
        )
    keep = []
    for group in groups:
        ranked = sorted(group, key=lambda i: -scores[i].item())
        keep += ranked[: size - removed]
    return sorted(keep)


@dataclass
class HeadPlan:
    attention: Attention
    keep: list[int]
    rows: dict  # producer node -> kept rows
    columns: dict  # consumer node -> kept columns (in new order)
    pruned: HeadTrace


def plan_heads(attention: Attention, keep: list[int]) -> HeadPlan:
    """Re-trace with the kept rows and prove it pairs only heads the original paired."""
    region, full = attention.region, attention.full
    kept_atoms = set().union(*(attention.atoms[i] for i in keep))
    rows = {p: sorted(r for a in kept_atoms if a[1] == p.name for r in _block(a)) for p in region.producers}
    per_group = len(keep) // len(attention.groups) if len(attention.groups[0]) > 1 else None
    copies = {}
    for origin, count in full.merged.items():
        if per_group is None or count != len(attention.groups[0]):
            raise Unmatched(region.core, f"an expand repeats heads {count} times, not once per query head of a group")
        copies[origin] = per_group
    pruned = HeadTrace(region, {p: _rows(p, rows[p]) for p in region.producers}, copies).run()
    for node, state in pruned.states.items():
        for before, after in zip(full.states[node], state):
            if type(before) is not type(after) or (
                isinstance(after, Tracked) and not set(after.labels) <= set(before.labels)
            ):
                raise Unmatched(node, "the pruned graph would pair different heads than the original (internal)")
    columns = {}
    for consumer, labels in pruned.columns.items():
        index = {la: c for c, la in enumerate(full.columns[consumer])}
        wanted = {la for la in full.columns[consumer] if la[1] in {attention.units[i] for i in keep}}
        if set(labels) != wanted or len(labels) != len(wanted):
            raise Unmatched(consumer, "the pruned heads do not line up with its columns (internal)")
        columns[consumer] = [index[la] for la in labels]
    return HeadPlan(attention, keep, rows, columns, pruned)


# -- the pass ---------------------------------------------------------------------------------------------


def prune_heads(gm: torch.fx.GraphModule, am, options) -> PassResult:
    selected = {layer.node for layer in select_layers(gm, options.layers, options.skip, ("linear",))}
    attentions = find_attentions(gm, selected)
    if not attentions:
        where = f"option 'layers'={list(options.layers)} selects" if options.layers else "the model has"
        raise OptionError(
            f"prune: {where} no attention to prune heads from (aten.scaled_dot_product_attention, or "
            "softmax(q @ k^T) @ v, fed by linear projections); use pattern=channel"
        )
    stats = options.wanda_stats(am)
    plans = []
    for attention in attentions:
        keep = choose_heads(attention, head_scores(gm, attention, options.method, stats), options.sparsity)
        try:
            plans.append(plan_heads(attention, keep))
        except Unmatched as error:
            raise NodeError(error.node, f"prune{{pattern=head}}: {error.reason}; {_FIX}") from None
    layers = {layer.node: layer for layer in ir.weight_layers(gm, ("linear",))}
    _check_owned(gm, plans, layers)
    linears = [node for plan in plans for node in plan.rows.keys() | plan.columns.keys()]
    saved_tensors = {t: ir.get_tensor(gm, t) for n in linears for t in (layers[n].weight, layers[n].bias) if t}
    saved_args = {node: node.args for plan in plans for node in plan.pruned.sizes}
    try:
        removed = _rewrite(gm, plans, layers, options.method)
    except BaseException:
        for target, tensor in saved_tensors.items():
            ir.set_tensor(gm, target, tensor)
        for node, args in saved_args.items():
            node.args = args
        for node in linears:
            node.meta.pop(meta.Sparsity.KEY, None)
        gm.recompile()
        ir.refresh_meta(gm)
        raise
    total = sum(len(p.attention.units) for p in plans)
    return PassResult(True, summary=f"removed {removed} of {total} heads in {len(plans)} attentions ({options.method})")


def _check_owned(gm, plans: list[HeadPlan], layers) -> None:
    for plan in plans:
        for node in plan.rows.keys() | plan.columns.keys():
            for target in (layers[node].weight, layers[node].bias):
                readers = [n for n in gm.graph.nodes if n.op == "get_attr" and n.target == target]
                if target and any(u is not node for r in readers for u in r.users):
                    raise NodeError(node, f"prune{{pattern=head}}: tensor {target} is shared with other nodes; {_FIX}")


def _rewrite(gm, plans: list[HeadPlan], layers, method: str) -> int:
    removed = 0
    for plan in plans:
        fraction = 1.0 - len(plan.keep) / len(plan.attention.units)
        removed += len(plan.attention.units) - len(plan.keep)
        if not fraction:
            continue
        for node, rows in plan.rows.items():
            if len(rows) == _out_rows(node):
                continue
            index = torch.tensor(rows)
            for target in (layers[node].weight, layers[node].bias):
                if target:
                    ir.set_tensor(gm, target, ir.get_tensor(gm, target).detach().index_select(0, index).contiguous())
            meta.put(node, meta.Sparsity("head", fraction, method))
        for node, columns in plan.columns.items():
            weight = ir.get_tensor(gm, layers[node].weight).detach()
            ir.set_tensor(gm, layers[node].weight, weight.index_select(1, torch.tensor(columns)).contiguous())
            meta.put(node, meta.Sparsity("head", fraction, method))
        for node, sizes in plan.pruned.sizes.items():
            node.args = (node.args[0], sizes) + tuple(node.args[2:])
    gm.recompile()
    ir.refresh_meta(gm)
    for plan in plans:  # the re-propagated shapes must be the traced ones
        for node, state in plan.pruned.states.items():
            shape = node.meta["val"].shape if isinstance(node.meta.get("val"), torch.Tensor) else None
            for dim, axis in enumerate(state if shape is not None else []):
                if axis is not None and shape[dim] != plan.pruned.length(node, dim):
                    raise NodeError(
                        node,
                        f"prune{{pattern=head}}: dim {dim} has size {shape[dim]} after pruning, "
                        f"expected {plan.pruned.length(node, dim)} (internal); {_FIX}",
                    )
    return removed
