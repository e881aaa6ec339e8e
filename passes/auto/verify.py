"""The auto pass's joint check: the knapsack plan against a few other plans, on the model as a whole.

    picks, line = check_plan(gm, am, choices, costs, scores, limit, picks, options)   # options: the Auto pass

The knapsack adds up per-layer damages. That is exact for small, independent errors, but when many layers
are compressed hard (int4 everywhere, low rank on a few) their errors interact and the sum can rank two
plans the wrong way round: a mix of int4 formats and low rank can be predicted to do less damage than
uniform int4 and yet do more. So before a plan is carried out it is checked: every plan in a small
portfolio that fits the budget gets all its layers compressed at once (weights made as the passes will
make them: the `method-error` analysis's MethodError.make, passes/analyses/method_error.py) and its
relative model-output error ||y' - y||² / ||y||² is measured on the first calibration batches; the plan
with the least measured error wins. The portfolio:
    knapsack                     the exact optimum over every option
    knapsack, <family> only      the exact optimum when only some option families are offered
                                 (quantization only; no low rank; no sparsity), where that differs
    uniform <option>             every layer the same option, where every layer can take it and it fits
Reads the graph's weights, the calibration batches and the `hessian` analysis; writes nothing (weights are
swapped for each measurement and restored, also on error).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.fx

from fxc import ir
from fxc.passes.algorithms.budget_solver import InfeasibleBudget
from fxc.passes.analyses.method_error import MethodError
from fxc.passes.analyses.sensitivity import model_outputs, relative_squared_error
from fxc.passes.auto.plan import LayerChoices, solve
from fxc.passes.specs.candidates import KEEP, Candidate


def check_plan(gm, am, choices, costs, scores, limit, picks, options) -> tuple[list[int], str]:
    """The plan with the least joint model-output error among the knapsack's (`picks`) and the rest of its
    portfolio, and a line saying so ("" when the portfolio holds the knapsack's plan alone). `options`: the
    Auto pass (its methods and `verify`, the number of calibration batches)."""
    plans = portfolio(choices, costs, scores, limit, picks)
    if len(plans) == 1:
        return picks, ""
    estimator = MethodError(
        quantize_method=options.quantize_method,
        prune_method=options.prune_method,
        low_rank_method=options.low_rank_method,
    )
    hessians = am.get("hessian")

    def make(c: LayerChoices, option: Candidate, weight: torch.Tensor, scratch: dict) -> torch.Tensor:
        dense = weight.detach().to(torch.float32).reshape(c.shape)
        return estimator.make(option, dense, hessians[c.layer.node.name], c.layer.fqn, scratch)

    batches = list(am.require_calibration("auto"))[: options.verify]
    errors = joint_errors(gm, am, choices, plans, make, batches)
    winner = min(errors, key=errors.get)
    return plans[winner], describe(errors, winner)


FAMILIES: dict[str, Callable[[Candidate], bool]] = {
    "quantization only": lambda o: o.pattern is None and o.rank_ratio is None,
    "no low rank": lambda o: o.rank_ratio is None,
    "no sparsity": lambda o: o.pattern is None,
}


def portfolio(
    choices: list[LayerChoices], costs: list[list[int]], scores: list[list[float]], limit: float, picks: list[int]
) -> dict[str, list[int]]:
    """Plans (option index per layer) to check, by label; the knapsack's own plan first, duplicates dropped."""
    plans = {"knapsack": list(picks)}
    for family, allowed in FAMILIES.items():
        kept = [[i for i, o in enumerate(c.options) if o is KEEP or allowed(o)] for c in choices]
        if all(len(k) == len(c.options) for k, c in zip(kept, choices)):
            continue  # every option is in the family: the same problem as the knapsack's
        try:
            sub = solve(
                [[row[i] for i in k] for row, k in zip(costs, kept)],
                [[row[i] for i in k] for row, k in zip(scores, kept)],
                limit,
            )
        except InfeasibleBudget:
            continue
        plans[f"knapsack, {family}"] = [k[p] for k, p in zip(kept, sub.picks)]
    texts = dict.fromkeys(o.text for c in choices for o in c.options if o is not KEEP)
    for text in texts:
        uniform = [_index_of(c, text) for c in choices]
        if None not in uniform and sum(row[i] for row, i in zip(costs, uniform)) <= limit:
            plans[f"uniform {text}"] = uniform
    unique: dict[tuple[int, ...], str] = {}
    for label, plan in plans.items():
        unique.setdefault(tuple(plan), label)
    return {label: list(plan) for plan, label in unique.items()}


def _index_of(c: LayerChoices, text: str) -> int | None:
    return next((i for i, o in enumerate(c.options) if o is not KEEP and o.text == text), None)


def joint_errors(
    gm: torch.fx.GraphModule,
    am,
    choices: list[LayerChoices],
    plans: dict[str, list[int]],
    make: Callable[[LayerChoices, Candidate, torch.Tensor, dict], torch.Tensor],
    batches: list,
) -> dict[str, float]:
    """Relative model-output error of each plan with all its layers compressed at once (weights by `make`,
    given the layer, the option, the original weight and a per-layer scratch dict), on `batches`; the
    graph is restored after."""
    originals = [ir.get_tensor(gm, c.layer.weight) for c in choices]
    scratch: list[dict] = [{} for _ in choices]
    made: dict[tuple[int, int], torch.Tensor] = {}
    errors = {}
    try:
        reference = model_outputs(am, batches)
        for label, picks in plans.items():
            for j, (c, i) in enumerate(zip(choices, picks)):
                if c.options[i] is KEEP:
                    ir.set_tensor(gm, c.layer.weight, originals[j])
                    continue
                if (j, i) not in made:
                    weight = make(c, c.options[i], originals[j], scratch[j])
                    made[j, i] = weight.to(originals[j].dtype).view_as(originals[j])
                ir.set_tensor(gm, c.layer.weight, made[j, i])
            errors[label] = relative_squared_error(model_outputs(am, batches), reference)
    finally:
        for c, weight in zip(choices, originals):
            ir.set_tensor(gm, c.layer.weight, weight)
    return errors


def describe(errors: dict[str, float], winner: str) -> str:
    """One line: the winner, then every plan's joint error, best first ("label: error; ...")."""
    ranked = sorted(errors.items(), key=lambda item: item[1])
    return f"joint check: {winner} wins (" + "; ".join(f"{label}: {error:.4g}" for label, error in ranked) + ")"
