"""prune, unstructured and N:M: each method's defining property on tiny layers, and the lowering."""

import pytest
import torch
from tiny_models import first_tensor, mlp, tiny_llama

import fxc
from fxc import ir
from fxc.ir import meta
from fxc.passes.rewrites.prune import Prune, spread_sparsity
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.calibration import Calibration


def _single_layer(scale: torch.Tensor, tokens: int = 256):
    """One Linear(32 -> 16) and calibration inputs whose channels have very different scales."""
    layer = torch.nn.Linear(32, 16).eval()
    x = torch.randn(tokens, 32) * scale
    return layer, x


def _prune(model, x, text: str, batches: int = 4):
    cm = fxc.compile(model, text, example_inputs=(x[:4],), calibration=[(c,) for c in x.chunk(batches)])
    return ir.get_tensor(cm.graph, ir.weight_layers(cm.graph)[0].weight), cm


def _output_error(new: torch.Tensor, old: torch.Tensor, x: torch.Tensor) -> float:
    return float(((new - old.detach()) @ x.T).norm() / (old.detach() @ x.T).norm())


SKEW = torch.logspace(-1, 1, 32)[torch.randperm(32, generator=torch.Generator().manual_seed(1))]


def test_wanda_and_magnitude_pick_different_weights_on_skewed_inputs():
    layer, x = _single_layer(SKEW)
    w_mag, _ = _prune(layer, x, "prune{method=magnitude,skip=[]}")
    w_wanda, _ = _prune(layer, x, "prune{method=wanda,skip=[]}")
    assert (w_mag == 0).float().mean() == pytest.approx(0.5) and (w_wanda == 0).float().mean() == pytest.approx(0.5)
    differ = ((w_mag == 0) != (w_wanda == 0)).float().mean().item()
    assert differ > 0.2
    assert _output_error(w_wanda, layer.weight, x) < 0.8 * _output_error(w_mag, layer.weight, x)
    assert ((w_wanda == 0).sum(1) == 16).all()  # wanda compares weights within each output row


def test_sparse_gpt_layer_error_below_magnitude_and_wanda():
    layer, x = _single_layer(SKEW)
    errors = {}
    for method in ("magnitude", "wanda", "sparse-gpt"):
        w, cm = _prune(layer, x, f"prune{{method={method},skip=[]}}")
        assert (w == 0).float().mean() == pytest.approx(0.5, abs=0.01)
        errors[method] = _output_error(w, layer.weight, x)
        node = ir.weight_layers(cm.graph)[0].node
        assert meta.get(node, meta.Sparsity) == meta.Sparsity("unstructured", pytest.approx(0.5, abs=0.01), method)
    assert errors["sparse-gpt"] < errors["wanda"] < errors["magnitude"]


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparse-gpt"])
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_masks_are_exact(method, pattern):
    n, m = map(int, pattern.split(":"))
    layer, x = _single_layer(SKEW)
    w, cm = _prune(layer, x, f"prune{{method={method},pattern={pattern},block-size=16,skip=[]}}")
    zeros = (w.view(16, -1, m) == 0).sum(-1)
    assert (zeros == m - n).all()
    assert meta.get(ir.weight_layers(cm.graph)[0].node, meta.Sparsity).pattern == pattern


def test_nm_lowering_computes_the_same_output():
    model, (x,) = mlp()
    calib = [(torch.randn(8, 16),) for _ in range(2)]
    dense = fxc.compile(model, "prune{method=wanda,pattern=2:4,skip=[]}", example_inputs=(x,), calibration=calib)
    lowered = fxc.compile(
        model, "prune{method=wanda,pattern=2:4,lower=true,skip=[]}", example_inputs=(x,), calibration=calib
    )
    separate = fxc.compile(
        model, "prune{method=wanda,pattern=2:4,skip=[]},lower-sparse", example_inputs=(x,), calibration=calib
    )
    ops = [n.target for n in lowered.graph.graph.nodes if n.op == "call_function"]
    assert ops.count(torch.ops.fxc.sparse_nm_linear.default) == 3 and torch.ops.aten.linear.default not in ops
    assert torch.allclose(lowered(x), dense(x), atol=1e-5) and torch.allclose(separate(x), dense(x), atol=1e-5)
    sparse_node = next(n for n in lowered.graph.graph.nodes if n.target == torch.ops.fxc.sparse_nm_linear.default)
    assert meta.get(sparse_node, meta.Sparsity).pattern == "2:4"


def test_sparse_gpt_is_sequential_on_a_llama():
    model, example = tiny_llama(layers=1)
    calib = [(torch.randint(0, 64, (1, 12)),) for _ in range(4)]
    cm = fxc.compile(model, "prune{method=sparse-gpt,sparsity=0.5}", example_inputs=example, calibration=calib)
    for layer in ir.weight_layers(cm.graph):
        weight = ir.get_tensor(cm.graph, layer.weight)
        expected = 0.5 if "layers" in layer.fqn else 0.0  # lm_head and the embedding are skipped
        assert (weight == 0).float().mean().item() == pytest.approx(expected, abs=0.02), layer.fqn
    assert first_tensor(cm(*example)).shape == (2, 12, 64)


def test_layer_plan_overrides_options():
    model, (x,) = mlp()
    gm = fxc.trace(model, (x,))
    first, second, third = ir.weight_layers(gm)
    meta.put(first.node, meta.LayerPlan(sparsity=0.25, pattern="unstructured", source="test"))
    meta.put(second.node, meta.LayerPlan(sparsity=0.0, source="test"))
    Prune(method="magnitude", sparsity=0.5, skip=()).run(gm, AnalysisManager(gm))
    fractions = [(ir.get_tensor(gm, layer.weight) == 0).float().mean().item() for layer in (first, second, third)]
    assert fractions == pytest.approx([0.25, 0.0, 0.5], abs=0.01)
    assert meta.get(second.node, meta.Sparsity) is None


@pytest.mark.parametrize("allocation", ["owl", "sensitivity"])
def test_non_uniform_allocation_keeps_the_average(allocation):
    model, (x,) = mlp()
    gm = fxc.trace(model, (x,))
    am = AnalysisManager(gm, Calibration.of([(torch.randn(16, 16) * SKEW[:16],) for _ in range(2)]))
    Prune(method="wanda", sparsity=0.5, allocation=allocation, spread=0.1, skip=()).run(gm, am)
    weights = [ir.get_tensor(gm, layer.weight) for layer in ir.weight_layers(gm)]
    fractions = [(w == 0).float().mean().item() for w in weights]
    total = sum((w == 0).sum().item() for w in weights) / sum(w.numel() for w in weights)
    assert total == pytest.approx(0.5, abs=0.02)
    assert max(fractions) - min(fractions) > 0.05


def test_spread_sparsity():
    out = spread_sparsity({"a": 0.0, "b": 1.0, "c": 0.5}, {"a": 100, "b": 100, "c": 200}, 0.5, 0.1)
    assert out["a"] > out["c"] > out["b"]  # the most important layer keeps the most weights
    assert (out["a"] * 100 + out["b"] * 100 + out["c"] * 200) / 400 == pytest.approx(0.5)
    assert spread_sparsity({"a": 1.0, "b": 1.0}, {"a": 1, "b": 1}, 0.3, 0.1) == {"a": 0.3, "b": 0.3}


def test_pipeline_text_round_trip():
    text = "prune{method=wanda,pattern=2:4}"
    assert str(fxc.Pipeline.parse(text)) == text
    assert fxc.Pipeline.parse(text).passes[0] == Prune(method="wanda", pattern="2:4")
