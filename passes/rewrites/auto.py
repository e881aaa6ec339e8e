"""auto: per layer, the compression that costs the least predicted damage for the bytes (or latency) it saves.

    auto{ratio=6}                                  # the planned layers' weights 6x smaller than now
    auto{bytes=120000000,scope=model}              # the whole model within 120 MB (fxc.ir.cost.model_bytes)
    auto{latency=0.002}                            # roofline estimate of the planned layers
    fxc.compile(model, target=fxc.Budget(ratio=6), calibration=batches)     # the same, typed

A planning pass that also carries its plan out (apply=true, the default).
Reads: calibration (required); the `method-error` analysis (estimate=executed, measure=jacobian or layer;
with weighting=output it reads `output-metric`), else `sensitivity` (and `output-metric` for the gain of
measure=jacobian); `hessian` for the joint check (verify > 0); meta.LayerPlan / LowRank / LayerInfo while
carrying the plan out.
Writes: meta.LayerPlan (source "auto") on every planned layer and meta.Frontier on the output node; with
apply=true it then runs low-rank, prune and quantize on exactly the planned layers (passes/auto/execute.py:
what those passes write, plus int8 values for N:M+w8 layers) and checks that fxc.ir.cost.model_bytes of
the result equals the plan to the byte. With print-plan=true it also prints the plan and the frontier (by
default it prints nothing: the plan is in the summary, the LayerPlans and the Frontier, which cm.report() shows).
Preserves: nothing with apply=true; every analysis with apply=false (only meta changes).
Options: bytes | ratio | latency (exactly one), scope, candidates, measure, estimate, gain-batches, probes,
grid, frontier, peak-flops, bandwidth, prune-method, quantize-method, low-rank-method, verify, apply,
print-plan, layers, skip, seed; `fxc.passmgr.registry.lookup("fxc.passes", "auto").help()` prints each.

For every selected linear layer the options are "keep" plus each candidate spec (passes/specs/candidates.py)
the layer's shape can hold: int8, int4 per channel or per group, N:M, unstructured levels, low rank at
several ratios, and combinations such as 2:4+w8 and r0.5+w8. Each option's cost is the bytes the
compressed model will really hold for the weight (passes/auto/plan.py; or its roofline latency); its damage
is the output error it causes on the calibration data (passes/auto/damage.py), made comparable across
layers by `measure`:
    jacobian    tr(W ΔW H ΔWᵀ): the layer's error matrix weighed by how its output reaches the model
                output (`output-metric`, passes/analyses/output_metric.py, a few backward passes): ≈ relative
                model-output error, one layer compressed at a time (default)
    layer       tr(ΔW H ΔWᵀ) as is (each layer in its own output units)
    model       `sensitivity`'s model-output error with one layer compressed at a time (exact, one
                forward pass per layer and option: slow)
    hutchinson  `sensitivity`'s HAWQ-v2 trace·||ΔW||² (needs fxc.compile(..., loss_fn=...))
and ΔW is made by `estimate`: executed (default; `method-error`, passes/analyses/method_error.py) makes it
as the passes will (GPTQ, SparseGPT, whitened SVD), rtn takes `sensitivity`'s round-to-nearest candidates
(for jacobian then scaled by the isotropic gain tr(W)/N). RTN errors overstate what GPTQ leaves of int4,
so planning with them under-values int4 against low rank: keep estimate=executed unless planning time
matters more.
The choice is a multiple-choice knapsack, solved exactly by passes/algorithms/budget_solver.py (branch and
bound on a Pareto frontier; where a degenerate instance cannot be proven optimal the summary says how close
it is; a latency budget is cut into `grid` steps with every cost rounded up, so the plan never exceeds it).
The exact optimum is also solved at `frontier` budgets between the cheapest plan and the dense model: the
quality/size frontier. Before it is carried out the knapsack's plan is checked jointly (`verify` batches;
passes/auto/verify.py): the per-layer damages add up only approximately, so the plan is compared, all
layers compressed at once, with the knapsack's optimum over a few option families and with each uniform
option that fits, by measured model-output error on calibration data, and the best of them is the one
carried out (the summary says which). The table (printed with print-plan=true), summary and Frontier:
passes/auto/report.py.
A budget below the smallest reachable size raises OptionError naming that size before anything changes;
so does a planned layer whose weight is shared (tied) with another tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.api.budget import SCOPES
from fxc.errors import OptionError
from fxc.ir import cost, meta
from fxc.passes.algorithms.budget_solver import InfeasibleBudget
from fxc.passes.auto import plan as auto_plan
from fxc.passes.auto import report
from fxc.passes.auto import verify as auto_verify
from fxc.passes.auto.damage import score_options
from fxc.passes.auto.execute import carry_out, check_bytes
from fxc.passes.auto.plan import LayerChoices
from fxc.passes.select import DEFAULT_SKIP, select_layers
from fxc.passes.specs.candidates import KEEP, CandidateError, parse_candidate
from fxc.passmgr import registry
from fxc.passmgr.options import option
from fxc.passmgr.passbase import ALL, Pass, PassResult

DEFAULT_CANDIDATES = (
    "w8", "w4g32", "w4g64", "w4g128", "w4", "2:4", "2:4+w8", "r0.5+w8", "r0.25+w8", "r0.5+w4", "r0.25+w4",
)  # fmt: skip
MEASURES = ("jacobian", "layer", "model", "hutchinson")
ESTIMATES = ("executed", "rtn")


@dataclass(frozen=True)
class Auto(Pass):
    """Per layer, the cheapest-damage compression under a byte / ratio / latency budget (exact knapsack)."""

    name = "auto"
    bytes: int | None = option(None, "budget: stored bytes, counted over `scope`", low=1)
    ratio: float | None = option(None, "budget: size now / size after, over `scope`", low=1.0)
    latency: float | None = option(None, "budget: roofline seconds of the planned layers", low=0, low_open=True)
    scope: str = option("layers", "bytes/ratio count the planned weights, or every tensor of the model", choices=SCOPES)
    candidates: tuple[str, ...] = option(DEFAULT_CANDIDATES, "compressions offered per layer ('keep' always is)")
    measure: str = option("jacobian", "how damage is made comparable across layers", choices=MEASURES)
    estimate: str = option(
        "executed", "layer errors of options as the passes make them, or rtn (sensitivity's)", choices=ESTIMATES
    )
    gain_batches: int = option(2, "calibration batches for the jacobian / model / hutchinson measures", low=1)
    probes: int = option(4, "jacobian / hutchinson: random probes per batch", low=1)
    grid: int = option(100_000, "latency budgets: steps the budget is cut into", low=100)
    frontier: int = option(8, "budgets the exact optimum is solved at for the frontier (0: none)", low=0)
    peak_flops: float = option(1e12, "roofline: FLOP/s of the target", low=0, low_open=True)
    bandwidth: float = option(5e10, "roofline: memory bytes/s of the target", low=0, low_open=True)
    prune_method: str = option(
        "sparse-gpt", "how planned sparsity is made", choices=("magnitude", "wanda", "sparse-gpt")
    )
    quantize_method: str = option("gptq", "how planned bits are made", choices=("rtn", "gptq"))
    low_rank_method: str = option("whitened", "how planned low rank is made", choices=("svd", "whitened"))
    verify: int = option(
        2, "calibration batches on which the knapsack plan is checked jointly against others (0: no check)", low=0
    )
    apply: bool = option(True, "carry the plan out (false: only write meta.LayerPlan)")
    print_plan: bool = option(False, "print the per-layer plan and the frontier to stdout")
    layers: tuple[str, ...] = option((), "module-path patterns of layers to plan (empty: every linear layer)")
    skip: tuple[str, ...] = option(DEFAULT_SKIP, "module-path patterns of layers to leave as they are")
    seed: int = option(0, "seed of the random probes")

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [n for n in ("bytes", "ratio", "latency") if getattr(self, n) is not None]
        if len(given) != 1:
            raise OptionError(
                f"auto: give exactly one budget, option 'bytes', 'ratio' or 'latency' (got {given or 'none'})"
            )
        if self.latency is not None and self.scope != "layers":
            raise OptionError("auto: option 'latency' counts the planned layers; drop option 'scope'")
        for candidate in self._candidates():
            reason = auto_plan.realizable(candidate)
            if reason:
                raise OptionError(f"auto: option 'candidates': {reason}")

    def _candidates(self):
        out = []
        for text in dict.fromkeys(self.candidates):
            if text in ("keep", "dense"):
                continue
            try:
                out.append(parse_candidate(text))
            except CandidateError as error:
                raise OptionError(f"auto: option 'candidates': {error}") from None
        return tuple(out)

    # -- the pass ------------------------------------------------------------------------------------------

    def run(self, gm: torch.fx.GraphModule, am) -> PassResult:
        am.require_calibration("auto")
        layers = select_layers(gm, self.layers, self.skip, kinds=("linear",))
        if not layers:
            raise OptionError(f"auto: no linear layer matches layers={list(self.layers)} skip={list(self.skip)}")
        _refuse_shared(gm, layers)
        candidates = self._candidates()
        low_rank = [c.text for c in candidates if c.rank_ratio is not None]
        if low_rank and self.apply and "low-rank" not in registry.names("fxc.passes"):
            raise OptionError(
                f"auto: candidates {', '.join(low_rank)} need the low-rank pass, which is not installed; "
                "drop them from option 'candidates'"
            )
        choices = auto_plan.layer_choices(gm, layers, candidates, self.peak_flops, self.bandwidth)
        fixed = cost.model_bytes(gm) - sum(c.dense_bytes for c in choices)
        capacity = self._capacity(choices, fixed)
        self._check_reachable(choices, capacity, fixed)  # before the (costly) measurements
        score_options(am, choices, self)
        auto_plan.drop_unmeasured(choices)
        self._check_reachable(choices, capacity, fixed)
        costs = [self._costs(c, capacity) for c in choices]
        scores = [c.scores for c in choices]
        limit = capacity if self.latency is None else self.grid
        try:
            solution = auto_plan.solve(costs, scores, limit)
        except InfeasibleBudget:
            raise OptionError(
                f"auto: option 'latency'={self.latency} is reachable only without rounding; raise it slightly "
                "or raise option 'grid'"
            ) from None
        picks, check = solution.picks, ""
        if self.verify:
            picks, check = auto_verify.check_plan(gm, am, choices, costs, scores, limit, picks, self)
        plans = auto_plan.frontier(costs, scores, self.frontier) if self.frontier else []
        for c, i in zip(choices, picks):
            option_ = c.options[i]
            plan = meta.LayerPlan(bits=16, source="auto") if option_ is KEEP else option_.to_plan("auto")
            meta.put(c.layer.node, plan)
        whole = self.scope == "model" and self.latency is None
        budget = self._capacity(choices, fixed) + (fixed if whole else 0)
        latency = self.latency is not None
        frontier = report.frontier_record(choices, picks, plans, fixed, budget, latency, self.scope, self.measure)
        summary = report.summary_line(choices, picks, fixed, frontier, self.measure)
        if not solution.exact:
            summary += f" (plan within {solution.gap:.2%} of optimal; not proven optimal)"
        summary += f"; {check}" if check else ""
        if self.print_plan:
            print(report.plan_table(choices, picks, summary))
            print("\n".join(frontier.describe()))
        if not self.apply:
            meta.put(_output_node(gm), frontier)
            return PassResult(True, preserved=frozenset({ALL}), summary=summary)
        expected = fixed + sum(c.bytes[i] for c, i in zip(choices, picks))
        plan = {c.layer.fqn: c.options[i] for c, i in zip(choices, picks) if c.options[i] is not KEEP}
        methods = {"low_rank": self.low_rank_method, "prune": self.prune_method, "quantize": self.quantize_method}
        steps = carry_out(gm, am, plan, methods)
        check_bytes(gm, expected, len(choices))
        meta.put(_output_node(gm), frontier)
        return PassResult(True, summary=summary + ("; " + "; ".join(steps) if steps else ""))

    # -- budget --------------------------------------------------------------------------------------------

    def _capacity(self, choices: list[LayerChoices], fixed: int) -> float:
        """The budget for the planned layers alone: bytes, or seconds for a latency budget."""
        if self.latency is not None:
            return self.latency
        dense = sum(c.dense_bytes for c in choices)
        whole = self.scope == "model"
        if self.bytes is not None:
            return self.bytes - (fixed if whole else 0)
        return math.floor((dense + (fixed if whole else 0)) / self.ratio) - (fixed if whole else 0)

    def _costs(self, c: LayerChoices, capacity: float) -> list[int]:
        if self.latency is None:
            return c.bytes
        tick = capacity / self.grid
        return [math.ceil(s / tick) for s in c.seconds]  # rounded up: the plan never exceeds the budget

    def _check_reachable(self, choices: list[LayerChoices], capacity: float, fixed: int) -> None:
        if self.latency is not None:
            least = sum(min(c.seconds) for c in choices)
            if least > capacity:
                raise OptionError(
                    f"auto: option 'latency'={self.latency:.4g} s is below the smallest reachable {least:.4g} s of the "
                    f"{len(choices)} planned layers (roofline); raise it, add faster candidates, or plan more layers"
                )
            return
        least = sum(min(c.bytes) for c in choices)
        if least <= capacity:
            return
        whole = self.scope == "model"
        reachable = least + (fixed if whole else 0)
        now = sum(c.dense_bytes for c in choices) + (fixed if whole else 0)
        asked = f"'bytes'={self.bytes:,}" if self.bytes is not None else f"'ratio'={self.ratio:g}"
        where = "the whole model" if whole else f"the {len(choices)} planned layers' weights"
        raise OptionError(
            f"auto: option {asked} is out of reach: the smallest reachable size of {where} with these candidates is "
            f"{reachable:,} bytes (ratio {now / reachable:.3g}); raise the budget, add smaller candidates "
            "(e.g. r0.25+w4), or plan more layers"
        )


def _output_node(gm: torch.fx.GraphModule) -> torch.fx.Node:
    return next(n for n in reversed(gm.graph.nodes) if n.op == "output")


def _refuse_shared(gm: torch.fx.GraphModule, layers: list[ir.WeightLayer]) -> None:
    """A planned weight used elsewhere (tied embeddings) would stay in memory: compressing it saves nothing."""
    users: dict[str, list[torch.fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            users.setdefault(node.target, []).extend(node.users)
    storages: dict[int, list[str]] = {}
    for name, tensor in [*gm.named_parameters(remove_duplicate=False), *gm.named_buffers(remove_duplicate=False)]:
        storages.setdefault(tensor.untyped_storage().data_ptr(), []).append(name)
    for layer in layers:
        others = [u for u in users.get(layer.weight, []) if u is not layer.node]
        tensor = ir.get_tensor(gm, layer.weight)
        aliases = [n for n in storages.get(tensor.untyped_storage().data_ptr(), []) if n != layer.weight]
        if others or aliases:
            shared = ", ".join([u.name for u in others] + aliases)
            raise OptionError(
                f"auto: layer {layer.fqn} shares its weight with {shared} (tied weights); compressing it would keep "
                f'the shared tensor in memory too. Leave it out with skip=[..., "{layer.fqn}"]'
            )
