"""cost: params, bytes and FLOPs of every weight layer, as the graph is now and as its plan would make it
(an analysis).

    table = am.get("cost")
    table.rows["linear_3"].current      # fxc.ir.cost.LayerCost of the node as it is in the graph
    table.rows["linear_3"].planned      # ... once its meta.LayerPlan is carried out (= current if none)
    table.total("planned").bytes; print(table)

Reads: the graph, fxc.ir.cost (the core's per-node counts, which the report also uses) and meta.LayerPlan
(written by planners: mixed-precision, auto); no calibration.
Writes: nothing in the graph; returns a CostTable with one row per weight layer.
Preserves: not applicable (an analysis changes nothing); the cached result is dropped after any pass
that does not list `cost` in PassResult.preserved.
Options: none.

A plan becomes a candidate spec (passes/specs/candidates.py) whose storage_bytes gives the planned weight
bytes; bias bytes are kept. Planned params count the weights the layer still stands for (low rank:
r·(N+K); channel pruning: the kept fraction; zeros of unstructured / N:M sparsity still count). Planned
FLOPs: N:M scales by N/M (the sparse op reduces over kept values only), low rank by r·(N+K)/(N·K), channel
pruning by the kept fraction; unstructured sparsity and quantization leave them unchanged (dense kernels).
FLOPs are for the traced input shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.fx

from fxc import ir
from fxc.ir import cost, meta
from fxc.ir.cost import LayerCost
from fxc.passes.specs.candidates import parse_candidate
from fxc.passmgr.passbase import Analysis


@dataclass(frozen=True)
class LayerCostRow:
    node: str
    layer: str  # module path
    plan: str  # LayerPlan.describe() or "keep"
    current: LayerCost
    planned: LayerCost


@dataclass
class CostTable:
    rows: dict[str, LayerCostRow] = field(default_factory=dict)

    def total(self, which: str = "current") -> LayerCost:
        parts = [getattr(row, which) for row in self.rows.values()]
        return LayerCost(sum(p.params for p in parts), sum(p.bytes for p in parts), sum(p.flops for p in parts))

    def __str__(self) -> str:
        head = (
            "node",
            "layer",
            "plan",
            "params",
            "bytes",
            "MFLOPs",
            "planned params",
            "planned bytes",
            "planned MFLOPs",
        )
        body = [(r.node, r.layer, r.plan, *_numbers(r.current), *_numbers(r.planned)) for r in self.rows.values()]
        body.append(("total", "", "", *_numbers(self.total("current")), *_numbers(self.total("planned"))))
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [head, *body])


def _numbers(c: LayerCost) -> tuple[str, str, str]:
    return f"{c.params:,}", f"{c.bytes:,}", f"{c.flops / 1e6:.2f}"


def plan_spec(plan: meta.LayerPlan) -> str:
    """The candidate spec a LayerPlan asks for ("2:4+w4g128", "r0.5+w8", "dense")."""
    parts = []
    if plan.pattern and plan.pattern not in ("unstructured", "channel"):
        parts.append(plan.pattern)
    elif plan.sparsity and plan.pattern != "channel":
        parts.append(f"s{plan.sparsity}")
    if plan.rank_ratio is not None:
        parts.append(f"r{plan.rank_ratio}")
    if plan.bits is not None and plan.bits < 16:
        parts.append(
            f"w{plan.bits}"
            + (f"g{plan.group_size}" if plan.group_size else "")
            + (f"a{plan.act_bits}" if plan.act_bits else "")
        )
    return "+".join(parts) or "dense"


def planned_cost(current: LayerCost, shape: tuple[int, ...], plan: meta.LayerPlan, bias_bytes: int) -> LayerCost:
    """What a dense layer of `shape` costs once `plan` is carried out."""
    candidate = parse_candidate(plan_spec(plan))
    n, k = shape[0], math.prod(shape[1:])
    bias_params = current.params - n * k
    weight_bytes = candidate.storage_bytes((n, k))
    params, flops = n * k, current.flops
    if candidate.nm:
        flops = flops * candidate.nm[0] // candidate.nm[1]
    if candidate.rank_ratio is not None:
        r = candidate.rank(shape)
        params, flops = r * (n + k), flops * r * (n + k) // (n * k)
    if plan.pattern == "channel" and plan.sparsity:
        kept = 1.0 - plan.sparsity
        params, flops, weight_bytes = int(params * kept), int(flops * kept), int(weight_bytes * kept)
    return LayerCost(params + bias_params, weight_bytes + bias_bytes, flops)


@dataclass(frozen=True)
class Cost(Analysis):
    """Per-layer params, bytes and FLOPs: current, and planned (meta.LayerPlan carried out)."""

    name = "cost"

    def compute(self, gm: torch.fx.GraphModule, am) -> CostTable:
        table = CostTable()
        dense_kinds = (torch.ops.aten.linear.default, torch.ops.aten.conv2d.default)
        for node in cost.layer_nodes(gm):
            current = cost.layer_cost(gm, node)
            plan = meta.get(node, meta.LayerPlan)
            planned = current
            if plan is not None and node.target in dense_kinds:
                shape = cost.weight_shape(gm, node)
                bias_bytes = current.bytes - math.prod(shape) * _weight_itemsize(gm, node)
                planned = planned_cost(current, shape, plan, bias_bytes)
            info = meta.get(node, meta.LayerInfo)
            table.rows[node.name] = LayerCostRow(
                node.name, info.fqn if info else "", plan.describe() if plan else "keep", current, planned
            )
        return table


def _weight_itemsize(gm: torch.fx.GraphModule, node: torch.fx.Node) -> int:
    return ir.get_tensor(gm, node.args[1].target).element_size()
