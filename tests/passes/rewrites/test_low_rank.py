"""The low-rank pass on tiny models: the IR it writes, every way of choosing ranks, the margin rule,
planner ratios, and bad input refused with the model untouched."""

import copy

import pytest
import torch
import torch.nn as nn
from tiny_models import mlp, tiny_llama

import fxc
from fxc import ir
from fxc.errors import OptionError, PipelineSyntaxError
from fxc.ir import meta
from fxc.passes import LowRank
from fxc.passes.algorithms import low_rank_math as lrm
from fxc.passmgr import registry
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.calibration import Calibration

aten = torch.ops.aten


class Skewed(nn.Module):
    """Two linear layers fed by inputs with wildly different channel scales."""

    def __init__(self, n=32, hidden=48, out=24):
        super().__init__()
        self.register_buffer("scales", torch.logspace(-2, 1.5, n)[torch.randperm(n)])
        self.fc1 = nn.Linear(n, hidden)
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x * self.scales)))


def low_rank_mlp(rank=3, sizes=(16, 32, 32, 8)):
    model, example = mlp()
    with torch.no_grad():
        for layer in model.layers:
            m, n = layer.weight.shape
            layer.weight.copy_(torch.randn(m, rank) @ torch.randn(rank, n) / n**0.5)
    return model, example


def compile_with(model, example, passes, calibration=None):
    return fxc.compile(model, passes, example_inputs=example, calibration=calibration)


def split_nodes(gm):
    return [n for n in gm.graph.nodes if meta.get(n, meta.LowRank) is not None]


def weight_count(gm):
    return sum(ir.get_tensor(gm, layer.weight).numel() for layer in ir.weight_layers(gm, kinds=("linear",)))


@pytest.fixture(scope="module")
def llama():
    """tiny_llama traced once; fxc.compile copies the graph for each test."""
    torch.manual_seed(0)
    model, example = tiny_llama()
    calibration = [torch.randint(0, 64, (2, 12)) for _ in range(3)]
    return model, fxc.trace(model, example), example, calibration


def test_known_rank_model_is_split_exactly_into_two_linears():
    model, example = low_rank_mlp(rank=3)
    compiled = compile_with(model, example, "low-rank{method=svd,rank=3}")
    torch.testing.assert_close(compiled(*example), model(*example), atol=1e-5, rtol=1e-4)
    halves = split_nodes(compiled.graph)
    assert len(halves) == 6
    for down, up in zip(halves[::2], halves[1::2]):
        assert down.target == up.target == aten.linear.default and up.args[0] is down
        info_down, info_up = meta.get(down, meta.LowRank), meta.get(up, meta.LowRank)
        assert (info_down.role, info_up.role, info_up.rank) == ("down", "up", 3)
        assert len(down.args) == 2 and up.args[2].op == "get_attr"  # the bias is on the second
        m, n = info_up.original_shape
        assert ir.get_tensor(compiled.graph, down.args[1].target).shape == (3, n)
        assert ir.get_tensor(compiled.graph, up.args[1].target).shape == (m, 3)
        assert meta.get(up, meta.LayerInfo).fqn == meta.get(down, meta.LayerInfo).fqn
    assert not any(n.target == aten.linear.default and not meta.get(n, meta.LowRank)
                   for n in compiled.graph.graph.nodes)
    assert "rank 3 (up)" in str(compiled.report(show=False))


def test_whitened_beats_plain_on_skewed_inputs():
    model = Skewed().eval()
    calibration = [torch.randn(64, 32) for _ in range(4)]
    x = torch.randn(256, 32)
    errors = {}
    for method in ("svd", "whitened"):
        compiled = compile_with(model, (calibration[0],), f"low-rank{{method={method},ratio=0.4}}", calibration)
        with torch.no_grad():
            errors[method] = float((compiled(x) - model(x)).norm() / model(x).norm())
    assert errors["whitened"] < 0.5 * errors["svd"]


