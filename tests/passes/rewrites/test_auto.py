"""The auto pass: budgets met to the byte, plans that beat uniform compression, exact choices, clear errors."""

import itertools

import pytest
import torch
from tiny_models import MLP

import fxc
from fxc.errors import OptionError
from fxc.ir import meta
from fxc.ir.cost import model_bytes
from fxc.passes.analyses.sensitivity import Sensitivity
from fxc.passes.auto.plan import layer_choices, stored_bytes
from fxc.passes.rewrites.auto import Auto
from fxc.passes.select import select_layers
from fxc.passes.specs.candidates import KEEP, parse_candidate
from fxc.passmgr import registry
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.calibration import Calibration

QUANT = ("w8", "w4g32", "w4g64", "w4")


def _model(outliers: bool = True):
    """MLP 32 -> 256 -> 256 -> 32; the first layer's weights have rare large outliers (int4 hurts it most)."""
    torch.manual_seed(0)
    model = MLP((32, 256, 256, 32)).eval()
    if outliers:
        with torch.no_grad():
            w = model.layers[0].weight
            w[torch.rand_like(w) < 0.02] *= 25
    calibration = [torch.randn(64, 32) for _ in range(4)]
    return model, calibration


def _error(compiled, model, x) -> float:
    with torch.no_grad():
        return ((compiled(x) - model(x)).norm() ** 2 / model(x).norm() ** 2).item()


def _frontier(compiled) -> meta.Frontier:
    output = next(n for n in compiled.graph.graph.nodes if n.op == "output")
    return meta.get(output, meta.Frontier)


def _quiet(**options) -> dict:
    return {"print_plan": False, "quantize_method": "rtn", **options}


def test_byte_budget_is_met_to_the_byte():
    model, calibration = _model()
    dense = model_bytes(fxc.trace(model, (calibration[0],)))
    budget = dense // 5
    compiled = fxc.compile(
        model,
        passes=[Auto(bytes=budget, scope="model", candidates=QUANT, verify=0, **_quiet())],
        calibration=calibration,
    )
    frontier = _frontier(compiled)
    assert model_bytes(compiled.graph) == frontier.chosen[0] <= budget
    assert all(damage >= frontier.chosen[1] for size, damage in frontier.points if size <= budget)
    assert frontier.points and all(b <= a for (_, a), (_, b) in zip(frontier.points, frontier.points[1:]))
    assert any(line.startswith("auto: mix") for line in compiled.report(show=False).notes)


def test_nm_plans_are_lowered_with_int8_values_and_counted_exactly():
    model, calibration = _model(outliers=False)
    compiled = fxc.compile(
        model,
        target=fxc.Budget(ratio=3.5, candidates=("2:4", "2:4+w8")),
        calibration=calibration,
    )
    graph = compiled.graph
    sparse = [n for n in graph.graph.nodes if n.target == torch.ops.fxc.sparse_nm_linear.default]
    assert sparse and any(meta.get(n, meta.Quantized) for n in sparse)
    for node in sparse:
        if meta.get(node, meta.Quantized):
            assert fxc.ir.get_tensor(graph, node.args[1].target).dtype == torch.int8
    weights = sum(layer.weight.numel() * 4 for layer in model.layers)
    untouched = sum(layer.bias.numel() * 4 for layer in model.layers)
    assert weights / (model_bytes(graph) - untouched) >= 3.5
    assert model_bytes(graph) == _frontier(compiled).chosen[0] + untouched
    x = torch.randn(32, 32)
    assert _error(compiled, model, x) < 0.5


def test_plan_beats_every_uniform_choice_at_the_same_bytes():
    model, calibration = _model()
    x = torch.randn(512, 32)
    uniform = {}
    for spec, text in (("w4g32", "quantize{bits=4,group-size=32}"), ("w4", "quantize{bits=4}")):
        compiled = fxc.compile(model, passes=text, calibration=calibration)
        uniform[spec] = (model_bytes(compiled.graph), _error(compiled, model, x))
    budget = uniform["w4g32"][0]
    auto = fxc.compile(
        model, passes=[Auto(bytes=budget, scope="model", candidates=QUANT, **_quiet())], calibration=calibration
    )
    assert model_bytes(auto.graph) <= budget
    best_uniform = min(error for size, error in uniform.values() if size <= budget)
    assert _error(auto, model, x) < 0.5 * best_uniform
    plans = {n.meta["fxc.layer"].fqn: n.meta["fxc.plan"] for n in auto.graph.graph.nodes if "fxc.plan" in n.meta}
    assert plans["layers.0"].bits == 8  # the layer with outliers is the one kept at 8 bits


