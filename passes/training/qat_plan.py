"""The plan compression-aware training simulates: what the pass pipeline decided for each layer.

    recorder = PlanRecorder()                          # an fxc instrument
    fxc.compile(model, passes="prune{sparsity=0.5},quantize{bits=4,group-size=32}", example_inputs=x,
                instruments=[recorder])
    recorder.plan                                      # {"fc1": LayerTarget(bits=4, group_size=32, mask=...)}
    plan_from_graph(compiled.graph)                    # the same from a finished graph (masks of float layers)
    uniform_plan(model, bits=4, group_size=32)         # one target for every selected layer, no compile

A plan is {module path: LayerTarget}, keyed by meta.LayerInfo.fqn, so it applies to the user's own
model (passes/training/qat.py `prepare`). Reads: meta.LayerInfo / LayerPlan / Sparsity / Quantized / LowRank and
the weights of pruned layers (their keep-masks). Writes nothing on the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
import torch.nn as nn

from fxc import ir
from fxc.errors import FxcError, describe_node
from fxc.ir import meta, qformat
from fxc.passes.algorithms.low_rank_math import rank_for_ratio
from fxc.passes.select import DEFAULT_SKIP, matches
from fxc.passmgr.instruments import Instrument


class PlanError(FxcError, ValueError):
    """A plan that cannot be simulated or applied to this model."""


@dataclass(frozen=True, eq=False)
class LayerTarget:
    """What training simulates for one layer's weight. bits None: kept float. mask: fixed keep-mask
    [N, K] (1 keep, 0 zero). sparsity without a mask: a target for gradual_prune.GradualPruner."""

    bits: int | None = None
    group_size: int | None = None  # None: per output channel
    symmetric: bool = True
    act_bits: int | None = None  # 8: int8 inputs with per-token scales (int8_linear), linear layers
    rank: int | None = None  # low rank: the weight trained as two factors up [N, rank] @ down [rank, K]
    sparsity: float | None = None
    pattern: str = "unstructured"
    mask: torch.Tensor | None = None

    def describe(self) -> str:
        parts = []
        if self.bits:
            group = f"g{self.group_size}" if self.group_size else ""
            parts.append(f"w{self.bits}{group}" + ("a8" if self.act_bits == 8 else ""))
        if self.rank is not None:
            parts.append(f"rank {self.rank}")
        if self.sparsity is not None:
            parts.append(f"{self.pattern} {self.sparsity:.0%}" + (" (mask)" if self.mask is not None else ""))
        return " ".join(parts) or "keep"


# --- the plan: from a graph, from a pipeline run, or uniform -----------------------------------------


def plan_from_graph(gm: torch.fx.GraphModule) -> dict[str, LayerTarget]:
    """{module path: LayerTarget} from the annotations on a compiled graph's layer nodes. Masks are
    read from the float weights of pruned (not quantized) layers; use PlanRecorder to keep the masks
    of layers that were pruned and then quantized."""
    plan: dict[str, LayerTarget] = {}
    for node in gm.graph.nodes:
        info = meta.get(node, meta.LayerInfo)
        if info is None or info.kind == "embedding" or node.op != "call_function":
            continue
        target = _target_of(gm, node, plan.get(info.fqn))
        if target is not None:
            plan[info.fqn] = target
    return plan


class PlanRecorder(Instrument):
    """Records the plan while fxc.compile runs: after every pass, each layer's annotations, and the
    keep-mask of each pruned layer while its weight is still float. `.plan` is {module path: LayerTarget}."""

    def __init__(self) -> None:
        self.plan: dict[str, LayerTarget] = {}

    def after_pass(self, pass_, gm, result):
        for node in gm.graph.nodes:
            info = meta.get(node, meta.LayerInfo)
            if info is None or info.kind == "embedding" or node.op != "call_function":
                continue
            target = _target_of(gm, node, self.plan.get(info.fqn))
            if target is not None:
                self.plan[info.fqn] = target


def _target_of(gm: torch.fx.GraphModule, node: torch.fx.Node, known: LayerTarget | None) -> LayerTarget | None:
    plan = meta.get(node, meta.LayerPlan)
    quant = meta.get(node, meta.Quantized)
    sparse = meta.get(node, meta.Sparsity)
    low_rank = meta.get(node, meta.LowRank)
    if plan is None and quant is None and sparse is None and low_rank is None:
        return known
    fields = dict(known.__dict__) if known is not None else {}
    if low_rank is not None:
        fields["rank"] = low_rank.rank
    elif plan is not None and plan.rank_ratio is not None and node.target == torch.ops.aten.linear.default:
        rows, cols = node.args[1].meta["val"].shape
        fields["rank"] = rank_for_ratio(rows, cols, plan.rank_ratio) or None
    if plan is not None:
        if plan.bits is not None:
            fields.update(bits=None if plan.bits >= 16 else plan.bits, group_size=plan.group_size)
            fields.update(act_bits=plan.act_bits)
        if plan.sparsity is not None:
            fields.update(sparsity=plan.sparsity, pattern=plan.pattern or "unstructured")
    if quant is not None:
        fields.update(bits=quant.bits, group_size=quant.group_size, symmetric=quant.symmetric)
        fields.update(act_bits=quant.act_bits)
        if node.target == torch.ops.fxc.int8_linear.default and node.args[4] is not None:
            raise PlanError(
                f"{describe_node(node)}: a static input scale is calibrated on the final weights, which QAT "
                "does not have yet; plan with quantize{act-bits=8} (per-token scales, which QAT simulates) "
                "and lower the trained model with static=true if wanted"
            )
    if sparse is not None:
        fields.update(sparsity=sparse.sparsity, pattern=sparse.pattern)
        weight = _float_weight(gm, node)
        if weight is not None:
            fields["mask"] = (weight.reshape(weight.shape[0], -1) != 0).to(torch.float32)
    if fields.get("bits") is not None and fields["bits"] not in qformat.SUPPORTED_BITS:
        raise PlanError(
            f"{describe_node(node)}: bits={fields['bits']} has no fake quantizer; "
            f"qformat supports {qformat.SUPPORTED_BITS}"
        )
    return LayerTarget(**fields)


def _float_weight(gm: torch.fx.GraphModule, node: torch.fx.Node) -> torch.Tensor | None:
    """The dense float weight of an aten layer or an N:M sparse op; None for quantized ops (whose
    zeros mix pruning with rounding)."""
    if node.target in ir.LAYER_OPS:
        arg = node.args[1]
        return ir.get_tensor(gm, arg.target).detach() if getattr(arg, "op", None) == "get_attr" else None
    if node.target == torch.ops.fxc.sparse_nm_linear.default:
        values, indices = (ir.get_tensor(gm, a.target) for a in node.args[1:3])
        from fxc.ir.ops import densify_nm

        return densify_nm(values.to(torch.float32), indices, node.args[5], node.args[6])
    return None


def uniform_plan(
    model: nn.Module,
    bits: int | None = 4,
    group_size: int | None = None,
    symmetric: bool = True,
    sparsity: float | None = None,
    layers: tuple[str, ...] = (),
    skip: tuple[str, ...] = DEFAULT_SKIP,
) -> dict[str, LayerTarget]:
    """The same target for every nn.Linear / nn.Conv2d chosen by `layers` / `skip` (the patterns and
    defaults every rewrite pass uses, see passes/select.py)."""
    plan = {}
    for fqn, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        if (layers and not any(matches(fqn, p) for p in layers)) or any(matches(fqn, p) for p in skip):
            continue
        plan[fqn] = LayerTarget(bits=bits, group_size=group_size, symmetric=symmetric, sparsity=sparsity)
    if not plan:
        raise PlanError(f"no nn.Linear/nn.Conv2d of {type(model).__name__} matches layers={layers} skip={skip}")
    return plan
