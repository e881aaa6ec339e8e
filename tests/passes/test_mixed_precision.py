"""mixed-precision: the knapsack solvers are optimal (checked by brute force), the pass plans with
the real sensitivity analysis, quantize carries the plan out, and the model's bytes equal the plan."""

import itertools
import math

import pytest
import torch
from quant_helpers import quantized_nodes, run, traced
from tiny_models import MLP, cnn

from fxc import ir, meta
from fxc.cost import model_bytes
from fxc.passes.knapsack import InfeasibleBudget, solve, solve_dp, solve_ilp
from fxc.passes.mixed_precision import planned_bytes
from fxc.passes.quant_scheme import parse_scheme


def _brute_force(costs, scores, budget):
    best = math.inf
    for combo in itertools.product(*(range(len(c)) for c in costs)):
        if sum(c[i] for c, i in zip(costs, combo)) <= budget:
            best = min(best, sum(s[i] for s, i in zip(scores, combo)))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_dp_and_ilp_are_optimal_on_small_instances(seed):
    g = torch.Generator().manual_seed(seed)
    items = int(torch.randint(3, 7, (1,), generator=g))
    unit = int(torch.randint(1, 50, (1,), generator=g))
    costs = [
        [unit * int(c) for c in torch.randint(1, 40, (int(torch.randint(2, 5, (1,), generator=g)),), generator=g)]
        for _ in range(items)
    ]
    scores = [[float(s) for s in torch.rand(len(c), generator=g)] for c in costs]
    lo, hi = sum(min(c) for c in costs), sum(max(c) for c in costs)
    for budget in torch.linspace(lo, hi, 7).round().long().tolist():
        best = _brute_force(costs, scores, budget)
        for solver in (solve_dp, solve_ilp):
            chosen = solver(costs, scores, budget)
            assert sum(c[i] for c, i in zip(costs, chosen)) <= budget
            assert sum(s[i] for s, i in zip(scores, chosen)) == pytest.approx(best, abs=1e-12)


def test_infeasible_budget_reports_the_minimum():
    with pytest.raises(InfeasibleBudget) as info:
        solve([[10, 5], [8, 4]], [[0, 1], [0, 1]], 8)
    assert info.value.minimum == 9


def _model():
    model = MLP(sizes=(64, 128, 128, 32)).eval()
    with torch.no_grad():
        model.layers[1].weight.mul_(torch.exp(torch.randn(128)))  # one layer with uneven columns: sensitive
    return model, (torch.randn(8, 64),)


def test_plan_is_optimal_for_the_sensitivity_scores_and_bytes_match_after_quantize(capsys):
    model, example = _model()
    gm, am = traced(model, example, [torch.randn(32, 64) for _ in range(4)])
    candidates = ("w4", "w4g32", "w8", "keep")
    run(gm, am, f"mixed-precision{{avg-bits=6.0,candidates=[{','.join(candidates)}]}}")
    assert "mixed-precision: planned 3 layers" in capsys.readouterr().out  # the allocation is printed
    layers = ir.weight_layers(gm)
    sensitivity = am.get("sensitivity", candidates=("w4", "w4g32", "w8"), measure="layer")
    shapes = [ir.get_tensor(gm, layer.weight).shape for layer in layers]
    costs = [[parse_scheme(c).storage_bytes(*shape) for c in candidates] for shape in shapes]
    scores = [[0.0 if c == "keep" else sensitivity.score(layer.node.name, c) for c in candidates] for layer in layers]
    budget = int(6.0 * sum(s.numel() for s in shapes) / 8)
    plans = [meta.get(layer.node, meta.LayerPlan) for layer in layers]
    chosen = [candidates.index(parse_scheme_of(p)) for p in plans]
    assert sum(c[i] for c, i in zip(costs, chosen)) <= budget
    assert sum(s[i] for s, i in zip(scores, chosen)) == pytest.approx(_brute_force(costs, scores, budget))
    assert len(set(map(parse_scheme_of, plans))) > 1  # really mixed at this budget

    expected, dense = planned_bytes(gm)
    before = model_bytes(gm)
    run(gm, am, "quantize{method=gptq}")
    assert model_bytes(gm) == before - dense + expected
    assert [meta.get(n, meta.Quantized).bits for n in quantized_nodes(gm)] == [p.bits for p in plans if p.bits != 16]


def parse_scheme_of(plan) -> str:
    if plan.bits == 16:
        return "keep"
    return f"w{plan.bits}" + (f"g{plan.group_size}" if plan.group_size else "")


def test_conv_model_planned_with_model_measure_and_odd_layers_never_get_int4():
    model, example = cnn()
    calibration = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    gm, am = traced(model, example, calibration)
    run(gm, am, "fold-bn,mixed-precision{avg-bits=12,measure=model,candidates=[w4,w8,keep],print-allocation=false}")
    plans = {layer.fqn: meta.get(layer.node, meta.LayerPlan) for layer in ir.weight_layers(gm)}
    assert plans["conv1"].bits in (8, 16) and plans["conv2"].bits in (8, 16)  # 27 and 9 input columns: odd
    expected, dense = planned_bytes(gm)
    before = model_bytes(gm)
    run(gm, am, "quantize")
    assert model_bytes(gm) == before - dense + expected