def test_choice_is_the_exact_optimum():
    model, calibration = _model()
    gm = fxc.trace(model, (calibration[0],))
    am = AnalysisManager(gm, Calibration.of(calibration))
    budget = 60_000
    auto = Auto(
        bytes=budget, candidates=QUANT, measure="layer", estimate="rtn", apply=False, frontier=0, verify=0, **_quiet()
    )
    auto.run(gm, am)
    layers = select_layers(gm, kinds=("linear",))
    choices = layer_choices(gm, layers, auto._candidates(), 1e12, 5e10)
    texts = tuple(dict.fromkeys(o.text for c in choices for o in c.options if o is not KEEP))
    fqns = tuple(layer.fqn for layer in layers)
    sensitivity = am.get(Sensitivity(candidates=texts, measure="layer", layers=fqns, skip=(), batches=2, samples=4))
    best = min(
        sum(0.0 if o is KEEP else sensitivity.error[c.layer.node.name][o.text] for c, o in zip(choices, combo))
        for combo in itertools.product(*(c.options for c in choices))
        if sum(c.bytes[c.options.index(o)] for c, o in zip(choices, combo)) <= budget
    )
    output = next(n for n in gm.graph.nodes if n.op == "output")
    assert meta.get(output, meta.Frontier).chosen[1] == pytest.approx(best, rel=1e-9)
    assert all(meta.get(layer.node, meta.LayerPlan).source == "auto" for layer in layers)


def test_unreachable_budget_names_the_smallest_size_and_changes_nothing():
    model, calibration = _model()
    gm = fxc.trace(model, (calibration[0],))
    before = {k: v.clone() for k, v in gm.state_dict().items()}
    code = gm.code
    am = AnalysisManager(gm, Calibration.of(calibration))
    smallest = sum(
        stored_bytes(parse_candidate("w4"), layer.out_features, layer.in_features, 4) for layer in model.layers
    )
    with pytest.raises(OptionError, match=f"smallest reachable size .* is {smallest:,} bytes") as error:
        Auto(ratio=40, candidates=QUANT, **_quiet()).run(gm, am)
    assert "'ratio'=40" in str(error.value)
    assert gm.code == code and all(torch.equal(before[k], v) for k, v in gm.state_dict().items())
    assert not am.cached("sensitivity") and not any(meta.get(n, meta.LayerPlan) for n in gm.graph.nodes)


def test_latency_budget_from_the_roofline():
    model, calibration = _model()
    gm = fxc.trace(model, (calibration[0],))
    am = AnalysisManager(gm, Calibration.of(calibration))
    layers = select_layers(gm, kinds=("linear",))
    dense = sum(c.seconds[0] for c in layer_choices(gm, layers, (), 1e9, 1e9))
    Auto(latency=0.6 * dense, candidates=("w8", "2:4"), peak_flops=1e9, bandwidth=1e9, apply=False, **_quiet()).run(
        gm, am
    )
    output = next(n for n in gm.graph.nodes if n.op == "output")
    frontier = meta.get(output, meta.Frontier)
    assert frontier.objective == "latency" and frontier.chosen[0] <= 0.6 * dense
    assert any(meta.get(layer.node, meta.LayerPlan).bits != 16 for layer in layers)


def test_tied_weights_and_bad_options_are_refused():
    tied = MLP((32, 32, 32)).eval()
    tied.layers[1].weight = tied.layers[0].weight
    with pytest.raises(OptionError, match="tied weights"):
        fxc.compile(tied, target=fxc.Budget(ratio=4, candidates=QUANT), calibration=[torch.randn(8, 32)])
    with pytest.raises(OptionError, match="exactly one budget"):
        Auto(ratio=4, bytes=100)
    with pytest.raises(OptionError, match="N:M combines with per-channel int8"):
        Auto(ratio=4, candidates=("2:4+w4",))
    with pytest.raises(OptionError, match="exactly one of bytes, ratio or latency"):
        fxc.Budget()
    with pytest.raises(OptionError, match="must be >= 1"):
        fxc.Budget(ratio=0.5)
    assert str(fxc.Pipeline.parse("auto{ratio=6.0,candidates=[w8,2:4+w8]}")) == "auto{ratio=6.0,candidates=[w8,2:4+w8]}"
    assert fxc.Budget(ratio=6).pass_options() == {"scope": "layers", "ratio": 6.0}
    assert registry.lookup("fxc.passes", "auto") is Auto


def test_low_rank_plans_are_split_then_quantized():
    model, calibration = _model(outliers=False)
    with torch.no_grad():  # layers.1 is exactly rank 8: a low-rank split loses nothing there
        model.layers[1].weight.copy_(torch.randn(256, 8) @ torch.randn(8, 256) / 16)
    compiled = fxc.compile(
        model, passes=[Auto(ratio=7, candidates=("w8", "w4", "r0.25+w8"), **_quiet())], calibration=calibration
    )
    graph = compiled.graph
    halves = [n for n in graph.graph.nodes if meta.get(n, meta.LowRank)]
    assert {meta.get(n, meta.LowRank).role for n in halves} == {"down", "up"}
    assert all(n.target == torch.ops.fxc.quantized_linear.default for n in halves)
    assert {meta.get(n, meta.LayerInfo).fqn for n in halves} == {"layers.1"}
    untouched = sum(layer.bias.numel() * 4 for layer in model.layers)
    assert model_bytes(graph) == _frontier(compiled).chosen[0] + untouched
    uniform = fxc.compile(model, passes="quantize{bits=4}", calibration=calibration)
    assert model_bytes(graph) <= model_bytes(uniform.graph)
    x = torch.randn(256, 32)
    assert _error(compiled, model, x) < 0.5 * _error(uniform, model, x)
