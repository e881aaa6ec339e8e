"""The per-layer report of a compiled model: what each weight layer became and what it costs.

`build_report(gm)` reads the IR (layer nodes, fxc annotations, fxc.ir.cost) and returns a `Report`:
rows of node, op, weight shape, params, bytes, FLOPs, plan, sparsity, drift (when measured), and
totals against the dense fp32 size. `str(report)` is the table; `report.rows` the data.
Reads the graph; writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx

from fxc.ir import cost, meta


@dataclass(frozen=True)
class LayerRow:
    node: str
    layer: str  # module path of the original layer
    op: str
    weight_shape: tuple[int, ...]
    params: int
    bytes: int
    flops: int
    plan: str
    drift: float | None = None


@dataclass
class Report:
    rows: list[LayerRow]
    model_bytes: int  # every tensor of the compressed model
    dense_bytes: int  # the same parameters at fp32, as dense weights
    notes: list[str] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.rows)

    @property
    def total_flops(self) -> int:
        return sum(r.flops for r in self.rows)

    def __str__(self) -> str:
        header = ("node", "layer", "op", "weight shape", "params", "bytes", "MFLOPs", "plan", "drift")
        body = [
            (
                r.node,
                r.layer,
                r.op,
                "x".join(map(str, r.weight_shape)),
                f"{r.params:,}",
                f"{r.bytes:,}",
                f"{r.flops / 1e6:.2f}",
                r.plan,
                "" if r.drift is None else f"{r.drift:.2e}",
            )
            for r in self.rows
        ]
        total = (
            "total",
            "",
            "",
            "",
            f"{self.total_params:,}",
            f"{self.total_bytes:,}",
            f"{self.total_flops / 1e6:.2f}",
            "",
            "",
        )
        widths = [max(len(str(row[i])) for row in [header, *body, total]) for i in range(len(header))]
        fmt = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
        lines = [fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, body), fmt(total)]
        ratio = self.dense_bytes / self.model_bytes if self.model_bytes else float("nan")
        lines.append(
            f"model: {self.model_bytes:,} bytes (dense fp32 {self.dense_bytes:,} bytes, {ratio:.2f}x smaller)"
        )
        return "\n".join(lines + self.notes)

    def __repr__(self) -> str:
        return f"Report({len(self.rows)} layers, {self.model_bytes:,} bytes)"


def build_report(gm: torch.fx.GraphModule, drift: dict[str, float] | None = None) -> Report:
    rows = []
    dense_layer_bytes = 0
    for node in cost.layer_nodes(gm):
        c = cost.layer_cost(gm, node)
        info = meta.get(node, meta.LayerInfo)
        rows.append(
            LayerRow(
                node=node.name,
                layer=info.fqn if info else "",
                op=_op_name(node),
                weight_shape=cost.weight_shape(gm, node),
                params=c.params,
                bytes=c.bytes,
                flops=c.flops,
                plan=_plan_text(node),
                drift=(drift or {}).get(node.name),
            )
        )
        dense_layer_bytes += c.params * 4 - c.bytes
    total = cost.model_bytes(gm)
    report = Report(rows, model_bytes=total, dense_bytes=total + max(dense_layer_bytes, 0))
    frontier = meta.get(next(n for n in reversed(gm.graph.nodes) if n.op == "output"), meta.Frontier)
    if frontier is not None:  # written by the auto pass
        report.notes.extend(frontier.describe())
    return report


def _op_name(node: torch.fx.Node) -> str:
    return str(node.target).replace("torch.ops.", "").replace(".default", "")


def _plan_text(node: torch.fx.Node) -> str:
    parts = []
    quant = meta.get(node, meta.Quantized)
    if quant:
        group = f"g{quant.group_size}" if quant.group_size else ""
        parts.append(
            f"w{quant.bits}{group}" + (f"a{quant.act_bits}" if quant.act_bits else "") + f" {quant.method}"
        )
    sparsity = meta.get(node, meta.Sparsity)
    if sparsity:
        parts.append(f"{sparsity.pattern} {sparsity.sparsity:.0%}")
    low_rank = meta.get(node, meta.LowRank)
    if low_rank:
        parts.append(f"rank {low_rank.rank} ({low_rank.role})")
    kept = meta.get(node, meta.KeptDense)
    if kept and not parts:
        parts.append(f"dense ({kept.pass_name}: {kept.reason})")
    plan = meta.get(node, meta.LayerPlan)
    if plan and not parts:
        parts.append(f"planned {plan.describe()}")
    return ", ".join(parts) or "dense"
