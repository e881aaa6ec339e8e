"""Carrying out an `auto` plan with the existing passes, in a sound order, then checking the bytes.

    summaries = carry_out(gm, am, plan, methods)     # plan: {layer node: Candidate}; returns pass summaries
    check_bytes(gm, expected)                        # the compressed model holds exactly what was planned

Order: low-rank first (a split changes which weights exist; quantizing a factor is sound, factoring a
quantized weight is not), then prune (N:M layers lowered to sparse_nm_linear, so their bytes shrink),
then quantize (dense layers and both low-rank factors), then int8 values for N:M+w8 layers. Each pass
reads the meta.LayerPlan auto wrote and is restricted to exactly the layers that need it (its `layers`
option names them, `skip` is cleared: auto's own selection already applied the user's). The passes
calibrate layer by layer (fxc.passmgr.sequential), so every layer sees the output of the layers before it as
compressed so far. They run as a nested pipeline, so instruments, IR verification and analysis
invalidation apply to each. Reads meta.LayerPlan / LowRank / LayerInfo; writes what the passes write,
plus int8 values, a scale and meta.Quantized on N:M+w8 layers, and LayerPlan on low-rank factors that
lack one.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.fx

from fxc import ir
from fxc.errors import FxcError
from fxc.ir import cost, meta, qformat
from fxc.passes.specs.candidates import Candidate
from fxc.passmgr import registry
from fxc.passmgr.pipeline import Pipeline


def carry_out(gm: torch.fx.GraphModule, am, plan: dict[str, Candidate], methods: dict[str, str]) -> list[str]:
    """Run low-rank, prune and quantize on the planned layers (by layer fqn); returns their summaries.
    methods: {"low_rank": ..., "prune": ..., "quantize": ...}."""
    summaries = []
    split = [fqn for fqn, c in plan.items() if c.rank_ratio is not None]
    if split:
        low_rank = _make("low-rank", method=methods["low_rank"], margin=0.0, layers=tuple(split), skip=())
        summaries += _run(gm, am, low_rank)
        _plan_factors(gm, plan)
    sparse = [fqn for fqn, c in plan.items() if c.nm or c.sparsity]
    if sparse:
        ms = [c.nm[1] for c in plan.values() if c.nm]
        block = _block_size(ms)
        pattern = next((f"{c.nm[0]}:{c.nm[1]}" for c in plan.values() if c.nm), "unstructured")
        prune = _make(
            "prune",
            method=methods["prune"],
            pattern=pattern,
            lower=bool(ms),
            block_size=block,
            layers=tuple(sparse),
            skip=(),
        )
        summaries += _run(gm, am, prune)
    quantized = _quantize_targets(gm, plan)
    if quantized:
        summaries += _run(gm, am, _make("quantize", method=methods["quantize"], layers=tuple(quantized), skip=()))
    lowered = _int8_nm_values(gm, plan)
    if lowered:
        ir.remove_unused_tensors(gm)
        ir.verify(gm)
        summaries.append(f"int8 values on {lowered} N:M layers")
    return summaries


def _make(name: str, **options):
    cls = registry.lookup("fxc.passes", name)
    fields = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(k for k in options if k not in fields)
    if missing:
        raise FxcError(f"auto: the '{name}' pass has no option {', '.join(missing)}; it cannot carry out the plan")
    return cls(**options)


def _run(gm, am, item) -> list[str]:
    return [r.summary for r in Pipeline.of([item]).run(gm, am, am.instruments) if r.summary]


def _block_size(ms: list[int], preferred: int = 128) -> int:
    unit = math.lcm(*ms) if ms else 1
    return unit * max(1, round(preferred / unit))


def _plan_factors(gm: torch.fx.GraphModule, plan: dict[str, Candidate]) -> None:
    """Give both factors of each split layer the plan's quantization (and no rank, so nothing re-splits)."""
    for node in gm.graph.nodes:
        if meta.get(node, meta.LowRank) is None:
            continue
        owner = _owner_fqn(node, plan)
        if owner is None:
            raise FxcError(f"auto: cannot tell which planned layer the low-rank factor {node.name} came from")
        c = plan[owner]
        old = meta.get(node, meta.LayerPlan) or meta.LayerPlan()
        bits = c.bits if c.bits is not None else 16
        meta.put(
            node,
            dataclasses.replace(old, bits=bits, group_size=None, act_bits=c.act_bits, rank_ratio=None, source="auto"),
        )


def _owner_fqn(node: torch.fx.Node, plan: dict[str, Candidate]) -> str | None:
    info = meta.get(node, meta.LayerInfo)
    names = [info.fqn] if info else []
    weight = node.args[1] if len(node.args) > 1 and isinstance(node.args[1], torch.fx.Node) else None
    if weight is not None and weight.op == "get_attr":
        names.append(weight.target)
    best = None
    for fqn in plan:
        if any(name == fqn or name.startswith(fqn + ".") or name.startswith(fqn + "_") for name in names):
            best = fqn if best is None or len(fqn) > len(best) else best
    return best


def _quantize_targets(gm: torch.fx.GraphModule, plan: dict[str, Candidate]) -> list[str]:
    """fqns of the dense linears (original layers and low-rank factors) whose plan asks for bits < 16."""
    out = []
    for layer in ir.weight_layers(gm, kinds=("linear",)):
        p = meta.get(layer.node, meta.LayerPlan)
        if p is None or p.bits is None or p.bits >= 16 or p.source != "auto":
            continue
        if meta.get(layer.node, meta.LowRank) is not None or (layer.fqn in plan and not plan[layer.fqn].nm):
            out.append(layer.fqn)
    return out


def _int8_nm_values(gm: torch.fx.GraphModule, plan: dict[str, Candidate]) -> int:
    """Store the kept values of N:M+w8 layers as int8 with one float32 scale per output row."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.target != torch.ops.fxc.sparse_nm_linear.default:
            continue
        info = meta.get(node, meta.LayerInfo)
        c = plan.get(info.fqn) if info else None
        if c is None or c.bits != 8:
            continue
        values_node = node.args[1]
        values = ir.get_tensor(gm, values_node.target)
        q = qformat.quantize_rtn(values, 8, None, True)
        base = values_node.target.rsplit(".", 1)[0] if "." in values_node.target else values_node.target
        q_name = ir.add_tensor(gm, f"{base}.nm_qvalues", q.qweight.contiguous())
        s_name = ir.add_tensor(gm, f"{base}.nm_scale", q.scale.reshape(-1, 1).contiguous())
        with gm.graph.inserting_before(node):
            q_node, s_node = gm.graph.get_attr(q_name), gm.graph.get_attr(s_name)
        args = list(node.args)
        args[1], args[3] = q_node, s_node
        node.args = tuple(args)
        meta.put(node, meta.Quantized(8, None, True, None, "rtn"))
        count += 1
    if count:
        gm.recompile()
    return count


def check_bytes(gm: torch.fx.GraphModule, expected: int, planned_layers: int) -> None:
    """Raise if the compressed model does not hold exactly the planned bytes (a bug, never silent)."""
    ir.remove_unused_tensors(gm)
    actual = cost.model_bytes(gm)
    if actual != expected:
        raise FxcError(
            f"auto: the compressed model holds {actual:,} bytes but the plan for {planned_layers} layers predicted "
            f"{expected:,}; a pass stored a layer differently than planned (see the report's per-layer bytes)"
        )