@pytest.mark.parametrize("sequential", [True, False])
def test_whitened_on_llama_runs_and_keeps_the_ratio(llama, sequential):
    model, traced, example, calibration = llama
    compiled = fxc.compile(traced, f"low-rank{{ratio=0.5,sequential={str(sequential).lower()}}}",
                           calibration=calibration)
    lm_head = 64 * 32
    assert weight_count(compiled.graph) - lm_head <= 0.5 * (weight_count(traced) - lm_head)
    with torch.no_grad():
        out, ref = compiled(*example).logits, model(*example).logits
    assert torch.isfinite(out).all() and float((out - ref).norm() / ref.norm()) < 1.0


@pytest.mark.parametrize("method", ["svd", "whitened"])
def test_budget_is_met_exactly_on_a_model(llama, method):
    model, traced, example, calibration = llama
    shapes = {layer.fqn: tuple(ir.get_tensor(traced, layer.weight).shape)
              for layer in ir.weight_layers(traced, ("linear",)) if layer.fqn != "lm_head"}
    capacity = int(0.6 * sum(m * n for m, n in shapes.values()))
    compiled = fxc.compile(traced, f"low-rank{{method={method},budget=0.6}}", calibration=calibration)
    ranks = {meta.get(n, meta.LayerInfo).fqn: meta.get(n, meta.LowRank).rank for n in split_nodes(compiled.graph)}
    dense = [meta.get(n, meta.LayerInfo).fqn for n in compiled.graph.graph.nodes if meta.get(n, meta.KeptDense)]
    assert ranks and sorted([*ranks, *dense]) == sorted(shapes)
    kept = sum(r * sum(shapes[f]) for f, r in ranks.items()) + sum(shapes[f][0] * shapes[f][1] for f in dense)
    assert kept == weight_count(compiled.graph) - 64 * 32 and kept <= capacity
    for fqn, r in ranks.items():  # no layer could take one more step within the budget
        m, n = shapes[fqn]
        step = m + n if r < lrm.max_split_rank(m, n, 0.1) else m * n - r * (m + n)
        assert kept + step > capacity
    assert all("budget" in meta.get(n, meta.KeptDense).reason for n in compiled.graph.graph.nodes
               if meta.get(n, meta.KeptDense))


def test_energy_picks_the_smallest_rank_holding_that_share():
    model, example = low_rank_mlp(rank=3)
    compiled = compile_with(model, example, "low-rank{method=svd,energy=1.0}")
    assert {meta.get(n, meta.LowRank).rank for n in split_nodes(compiled.graph)} == {3}


def test_margin_keeps_layers_dense_and_says_why():
    model, example = mlp()
    timing = fxc.Timing()
    compiled = fxc.compile(model, "low-rank{method=svd,ratio=0.95}", example_inputs=example, instruments=[timing])
    assert not split_nodes(compiled.graph)
    kept = [meta.get(n, meta.KeptDense) for n in compiled.graph.graph.nodes if meta.get(n, meta.KeptDense)]
    assert len(kept) == 3 and all("margin=0.1" in k.reason for k in kept)
    assert "split 0 of 3" in timing.records[-1][3] and "margin=0.1" in timing.records[-1][3]
    assert "dense (low-rank: rank" in str(compiled.report(show=False))
    torch.testing.assert_close(compiled(*example), model(*example))
    # with no margin the same ratio splits
    compiled = compile_with(model, example, "low-rank{method=svd,ratio=0.95,margin=0.0}")
    assert len(split_nodes(compiled.graph)) == 6


def test_planner_ratio_is_read_from_the_layer_plan():
    model, example = mlp()
    gm = fxc.trace(model, example)
    target = ir.weight_layers(gm, ("linear",))[1].node
    meta.put(target, meta.LayerPlan(rank_ratio=0.5, source="test"))
    compiled = fxc.compile(gm, "low-rank{method=svd}", example_inputs=example)
    halves = split_nodes(compiled.graph)
    assert len(halves) == 2 and meta.get(halves[1], meta.LowRank).rank == 8  # floor(0.5*32*32/64)
    assert meta.get(halves[1], meta.LayerPlan).rank_ratio == 0.5


def test_pipeline_text_round_trips_and_pass_is_registered():
    assert registry.lookup("fxc.passes", "low-rank") is LowRank
    for text in ("low-rank{method=svd,ratio=0.8}", "low-rank{energy=0.95}", "low-rank{budget=0.8}",
                 "low-rank{rank=16,margin=0.2,layers=[mlp.*]}"):
        assert str(fxc.Pipeline.parse(text)) == text


