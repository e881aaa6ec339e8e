"""mixed-precision: choose each layer's precision under a size budget, minimizing summed sensitivity.

    mixed-precision{avg-bits=4.5},quantize{method=gptq}       # plan, then carry the plan out
    mixed-precision{avg-bits=4.5,method=gptq},quantize{method=gptq}   # scored by GPTQ's errors
    mixed-precision{bytes=40000000,candidates=[w4,w4g64,w8,keep]}

A planning pass: it writes the plan, `quantize` carries it out.
Reads: the `sensitivity` analysis (measure=layer, model or hutchinson; passes/analyses/sensitivity.py:
`.score(layer node name, candidate)`, HAWQ-v2's trace·‖ΔW‖² when a Hessian trace is known, else the
measured error) or the `method-error` analysis with weighting=output (measure=jacobian; it reads `hessian`
and `output-metric`), for every candidate except "keep" (the dense weight, score 0); both need calibration.
Writes: meta.LayerPlan(bits, group_size, act_bits, source="mixed-precision") on every selected layer
(other fields of an existing plan are kept); bits 16 means keep. With print-allocation=true it also prints the
allocation table (by default nothing: the summary has the totals, the LayerPlans each layer's choice).
Preserves: every analysis (no weight changes).
Options: avg-bits | bytes (exactly one), candidates, measure (auto, jacobian, or sensitivity's), method
(rtn | gptq: the quantize method that will carry the plan out; with gptq each weight-only candidate is
scored by the error GPTQ leaves, not RTN's, since GPTQ recovers more in some formats than others),
symmetric (must match quantize's), print-allocation, layers, skip.

The budget is the stored size of the selected layers' weights: `bytes`, or `avg-bits` per weight
(bytes = avg-bits x weights / 8), counted exactly as `quantize` stores them (passes/specs/scheme.py:
packed integers plus float32 scales and zero points; the bias is not counted, it is unchanged), so
`fxc.ir.cost.model_bytes` of the quantized model equals the plan. At 4.5 average bits uniform w4g64 fits
exactly (4 bits + one float32 scale per 64 weights); the planner may instead spend the same bytes on
per-channel int4 where it costs little and int8 where it matters. A candidate a layer cannot take
(group size not dividing its input dimension, int4 with an odd one) is not offered to that layer.
The choice is the multiple-choice knapsack it is, solved exactly (passes/algorithms/budget_solver.py: branch
and bound on a Pareto frontier with Lagrangian bounds; in the rare degenerate case it cannot prove
optimality the summary says how far from optimal the plan can at most be). A budget below the smallest
reachable size is an error naming the option and that size; nothing is written then.
measure=jacobian scores a candidate by its estimated relative model-output error tr(W ΔW H ΔWᵀ)
(the `method-error` analysis, passes/analyses/method_error.py, with the output metric of
passes/analyses/output_metric.py, as the auto pass does): unlike measure=layer, whose tr(ΔW H ΔWᵀ) is in
each layer's own output units, it is comparable across layers (linear layers only), which is why it is
the better guide when layers differ in scale. The default, measure=auto, is jacobian when every planned
layer is linear and layer otherwise (CNNs: measure=model measures each candidate's model-output error
directly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.errors import FxcError, OptionError
from fxc.ir import meta
from fxc.passes.algorithms.budget_solver import InfeasibleBudget, solve_multiple_choice
from fxc.passes.analyses.method_error import MethodError
from fxc.passes.select import DEFAULT_SKIP, select_layers
from fxc.passes.specs.candidates import QUANTIZERS
from fxc.passes.specs.scheme import Scheme, parse_scheme
from fxc.passmgr.options import option
from fxc.passmgr.passbase import ALL, Pass, PassResult


@dataclass(frozen=True)
class MixedPrecision(Pass):
    """Plan per-layer precision under a byte / average-bit budget, minimizing summed sensitivity (exact)."""

    name = "mixed-precision"
    avg_bits: float | None = option(
        None, "budget: stored bits per weight of the planned layers, scales included", low=0, low_open=True
    )
    bytes: int | None = option(None, "budget: stored bytes of the planned layers' weights", low=1)
    candidates: tuple[str, ...] = option(
        ("w4", "w4g128", "w4g64", "w4g32", "w8", "keep"), "precisions to choose from per layer"
    )
    measure: str = option(
        "auto",
        "how sensitivity is measured: the sensitivity analysis's option, jacobian, or auto (jacobian when every "
        "planned layer is linear, else layer)",
        choices=("auto", "layer", "model", "hutchinson", "jacobian"),
    )
    method: str = option(
        "rtn", "the quantize method that carries out the plan: candidates scored by its errors", choices=QUANTIZERS
    )
    symmetric: bool = option(
        True, "count bytes for symmetric (true) or asymmetric (false) quantization, as quantize will run"
    )
    print_allocation: bool = option(False, "print the per-layer allocation table to stdout")
    layers: tuple[str, ...] = option((), "module-path patterns of layers to plan (empty: all linear/conv layers)")
    skip: tuple[str, ...] = option(DEFAULT_SKIP, "module-path patterns of layers to leave unplanned")

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.avg_bits is None) == (self.bytes is None):
            raise OptionError("mixed-precision: give exactly one budget, option 'avg-bits' or option 'bytes'")
        for text in self.candidates:
            try:
                parse_scheme(text)
            except ValueError as error:
                raise OptionError(f"mixed-precision: option 'candidates': {error}") from None
        if not self.candidates:
            raise OptionError("mixed-precision: option 'candidates' is empty; list precisions such as [w4,w8,keep]")

    def run(self, gm: torch.fx.GraphModule, am) -> PassResult:
        layers = select_layers(gm, self.layers, self.skip, kinds=("linear", "conv2d"))
        if not layers:
            return PassResult(False, summary="no layer to plan")
        options = {layer.node: self._layer_options(gm, layer) for layer in layers}
        shapes = {layer.node: _flat_shape(gm, layer) for layer in layers}
        cost_of = lambda layer, s: s.storage_bytes(*shapes[layer.node], _element_size(gm, layer))
        weights = sum(n * k for n, k in shapes.values())
        budget = self.bytes if self.bytes is not None else int(self.avg_bits * weights / 8)
        minimum = sum(min(cost_of(layer, s) for s in options[layer.node]) for layer in layers)
        if budget < minimum:  # before the (costly) sensitivity analysis
            raise _budget_error(self, minimum, weights)
        measure = self.resolved_measure(layers)
        scores = self._scores(am, layers, options, measure)
        self._drop_unmeasurable(layers, options, scores)
        costs = [[cost_of(layer, s) for s in options[layer.node]] for layer in layers]
        minimum = sum(min(c) for c in costs)
        if budget < minimum:
            raise _budget_error(self, minimum, weights)
        try:
            solution = solve_multiple_choice(costs, scores, budget)
        except InfeasibleBudget as error:  # pragma: no cover - checked above
            raise _budget_error(self, error.minimum, weights) from None
        rows = []
        for layer, cost, score, index in zip(layers, costs, scores, solution.picks):
            scheme = options[layer.node][index]
            old = meta.get(layer.node, meta.LayerPlan) or meta.LayerPlan()
            plan = dataclasses.replace(
                old, bits=scheme.bits, group_size=scheme.group_size, act_bits=scheme.act_bits, source=self.name
            )
            meta.put(layer.node, plan)
            rows.append((layer.fqn, shapes[layer.node], scheme.text, cost[index], score[index]))
        total = sum(r[3] for r in rows)
        summary = (
            f"planned {len(rows)} layers: {total:,} bytes ({8 * total / weights:.3f} bits/weight) within "
            f"{budget:,} ({8 * budget / weights:.3f}); summed sensitivity {sum(r[4] for r in rows):.4g}"
        )
        if not solution.exact:
            summary += f" (within {solution.gap:.2%} of optimal; not proven optimal)"
        if self.print_allocation:
            print(allocation_table(rows, summary))
        return PassResult(True, preserved=frozenset({ALL}), summary=summary)

    def _layer_options(self, gm, layer: ir.WeightLayer) -> list[Scheme]:
        n, k = _flat_shape(gm, layer)
        fitting = [
            s for s in (parse_scheme(c, self.symmetric) for c in self.candidates) if s.unfit_reason(n, k) is None
        ]
        fitting = [s for s in fitting if not (s.act_bits and layer.kind != "linear")]
        if not fitting:
            raise FxcError(
                f"mixed-precision: no candidate in {list(self.candidates)} fits layer {layer.fqn} ([{n}, {k}]); "
                f"add 'keep' or w8 to option 'candidates', or skip the layer with skip=[\"{layer.fqn}\"]"
            )
        return fitting

    def resolved_measure(self, layers: list[ir.WeightLayer]) -> str:
        """The measure used: auto is jacobian (comparable across layers, linear layers only) when every
        planned layer is linear, else layer."""
        if self.measure != "auto":
            return self.measure
        return "jacobian" if all(layer.kind == "linear" for layer in layers) else "layer"

    def _sensitivities(self, am, layers, options, measure) -> dict[torch.fx.Node, object]:
        """The sensitivity result for each layer. Layers are measured in groups sharing one candidate
        list, so no layer is measured in a scheme it cannot take (and cached runs are reused)."""
        groups: dict[tuple[str, ...], list[ir.WeightLayer]] = {}
        for layer in layers:
            texts = tuple(s.text for s in options[layer.node] if not s.keeps)
            if texts:
                groups.setdefault(texts, []).append(layer)
        if measure == "jacobian":  # relative model-output error estimates, comparable across layers
            fqns = tuple(layer.fqn for layer in layers)
            texts = tuple(dict.fromkeys(t for group in groups for t in group))
            errors = am.get(
                MethodError(
                    candidates=texts, weighting="output", quantize_method=self.method, layers=fqns, skip=()
                )
            )
            result = _ErrorTable(errors)
            return {layer.node: result for layer in layers}
        if len(groups) == 1:  # one analysis over the pass's own selection
            (texts,) = groups
            result = am.get(
                "sensitivity",
                candidates=texts,
                measure=measure,
                layers=self.layers,
                skip=self.skip,
                quantizer=self.method,
            )
            return {layer.node: result for layer in layers}
        out = {}
        for texts, members in groups.items():
            fqns = tuple(layer.fqn for layer in members)
            result = am.get(
                "sensitivity", candidates=texts, measure=measure, layers=fqns, skip=(), quantizer=self.method
            )
            out |= {layer.node: result for layer in members}
        return out

    def _scores(self, am, layers, options, measure) -> list[list[float]]:
        results = self._sensitivities(am, layers, options, measure)
        scores = []
        for layer in layers:
            sensitivity = results.get(layer.node)
            row = []
            for scheme in options[layer.node]:
                if scheme.keeps:
                    row.append(0.0)
                    continue
                try:
                    row.append(float(sensitivity.score(layer.node.name, scheme.text)))
                except KeyError:
                    raise FxcError(
                        f"mixed-precision: the sensitivity analysis (measure={measure}) has no score for "
                        f"layer {layer.fqn} (node {layer.node.name}) as {scheme.text}; measure=model covers conv2d "
                        "layers too, or skip the layer"
                    ) from None
            scores.append(row)
        return scores

    def _drop_unmeasurable(self, layers, options, scores) -> None:
        """Remove options the sensitivity analysis scored inf (it could not apply them)."""
        for layer, row in zip(layers, scores):
            kept = [(s, v) for s, v in zip(options[layer.node], row) if v != float("inf")]
            if not kept:
                raise FxcError(
                    f"mixed-precision: every candidate is infeasible for layer {layer.fqn}; add 'keep' to "
                    "option 'candidates' or skip the layer"
                )
            options[layer.node] = [s for s, _ in kept]
            row[:] = [v for _, v in kept]


class _ErrorTable:
    """method-error's {node name: {candidate: error}} read like a sensitivity result."""

    def __init__(self, errors: dict[str, dict[str, float]]):
        self.errors = errors

    def score(self, layer: str, candidate: str) -> float:
        return self.errors[layer][candidate]


