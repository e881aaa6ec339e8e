"""mixed-precision: the pass plans with the real sensitivity analysis, its plan is the optimum (checked by
brute force; the solver itself is tested in tests/passes/algorithms/test_budget_solver.py), layers never get
a precision they cannot hold, quantize carries the plan out, and the model's bytes equal the plan."""

import itertools
import math

import pytest
import torch
from quant_helpers import quantized_nodes, run, traced
from tiny_models import MLP, cnn

from fxc import ir
from fxc.errors import FxcError
from fxc.ir import meta
from fxc.ir.cost import model_bytes
from fxc.passes.rewrites.mixed_precision import planned_bytes
from fxc.passes.specs.scheme import parse_scheme


def _brute_force(costs, scores, budget):
    best = math.inf
    for combo in itertools.product(*(range(len(c)) for c in costs)):
        if sum(c[i] for c, i in zip(costs, combo)) <= budget:
            best = min(best, sum(s[i] for s, i in zip(scores, combo)))
    return best


def _model():
    model = MLP(sizes=(64, 128, 128, 32)).eval()
    with torch.no_grad():
        model.layers[1].weight.mul_(torch.exp(torch.randn(128)))  # one layer with uneven columns: sensitive
    return model, (torch.randn(8, 64),)


def test_plan_is_optimal_for_the_sensitivity_scores_and_bytes_match_after_quantize(capsys):
    model, example = _model()
    gm, am = traced(model, example, [torch.randn(32, 64) for _ in range(4)])
    candidates = ("w4", "w4g32", "w8", "keep")
    text = f"mixed-precision{{avg-bits=6.0,measure=layer,candidates=[{','.join(candidates)}],print-allocation=true}}"
    run(gm, am, text)
    assert "mixed-precision: planned 3 layers" in capsys.readouterr().out  # the allocation is printed when asked
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


