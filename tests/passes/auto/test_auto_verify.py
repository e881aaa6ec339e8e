"""The auto pass's joint check (passes/auto/verify.py): the portfolio of plans, their measured joint errors, and
the pass carrying out the plan that measured best even when the per-layer damages point elsewhere."""

import torch
from tiny_models import MLP

import fxc
from fxc import ir
from fxc.ir import qformat
from fxc.passes.auto.plan import layer_choices
from fxc.passes.auto.verify import check_plan, joint_errors, portfolio
from fxc.passes.rewrites.auto import Auto
from fxc.passes.select import select_layers
from fxc.passes.specs.candidates import KEEP, parse_candidate
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.calibration import Calibration


def _setup():
    torch.manual_seed(0)
    model = MLP((32, 128, 128, 32)).eval()
    calibration = [torch.randn(64, 32) for _ in range(3)]
    gm = fxc.trace(model, (calibration[0],))
    return model, gm, AnalysisManager(gm, Calibration.of(calibration)), calibration


def _rtn(option, weight):
    q = qformat.quantize_rtn(weight, option.bits, option.group_size)
    return qformat.dequantize(q.qweight, q.scale, q.zero_point, q.bits)


def test_portfolio_holds_the_knapsack_plan_and_fitting_uniform_plans_once():
    _, gm, _, _ = _setup()
    candidates = tuple(parse_candidate(t) for t in ("w8", "w4", "2:4"))
    choices = layer_choices(gm, select_layers(gm, kinds=("linear",)), candidates, 1e12, 5e10)
    costs = [c.bytes for c in choices]
    scores = [[0.0] + [1.0] * (len(c.options) - 1) for c in choices]
    w8 = [c.options.index(next(o for o in c.options if o is not KEEP and o.text == "w8")) for c in choices]
    limit = sum(row[i] for row, i in zip(costs, w8))  # uniform w8 fits exactly; uniform 2:4 (fp32 values) does not
    plans = portfolio(choices, costs, scores, limit, w8)
    assert list(plans)[0] == "knapsack" and plans["knapsack"] == w8
    assert "uniform w8" not in plans  # the same plan as the knapsack's: listed once
    w4 = [next(i for i, o in enumerate(c.options) if o is not KEEP and o.text == "w4") for c in choices]
    assert w4 in plans.values() and "uniform 2:4" not in plans
    assert "knapsack, no sparsity" not in plans  # w8 (the same plan as the knapsack's) or w4: no new plan
    assert all(sum(row[i] for row, i in zip(costs, p)) <= limit for p in plans.values())
    assert len({tuple(p) for p in plans.values()}) == len(plans)


def test_joint_error_is_the_whole_model_error_and_weights_are_restored():
    model, gm, am, calibration = _setup()
    candidates = tuple(parse_candidate(t) for t in ("w8", "w4"))
    choices = layer_choices(gm, select_layers(gm, kinds=("linear",)), candidates, 1e12, 5e10)
    before = {c.layer.weight: ir.get_tensor(gm, c.layer.weight).clone() for c in choices}
    w4 = [next(i for i, o in enumerate(c.options) if o is not KEEP and o.text == "w4") for c in choices]
    keep = [0 for _ in choices]
    errors = joint_errors(gm, am, choices, {"w4": w4, "keep": keep}, lambda c, o, w, s: _rtn(o, w), [
        (tuple(b for b in (x,)), {}) for x in calibration[:2]
    ])
    quantized = MLP((32, 128, 128, 32)).eval()
    quantized.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer in quantized.layers:
            layer.weight.copy_(_rtn(parse_candidate("w4"), layer.weight))
        num = sum(((quantized(x) - model(x)).double() ** 2).sum() for x in calibration[:2])
        den = sum((model(x).double() ** 2).sum() for x in calibration[:2])
    assert errors["keep"] == 0.0
    assert abs(errors["w4"] - float(num / den)) < 1e-6 * float(num / den)
    assert all(torch.equal(ir.get_tensor(gm, t), w) for t, w in before.items())


def test_pass_carries_out_the_plan_that_measured_best_not_the_mispredicted_one():
    """Damage scores that call 2:4+w8 free make the knapsack pick it everywhere; the joint check measures that
    plan against the quantization-only optimum (w8 everywhere, the same bytes) and keeps w8, whose real error
    is far smaller."""
    _, gm, am, _ = _setup()
    auto = Auto(bytes=10**9, candidates=("w8", "2:4+w8"), quantize_method="rtn", prune_method="magnitude",
                print_plan=False, apply=False, frontier=0)
    choices = layer_choices(gm, select_layers(gm, kinds=("linear",)), auto._candidates(), 1e12, 5e10)
    costs = [c.bytes for c in choices]
    lie = [[0.0 if o is KEEP or o.text == "2:4+w8" else 1.0 for o in c.options] for c in choices]
    sparse = [next(i for i, o in enumerate(c.options) if o is not KEEP and o.text == "2:4+w8") for c in choices]
    dense8 = [next(i for i, o in enumerate(c.options) if o is not KEEP and o.text == "w8") for c in choices]
    limit = sum(row[i] for row, i in zip(costs, dense8))
    picks, line = check_plan(gm, am, choices, costs, lie, limit, sparse, auto)
    assert picks == dense8 and line.startswith("joint check: knapsack, quantization only wins")
    errors = dict(part.split(": ") for part in line.split("(", 1)[1].rstrip(")").split("; "))
    assert float(errors["knapsack, quantization only"]) < 0.1 * float(errors["knapsack"])


def test_auto_prints_the_check_and_carries_out_the_best_measured_plan(capsys):
    model, _, _, calibration = _setup()
    auto = Auto(ratio=6.0, candidates=("w8", "w4", "w4g32", "r0.5+w4"), frontier=0, print_plan=True)
    fxc.compile(model, passes=[auto], calibration=calibration)
    line = next(x for x in capsys.readouterr().out.splitlines() if "joint check:" in x)
    winner = line.split("joint check: ")[1].split(" wins")[0]
    errors = {k: float(v) for k, v in (p.split(": ") for p in line.split(" wins (")[1].rstrip(")").split("; "))}
    assert "uniform w4" in errors or "knapsack, quantization only" in errors  # int4 everywhere fits 6x
    assert errors[winner] == min(errors.values())