def _budget_error(p: MixedPrecision, minimum: int, weights: int) -> OptionError:
    if p.bytes is not None:
        return OptionError(
            f"mixed-precision: option 'bytes'={p.bytes:,} is below the smallest reachable size {minimum:,} bytes "
            "of the planned layers with these candidates; raise it, add smaller candidates, or skip layers"
        )
    return OptionError(
        f"mixed-precision: option 'avg-bits'={p.avg_bits} is below the smallest reachable "
        f"{8 * minimum / weights:.4f} bits per weight ({minimum:,} bytes) with these candidates; raise it, "
        "add smaller candidates, or skip layers"
    )


def _flat_shape(gm, layer: ir.WeightLayer) -> tuple[int, int]:
    weight = ir.get_tensor(gm, layer.weight)
    return weight.shape[0], weight[0].numel()


def _element_size(gm, layer: ir.WeightLayer) -> int:
    return ir.get_tensor(gm, layer.weight).element_size()


def allocation_table(rows, title: str) -> str:
    """rows: (layer, (n, k), choice, bytes, score)."""
    header = ("layer", "shape", "choice", "bytes", "sensitivity")
    body = [(name, f"{n}x{k}", choice, f"{b:,}", f"{s:.3g}") for name, (n, k), choice, b, s in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    counts = {}
    for row in rows:
        counts[row[2]] = counts.get(row[2], 0) + 1
    mix = ", ".join(f"{choice}: {count}" for choice, count in sorted(counts.items()))
    return "\n".join([f"mixed-precision: {title}", f"  choices: {mix}", line(header), *map(line, body)])


def planned_bytes(gm: torch.fx.GraphModule, symmetric: bool = True) -> tuple[int, int]:
    """(stored bytes the plans on dense layers ask for, dense bytes of those layers' weights): what a
    following quantize will store, for checking the quantized model's size against the plan."""
    planned = dense = 0
    for layer in ir.weight_layers(gm):
        plan = meta.get(layer.node, meta.LayerPlan)
        if plan is None or plan.bits is None:
            continue
        weight = ir.get_tensor(gm, layer.weight)
        scheme = Scheme(plan.bits, plan.group_size, symmetric if plan.act_bits is None else True, plan.act_bits)
        planned += scheme.storage_bytes(weight.shape[0], weight[0].numel(), weight.element_size())
        dense += weight.numel() * weight.element_size()
    return planned, dense