def _odd_model():
    """97 -> 64 -> 7 -> 5: layers 0 and 4 have odd input widths (no int4), 97 takes no group size."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(97, 64), torch.nn.ReLU(), torch.nn.Linear(64, 7), torch.nn.ReLU(), torch.nn.Linear(7, 5)
    ).eval()
    return traced(model, (torch.randn(8, 97),), [torch.randn(16, 97) for _ in range(3)])


@pytest.mark.parametrize("measure", ["layer", "model", "jacobian"])
def test_unsupported_layer_candidate_pairs_are_never_planned(measure):
    gm, am = _odd_model()
    candidates = ("w4", "w4g32", "w8", "keep")
    run(gm, am, f"mixed-precision{{avg-bits=8.3,measure={measure},candidates=[{','.join(candidates)}]}}")
    layers = ir.weight_layers(gm)
    plans = [meta.get(layer.node, meta.LayerPlan) for layer in layers]
    assert plans[0].bits in (8, 16) and plans[2].bits in (8, 16)  # 97 and 7 input columns: no int4
    # the plan is the optimum over the supported pairs (the sensitivity analysis scores the others inf)
    score = _scorer(am, layers, measure)
    shapes = [ir.get_tensor(gm, layer.weight).shape for layer in layers]
    costs = [[parse_scheme(c).storage_bytes(*shape) for c in candidates] for shape in shapes]
    scores = [[0.0 if c == "keep" else score(layer.node.name, c) for c in candidates] for layer in layers]
    assert [math.isinf(s) for row in scores for s in row] == [
        True, True, False, False, False, False, False, False, True, True, False, False
    ]  # fmt: skip
    budget = int(8.3 * sum(s.numel() for s in shapes) / 8)
    chosen = [candidates.index(parse_scheme_of(p)) for p in plans]
    assert sum(c[i] for c, i in zip(costs, chosen)) <= budget
    assert sum(s[i] for s, i in zip(scores, chosen)) == pytest.approx(_brute_force(costs, scores, budget))
    expected, dense = planned_bytes(gm)
    before = model_bytes(gm)
    run(gm, am, "quantize")
    assert model_bytes(gm) == before - dense + expected


def test_default_measure_is_jacobian_for_linear_layers_and_layer_for_convs():
    """measure=auto: output-weighted errors where every planned layer is linear, per-layer errors with convs."""
    from fxc.passes.rewrites.mixed_precision import MixedPrecision

    model, example = _model()
    with torch.no_grad():
        model.layers[-1].weight.mul_(20)  # the last layer's own output error is large in its units
    gm, am = traced(model, example, [torch.randn(32, 64) for _ in range(4)])
    spec = "avg-bits=5.0,candidates=[w4,w4g32,w8,keep],print-allocation=false"
    plans = {}
    for measure in ("auto", "jacobian", "layer"):
        run(gm, am, f"mixed-precision{{{spec},measure={measure}}}")
        plans[measure] = [parse_scheme_of(meta.get(layer.node, meta.LayerPlan)) for layer in ir.weight_layers(gm)]
    assert plans["auto"] == plans["jacobian"]
    assert plans["jacobian"] != plans["layer"]  # the two measures rank this model's layers differently
    pass_ = MixedPrecision(avg_bits=5.0)
    assert pass_.resolved_measure(ir.weight_layers(gm)) == "jacobian"
    conv_model, conv_example = cnn()
    conv_gm, _ = traced(conv_model, conv_example, [torch.randn(4, 3, 8, 8)])
    assert pass_.resolved_measure(ir.weight_layers(conv_gm)) == "layer"


def _scorer(am, layers, measure):
    """score(node name, candidate) as the pass reads it for this measure."""
    if measure == "jacobian":
        from fxc.passes.analyses.method_error import MethodError

        fqns = tuple(layer.fqn for layer in layers)
        candidates = ("w4", "w4g32", "w8")
        errors = am.get(
            MethodError(candidates=candidates, weighting="output", quantize_method="rtn", layers=fqns, skip=())
        )
        return lambda name, candidate: errors[name][candidate]
    return am.get("sensitivity", candidates=("w4", "w4g32", "w8"), measure=measure, skip=()).score


def test_layer_with_no_supported_candidate_is_named():
    gm, am = _odd_model()
    with pytest.raises(FxcError, match=r"no candidate in \['w4', 'w4g32'\] fits layer 0 \(\[64, 97\]\).*skip"):
        run(gm, am, "mixed-precision{avg-bits=4.5,candidates=[w4,w4g32]}")


def test_gptq_method_plans_with_gptq_errors(capsys):
    """mixed-precision{method=gptq} scores candidates by GPTQ's errors, so its plan is optimal for those scores
    (and its summed GPTQ error is no worse than the RTN-scored plan's)."""
    model, example = _model()
    mix = torch.randn(64, 64)
    gm, am = traced(model, example, [torch.randn(32, 64) @ mix for _ in range(4)])
    candidates = ("w4", "w4g32", "w8", "keep")
    spec = f"avg-bits=5.0,measure=layer,candidates=[{','.join(candidates)}]"
    run(gm, am, f"mixed-precision{{{spec},method=gptq,print-allocation=true}}")
    reported = float(capsys.readouterr().out.split("summed sensitivity ")[1].split()[0])
    layers = ir.weight_layers(gm)
    gptq_plan = [parse_scheme_of(meta.get(layer.node, meta.LayerPlan)) for layer in layers]
    run(gm, am, f"mixed-precision{{{spec}}}")
    rtn_plan = [parse_scheme_of(meta.get(layer.node, meta.LayerPlan)) for layer in layers]
    scores = am.get("sensitivity", candidates=("w4", "w4g32", "w8"), measure="layer", quantizer="gptq")
    shapes = [ir.get_tensor(gm, layer.weight).shape for layer in layers]
    costs = [[parse_scheme(c).storage_bytes(*shape) for c in candidates] for shape in shapes]
    table = [[0.0 if c == "keep" else scores.score(layer.node.name, c) for c in candidates] for layer in layers]
    summed = lambda plan: sum(row[candidates.index(c)] for row, c in zip(table, plan))  # noqa: E731
    budget = int(5.0 * sum(s.numel() for s in shapes) / 8)
    assert summed(gptq_plan) == pytest.approx(_brute_force(costs, table, budget))
    assert summed(gptq_plan) <= summed(rtn_plan) + 1e-12
    assert reported == pytest.approx(summed(gptq_plan), rel=1e-3)  # the pass minimized GPTQ's errors, not RTN's


def test_jacobian_measure_plans_optimally_for_estimated_model_output_error(capsys):
    """measure=jacobian scores candidates by method-error's output-weighted errors (comparable across layers)."""
    from fxc.passes.analyses.method_error import MethodError

    model, example = _model()
    gm, am = traced(model, example, [torch.randn(32, 64) for _ in range(4)])
    candidates = ("w4", "w4g32", "w8", "keep")
    spec = f"avg-bits=5.0,measure=jacobian,method=gptq,candidates=[{','.join(candidates)}],print-allocation=true"
    run(gm, am, f"mixed-precision{{{spec}}}")
    reported = float(capsys.readouterr().out.split("summed sensitivity ")[1].split()[0])
    layers = ir.weight_layers(gm)
    fqns = tuple(layer.fqn for layer in layers)
    errors = am.get(MethodError(candidates=("w4", "w4g32", "w8"), weighting="output", layers=fqns, skip=()))
    shapes = [ir.get_tensor(gm, layer.weight).shape for layer in layers]
    costs = [[parse_scheme(c).storage_bytes(*shape) for c in candidates] for shape in shapes]
    table = [[0.0 if c == "keep" else errors[layer.node.name][c] for c in candidates] for layer in layers]
    plan = [parse_scheme_of(meta.get(layer.node, meta.LayerPlan)) for layer in layers]
    summed = sum(row[candidates.index(c)] for row, c in zip(table, plan))
    budget = int(5.0 * sum(s.numel() for s in shapes) / 8)
    assert summed == pytest.approx(_brute_force(costs, table, budget))
    assert reported == pytest.approx(summed, rel=1e-3)
