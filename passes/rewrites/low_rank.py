"""low-rank: split linear layers into two thinner ones by truncated SVD, plain or activation-aware.

    low-rank{method=svd,ratio=0.8}          every selected layer keeps 80% of its parameters
    low-rank{method=whitened,energy=0.95}   the smallest rank keeping 95% of the (whitened) spectrum
    low-rank{method=whitened,budget=0.8}    80% of the selected layers' parameters model-wide; ranks
                                            per layer from the measured spectra (exact allocation)
    low-rank{rank=64}                       one rank everywhere

Reads: the `hessian` analysis (method=whitened with sequential=false, and every budget allocation with
method=whitened) or the calibration layer by layer through fxc.passmgr.sequential (method=whitened,
sequential=true: each layer's Hessian is taken with the layers before it already compressed, so errors
do not compound); meta.LayerPlan.rank_ratio where a planner wrote one (it wins over
ratio/energy/rank/budget for that layer; in budget mode such layers take their share first).
Writes: each split layer `y = x Wᵀ + b` becomes two aten.linear nodes, `<node>_down` (weight [r, n]) then
`<node>_up` (weight [m, r], the bias), annotated meta.LowRank(rank, (m, n), role) plus the original
LayerInfo and LayerPlan; the dense weight is freed; refresh_meta. A layer whose split would not save
`margin` of its parameters, or that the budget allocation leaves whole, stays dense, annotated
meta.KeptDense(reason) (the report's plan column) and named in the pass summary.
Preserves: nothing.
Options (at most one of ratio, energy, budget, rank; none: only layers with a planned ratio):
    method     svd (weight error, no calibration) | whitened (layer-output error, SVD-LLM)
    ratio      fraction of each layer's parameters kept: rank floor(ratio·m·n/(m+n))
    energy     smallest rank keeping this share of Σ s² (of the whitened spectrum for method=whitened)
    budget     fraction of the selected layers' weights kept model-wide; per layer a rank or "dense",
               minimizing Σ error exactly (passes/algorithms/budget_solver.py). `allocate`=relative
               (default) sums each layer's share of its own output energy lost; absolute sums raw output
               errors, which are not comparable across layers and so spend the budget badly
    rank       one rank everywhere (must be ≤ min(m, n))
    margin     split only when r·(m+n) ≤ (1 - margin)·m·n (default 0.1: a split saving less is rarely
               faster; benchmarks/low_rank_latency.py measures it)
    damp       Hessian dampening (fraction of mean diag); sequential; layers, skip (passes/select.py)
The math lives in passes/algorithms/low_rank_math.py (SVD, whitening, rank rules),
passes/algorithms/budget_solver.py (allocation) and passes/low_rank/split.py (graph surgery). On bad input
(rank > min(m, n), a ratio outside (0, 1] or too small for rank 1, a budget no split can meet, a Hessian
that stays singular) the pass raises before touching the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.errors import FxcError, OptionError
from fxc.ir import meta
from fxc.passes.algorithms import low_rank_math as lrm
from fxc.passes.algorithms.gram import dampen
from fxc.passes.algorithms.layer_inputs import segment_hessians
from fxc.passes.low_rank.split import split_layer
from fxc.passes.select import DEFAULT_SKIP, select_layers
from fxc.passmgr.options import option
from fxc.passmgr.passbase import Pass, PassResult
from fxc.passmgr.sequential import CalibrationRunner, segments, segments_through

AMOUNTS = ("ratio", "energy", "budget", "rank")


@dataclass
class _Layer:
    """One selected layer and what the pass decided for it."""

    layer: ir.WeightLayer
    m: int
    n: int
    planned_ratio: float | None = None
    rank: int | None = None  # decided rank; None until decided (or dense)
    reason: str = ""  # why it stays dense

    @property
    def name(self) -> str:
        return self.layer.node.name


@dataclass(frozen=True)
class LowRank(Pass):
    """Split linear layers into two low-rank factors (plain or whitened SVD)."""

    name = "low-rank"
    method: str = option("whitened", "svd: minimize weight error; whitened: minimize layer-output error "
                         "(needs calibration)", choices=("svd", "whitened"))
    ratio: float | None = option(None, "fraction of each layer's parameters kept", low=0, high=1, low_open=True)
    energy: float | None = option(None, "keep the smallest rank holding this share of the spectrum's energy",
                                  low=0, high=1, low_open=True)
    budget: float | None = option(None, "fraction of the selected layers' parameters kept model-wide, ranks "
                                  "allocated per layer to minimize the summed output error", low=0, high=1,
                                  low_open=True)
    rank: int | None = option(None, "one explicit rank for every layer", low=1)
    margin: float = option(0.1, "split only when r·(m+n) ≤ (1 - margin)·m·n", low=0, high=1, high_open=True)
    allocate: str = option("relative", "budget: minimize Σ error / layer output energy (relative) or Σ raw "
                           "output error (absolute)", choices=("relative", "absolute"))
    damp: float = option(0.01, "Hessian dampening, a fraction of its mean diagonal", low=0)
    sequential: bool = option(True, "whitened: take each layer's Hessian after the layers before it are "
                              "compressed")
    layers: tuple[str, ...] = option((), "module-path patterns to split (empty: every linear layer)")
    skip: tuple[str, ...] = option(DEFAULT_SKIP, "module-path patterns to leave dense")

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [a for a in AMOUNTS if getattr(self, a) is not None]
        if len(given) > 1:
            raise OptionError(f"low-rank: give at most one of ratio, energy, budget, rank; got {', '.join(given)}")

    def run(self, gm: torch.fx.GraphModule, am) -> PassResult:
        targets = self._targets(gm)
        if not targets:
            return PassResult(False, summary="no linear layer selected")
        calibration = am.require_calibration("low-rank{method=whitened}") if self.method == "whitened" else None
        solution = self._allocate(gm, am, targets) if self.budget is not None else None
        if self.method == "whitened" and self.sequential:
            factors = self._factor_sequentially(gm, calibration, targets)
        else:
            hessians = am.get("hessian") if self.method == "whitened" else {}
            factors = {}
            for t in targets:
                if t.reason == "":
                    decomposition = self._decompose(gm, t, hessians.get(t.name))
                    self._decide(t, decomposition.tail)
                    if t.rank is not None:
                        factors[t.name] = decomposition.factors(t.rank, _weight(gm, t).dtype)
        for t in targets:  # every check has passed: rewrite the graph
            if t.name in factors:
                split_layer(gm, t.layer, *factors[t.name], t.rank)
            else:
                meta.put(t.layer.node, meta.KeptDense(self.name, t.reason))
        if factors:
            ir.remove_unused_tensors(gm)
            ir.refresh_meta(gm)
        return PassResult(bool(factors), summary=_summary(self.method, targets, solution))

    # -- which layers, and the checks that need only shapes ------------------------------------------------

    def _targets(self, gm: torch.fx.GraphModule) -> list[_Layer]:
        shared = _shared_weights(gm)
        targets = []
        for layer in select_layers(gm, self.layers, self.skip, kinds=("linear",)):
            if meta.get(layer.node, meta.LowRank) is not None:
                continue  # already one half of a split
            m, n = ir.get_tensor(gm, layer.weight).shape
            plan = meta.get(layer.node, meta.LayerPlan)
            t = _Layer(layer, m, n, plan.rank_ratio if plan else None)
            if t.planned_ratio is None and all(getattr(self, a) is None for a in AMOUNTS):
                continue  # nothing asked for this layer
            if layer.weight in shared:
                t.reason = "its weight is shared with another node"
            targets.append(t)
        if not targets and all(getattr(self, a) is None for a in AMOUNTS):
            raise OptionError("low-rank needs one of ratio, energy, budget or rank (or a planner's "
                              "LayerPlan.rank_ratio), e.g. low-rank{method=whitened,ratio=0.8}")
        for t in targets:
            ratio = t.planned_ratio if t.planned_ratio is not None else self.ratio
            if t.reason or (self.budget is not None and t.planned_ratio is None):
                continue
            if ratio is not None and lrm.rank_for_ratio(t.m, t.n, ratio) < 1:
                raise OptionError(
                    f"low-rank: ratio {ratio} keeps less than rank 1 of layer {t.layer.fqn} ({t.m}x{t.n}); "
                    f"rank 1 keeps {(t.m + t.n) / (t.m * t.n):.4f} of it: raise the ratio or skip the layer")
            if ratio is None and self.rank is not None and self.rank > min(t.m, t.n):
                raise OptionError(
                    f"low-rank: rank {self.rank} exceeds min(m, n) = {min(t.m, t.n)} of layer {t.layer.fqn} "
                    f"({t.m}x{t.n}); lower 'rank' or skip the layer")
        return targets

    # -- rank decisions ------------------------------------------------------------------------------------

    def _decide(self, t: _Layer, tail: torch.Tensor | None = None) -> None:
        """Rank for ratio / energy / rank / plan, then the margin rule (budget ranks are already set)."""
        if t.reason:
            return
        if t.planned_ratio is not None or self.ratio is not None:
            t.rank = lrm.rank_for_ratio(t.m, t.n, t.planned_ratio if t.planned_ratio is not None else self.ratio)
        elif self.energy is not None:
            t.rank = lrm.rank_for_energy(tail, self.energy)
        elif self.rank is not None:
            t.rank = self.rank
        if t.rank is not None and t.rank > lrm.max_split_rank(t.m, t.n, self.margin):
            kept = t.rank * (t.m + t.n) / (t.m * t.n)
            t.reason = (f"rank {t.rank} would keep {kept:.0%} of its {t.m}x{t.n} weight; a split must keep at "
                        f"most {1 - self.margin:.0%} (margin={self.margin})")
            t.rank = None

    def _allocate(self, gm: torch.fx.GraphModule, am, targets: list[_Layer]):
        """Budget mode: spectra of every free layer (original activations), then the exact allocation.
        Layers with a planned ratio or kept dense for another reason use their share first."""
        free = [t for t in targets if not t.reason and t.planned_ratio is None]
        fixed_params = 0
        for t in targets:
            if t not in free:
                self._decide(t)
                fixed_params += t.m * t.n if t.rank is None else t.rank * (t.m + t.n)
        capacity = int(self.budget * sum(t.m * t.n for t in targets)) - fixed_params
        max_ranks = [lrm.max_split_rank(t.m, t.n, self.margin) for t in free]
        needed = sum(t.m + t.n if r >= 1 else t.m * t.n for t, r in zip(free, max_ranks))
        if needed > capacity:  # checked before any spectrum is computed
            total = sum(t.m * t.n for t in targets)
            raise OptionError(
                f"low-rank: budget {self.budget} keeps {capacity + fixed_params:,} of {total:,} parameters, but "
                f"the smallest split (rank 1 where margin {self.margin} allows a split, dense elsewhere) keeps "
                f"{needed + fixed_params:,} ({(needed + fixed_params) / total:.4f}); raise the budget to at least that")
        hessians = am.get("hessian") if self.method == "whitened" else {}
        choices = []
        for t, max_rank in zip(free, max_ranks):  # only spectra are kept: factors are computed again to split
            tail = self._decompose(gm, t, hessians.get(t.name)).tail
            if self.allocate == "relative" and float(tail[0]) > 0:
                tail = tail / tail[0]
            choices.append(lrm.LayerChoices(t.m, t.n, tail, max_rank))
        ranks, solution = lrm.allocate_ranks(choices, capacity)
        for t, r in zip(free, ranks):
            t.rank = r
            if r is None:
                t.reason = "the budget allocation keeps it dense (no split's error is worth its saved parameters)"
        return solution

    # -- factorization -------------------------------------------------------------------------------------

    def _decompose(self, gm, t: _Layer, hessian: torch.Tensor | None) -> lrm.Decomposition:
        weight = _weight(gm, t)
        if self.method == "svd":
            return lrm.svd_decomposition(weight)
        if hessian is None:
            raise FxcError(f"low-rank: no Hessian for layer {t.layer.fqn}; its input never ran on the calibration data")
        return lrm.whitened_decomposition(weight, dampen(hessian, self.damp, t.layer.fqn))

    def _factor_sequentially(self, gm, calibration, targets: list[_Layer]) -> dict[str, tuple]:
        """Whitened SVD segment by segment: each segment's Hessians are measured with the compressed
        weights of every segment before it (written in place for the run, restored afterwards)."""
        by_node = {t.layer.node: t for t in targets if not t.reason}
        runner = CalibrationRunner(gm, calibration)
        originals: dict[str, torch.Tensor] = {}
        factors: dict[str, tuple] = {}
        try:
            for segment in segments_through(segments(gm, kinds=("linear",)), set(by_node)):
                wanted = [by_node[layer.node] for layer in segment.layers if layer.node in by_node]
                if wanted:
                    hessians = segment_hessians(runner, segment)
                    for t in wanted:
                        decomposition = self._decompose(gm, t, hessians.get(t.name))
                        self._decide(t, decomposition.tail)
                        if t.rank is None:
                            continue
                        weight = _weight(gm, t)
                        factors[t.name] = decomposition.factors(t.rank, weight.dtype)
                        originals[t.layer.weight] = weight
                        ir.set_tensor(gm, t.layer.weight, decomposition.approximation(t.rank, weight.dtype))
                runner.advance(segment)
        finally:
            for target, weight in originals.items():
                ir.set_tensor(gm, target, weight)
        return factors


def _weight(gm: torch.fx.GraphModule, t: _Layer) -> torch.Tensor:
    return ir.get_tensor(gm, t.layer.weight)


def _shared_weights(gm: torch.fx.GraphModule) -> set[str]:
    """get_attr targets read by more than one node (a split would have to change both)."""
    readers: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            readers[node.target] = readers.get(node.target, 0) + len(node.users)
    return {target for target, count in readers.items() if count > 1}


def _summary(method: str, targets: list[_Layer], solution) -> str:
    split = [t for t in targets if t.rank is not None]
    dense = [t for t in targets if t.rank is None]
    before = sum(t.m * t.n for t in targets)
    after = sum(t.rank * (t.m + t.n) if t.rank is not None else t.m * t.n for t in targets)
    text = (f"split {len(split)} of {len(targets)} layers ({method}): {before:,} -> {after:,} weights "
            f"({after / max(before, 1):.1%})")
    if solution is not None and not solution.exact:
        text += f"; allocation within {(solution.error - solution.bound) / max(solution.error, 1e-300):.2%} of optimal"
    reasons: dict[str, list[str]] = {}
    for t in dense:
        reasons.setdefault(t.reason, []).append(t.layer.fqn)
    for reason, names in reasons.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        text += f"; dense: {shown}: {reason}"
    return text