def run_on_graph(model, example, pass_, calibration=None):
    """Run one pass on a traced graph directly; returns the graph and a snapshot of it before."""
    gm = fxc.trace(model, example)
    before = (gm.code, {k: v.clone() for k, v in gm.state_dict().items()})
    am = AnalysisManager(gm, Calibration.of(calibration), ((example[0],), {}))
    return gm, before, lambda: fxc.Pipeline.of(pass_).run(gm, am)


def assert_untouched(gm, before):
    code, state = before
    assert gm.code == code
    after = gm.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], v) for k, v in state.items())


def test_rank_above_min_dimension_is_refused_untouched():
    model, example = mlp()
    gm, before, run = run_on_graph(model, example, LowRank(method="svd", rank=9))
    with pytest.raises(OptionError, match=r"rank 9 exceeds min\(m, n\) = 8 of layer layers.2"):
        run()
    assert_untouched(gm, before)


@pytest.mark.parametrize("bad", ["ratio=0", "ratio=1.5", "ratio=-0.2", "budget=0", "energy=2"])
def test_amounts_outside_zero_one_are_refused(bad):
    with pytest.raises(PipelineSyntaxError, match=r"must be in \(0, 1\]"):
        fxc.Pipeline.parse(f"low-rank{{{bad}}}")
    key, value = bad.split("=")
    with pytest.raises(OptionError):
        LowRank(**{key: float(value)})


def test_conflicting_or_missing_amounts_are_refused():
    with pytest.raises(OptionError, match="at most one of"):
        LowRank(ratio=0.5, budget=0.5)
    model, example = mlp()
    gm, before, run = run_on_graph(model, example, LowRank(method="svd"))
    with pytest.raises(OptionError, match="needs one of ratio, energy, budget or rank"):
        run()
    assert_untouched(gm, before)


@pytest.mark.parametrize("method", ["svd", "whitened"])
def test_budget_no_split_can_meet_is_refused_untouched(method):
    model, example = mlp()
    calibration = [torch.randn(8, 16) for _ in range(2)]
    gm, before, run = run_on_graph(model, example, LowRank(method=method, budget=0.05), calibration)
    with pytest.raises(OptionError, match="raise the budget to at least"):
        run()
    assert_untouched(gm, before)


def test_ratio_too_small_for_rank_one_is_refused_untouched():
    model, example = mlp()
    gm, before, run = run_on_graph(model, example, LowRank(method="svd", ratio=0.01))
    with pytest.raises(OptionError, match="less than rank 1"):
        run()
    assert_untouched(gm, before)


def test_whitened_without_calibration_is_refused():
    model, example = mlp()
    with pytest.raises(fxc.CalibrationError, match="calibration"):
        compile_with(model, example, "low-rank{ratio=0.5}")


def test_split_graph_runs_on_the_numpy_backend():
    if "numpy" not in registry.names("fxc.backends"):
        pytest.skip("numpy backend not registered")
    model, example = low_rank_mlp(rank=3)
    compiled = fxc.compile(copy.deepcopy(model), "low-rank{method=svd,rank=3}", example_inputs=example,
                           backend="numpy")
    torch.testing.assert_close(torch.as_tensor(compiled(*example)), model(*example), atol=1e-4, rtol=1e-3)


def test_singular_hessian_is_refused_and_weights_restored():
    model = Skewed().eval()
    with torch.no_grad():  # duplicated hidden units: fc2's input Hessian is singular (no dead channel)
        model.fc1.weight[24:] = model.fc1.weight[:24]
        model.fc1.bias[24:] = model.fc1.bias[:24]
    calibration = [torch.randn(64, 32) for _ in range(2)]
    gm, before, run = run_on_graph(model, (calibration[0],), LowRank(ratio=0.5, damp=0.0), calibration)
    with pytest.raises(fxc.FxcError, match="not positive definite.*raise the pass's 'damp'"):
        run()
    assert_untouched(gm, before)  # fc1 was compressed in place for the sequential run, then restored
