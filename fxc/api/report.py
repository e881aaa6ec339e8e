"""The per-layer report of a compiled model: what each weight layer became and what it costs.

`build_report(gm)` reads the IR (layer nodes, fxc annotations, fxc.ir.cost) and returns a `Report`:
rows of node, op, weight shape, params, bytes, FLOPs, plan, sparsity, drift (when measured), and
totals against the dense fp32 size, notes (what the passes and the backend say, the backend's kernel
choices summed up in one line) and `kernel_notes` (the backend's note per layer). `str(report)` is
the table and notes; `report.rows` the data; `report_to_json` / `report_from_json` its saved form.

The dense size is the model's before any pass: fxc.compile calls `record_dense_bytes(gm)` on the traced
graph before the pipeline runs, which keeps it in `gm.meta["fxc.dense_bytes"]` (a graph-level value,
carried by deepcopy, kept by a later record on the same graph). Measured on the compressed graph it
would be wrong for every pass that changes shapes: channel / head pruning and low-rank splits make the
layers themselves smaller, so the model would read "1.00x smaller". A graph without the record (a
pipeline run by hand, a model loaded by fxc.load) falls back to the compressed layers' parameters at
fp32 (`dense_fp32_bytes`). Reads the graph; writes only `gm.meta["fxc.dense_bytes"]` (record_dense_bytes).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from fxc import ir
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
    shared_bytes: int = 0  # bytes of tensors an earlier row already holds (tied weights)
    tied_to: str = ""  # that earlier row's layer


@dataclass
class Report:
    rows: list[LayerRow]
    model_bytes: int  # every tensor of the compressed model
    dense_bytes: int  # the model before any pass, its weight layers dense at fp32 (record_dense_bytes)
    notes: list[str] = field(default_factory=list)
    kernel_notes: list[str] = field(default_factory=list)  # the backend's note per layer (notes sum them up)

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows if not r.tied_to)

    @property
    def total_bytes(self) -> int:
        """Every layer's bytes, tensors shared by several layers (tied weights) counted once."""
        return sum(r.bytes - r.shared_bytes for r in self.rows)

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
                r.plan + (f" (tied to {r.tied_to})" if r.tied_to else ""),
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


def _shared_tensors(gm: torch.fx.GraphModule, node: torch.fx.Node, owners: dict[tuple, tuple[str, str]],
                    label: str) -> tuple[int, str]:
    """Bytes of `node`'s tensors that an earlier layer already holds, and that layer's label."""
    shared, tied_to = 0, ""
    for arg in node.all_input_nodes:
        if arg.op != "get_attr":
            continue
        t = ir.get_tensor(gm, arg.target)
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if key in owners and owners[key][0] != node.name:
            shared += t.numel() * t.element_size()
            tied_to = tied_to or owners[key][1]
        owners.setdefault(key, (node.name, label))
    return shared, tied_to


def report_to_json(report: Report) -> dict:
    """The report as plain data (fxc.save keeps it in the manifest, so `fxc report` needs no graph)."""
    return {
        "rows": [dataclasses.asdict(r) | {"weight_shape": list(r.weight_shape)} for r in report.rows],
        "model_bytes": report.model_bytes,
        "dense_bytes": report.dense_bytes,
        "notes": list(report.notes),
        "kernel_notes": list(report.kernel_notes),
    }


def report_from_json(data: Any, where: str) -> Report:
    """The inverse of report_to_json for data read from a file: every field of its declared type and
    bounded, else FormatError naming `where` and the field."""
    from fxc.errors import FormatError

    def bad(field_name: str) -> FormatError:
        return FormatError(f"{where}.{field_name} is not what fxc.save writes; save the model again")

    def text(value: Any) -> bool:
        return isinstance(value, str) and len(value) <= 4096

    def size(value: Any) -> bool:
        return type(value) is int and 0 <= value < 1 << 62

    if not isinstance(data, dict) or set(data) != {"rows", "model_bytes", "dense_bytes", "notes", "kernel_notes"}:
        raise bad("(fields)")
    for name in ("notes", "kernel_notes"):
        if not isinstance(data[name], list) or len(data[name]) > 1 << 16 or not all(map(text, data[name])):
            raise bad(name)
    if not (size(data["model_bytes"]) and size(data["dense_bytes"])):
        raise bad("model_bytes")
    rows = data["rows"]
    if not isinstance(rows, list) or len(rows) > 1 << 20:
        raise bad("rows")
    fields = {f.name for f in dataclasses.fields(LayerRow)}
    out = []
    for index, row in enumerate(rows):
        ok = (isinstance(row, dict) and set(row) == fields and all(text(row[k]) for k in ("node", "layer", "op",
              "plan", "tied_to")) and all(size(row[k]) for k in ("params", "bytes", "flops", "shared_bytes"))
              and isinstance(row["weight_shape"], list) and len(row["weight_shape"]) <= 8
              and all(map(size, row["weight_shape"]))
              and (row["drift"] is None or type(row["drift"]) in (int, float) and math.isfinite(row["drift"])))
        if not ok:
            raise bad(f"rows[{index}]")
        out.append(LayerRow(**{**row, "weight_shape": tuple(row["weight_shape"])}))
    return Report(out, data["model_bytes"], data["dense_bytes"], list(data["notes"]), list(data["kernel_notes"]))


DENSE_BYTES = "fxc.dense_bytes"  # key in GraphModule.meta: the dense fp32 size before any pass


def dense_fp32_bytes(gm: torch.fx.GraphModule) -> int:
    """Every tensor of `gm`, its weight layers' parameters counted at fp32 and dense."""
    extra = sum(c.params * 4 - c.bytes for c in (cost.layer_cost(gm, node) for node in cost.layer_nodes(gm)))
    return cost.model_bytes(gm) + max(extra, 0)


def record_dense_bytes(gm: torch.fx.GraphModule) -> int:
    """Keep the dense size of `gm` as it is now (before any pass) for its reports; a graph that already
    holds one (compiled before) keeps that one."""
    return gm.meta.setdefault(DENSE_BYTES, dense_fp32_bytes(gm))


def build_report(gm: torch.fx.GraphModule, drift: dict[str, float] | None = None) -> Report:
    rows = []
    owners: dict[tuple, tuple[str, str]] = {}  # storage of a layer's tensor -> first node holding it, its label
    for node in cost.layer_nodes(gm):
        c = cost.layer_cost(gm, node)
        info = meta.get(node, meta.LayerInfo)
        shared, tied_to = _shared_tensors(gm, node, owners, f"{node.name} ({info.fqn})" if info else node.name)
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
                shared_bytes=min(shared, c.bytes),
                tied_to=tied_to,
            )
        )
    dense = gm.meta.get(DENSE_BYTES) or dense_fp32_bytes(gm)
    report = Report(rows, model_bytes=cost.model_bytes(gm), dense_bytes=dense)
    frontier = meta.get(next(n for n in reversed(gm.graph.nodes) if n.op == "output"), meta.Frontier)
    if frontier is not None:  # written by the auto pass
        report.notes.extend(frontier.describe())
    if any(r.tied_to for r in report.rows):
        report.notes.append("tied: a layer marked 'tied to' shares its weight with an earlier one; counted once")
    if not drift:
        report.notes.append("drift: not measured (give calibration data to fxc.compile, or --calib-text / --calib-file "
                            "to fxc compress, to measure each layer's output error)")
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
