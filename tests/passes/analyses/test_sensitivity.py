"""The sensitivity analysis: layer, model and Hutchinson measures on tiny models."""

import pytest
import torch
from tiny_models import mlp

import fxc
from fxc import ir
from fxc.errors import CalibrationError, FxcError, OptionError
from fxc.passes.analyses.sensitivity import Sensitivity
from fxc.passes.specs.candidates import parse_candidate
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.calibration import Calibration


def _setup(loss_fn=None, scale=None):
    model, (x,) = mlp()
    gm = fxc.trace(model, (x,))
    scale = torch.logspace(-1, 1, 16) if scale is None else scale
    batches = [(torch.randn(8, 16) * scale,) for _ in range(4)]
    return gm, AnalysisManager(gm, Calibration.of(batches), loss_fn=loss_fn), batches


def test_layer_measure_is_exact_output_error():
    gm, am, batches = _setup()
    result = am.get(Sensitivity(candidates=("w8", "w4", "s0.5"), measure="layer"))
    first = ir.weight_layers(gm)[0]
    weight = ir.get_tensor(gm, first.weight)
    x = torch.cat([b[0] for b in batches])
    hessian = 2 * x.T.double() @ x.double() / x.shape[0]
    compressed = parse_candidate("w4").apply(weight, hessian.float())
    expected = (((compressed - weight).double() @ x.T.double()) ** 2).sum() * 2 / x.shape[0]
    assert result.error[first.node.name]["w4"] == pytest.approx(expected.item(), rel=1e-4)
    for name in result.layers:
        assert 0 < result.error[name]["w8"] < result.error[name]["w4"]
        assert result.trace[name] is None and result.score(name, "w4") == result.error[name]["w4"]
    assert "layer" in result.table()


def test_infeasible_candidate_scores_inf():
    gm, am, _ = _setup()
    result = am.get(Sensitivity(candidates=("w8", "w4g64"), measure="layer"))
    name = result.layers[0]  # 16 input columns: groups of 64 cannot fit
    assert result.score(name, "w4g64") == float("inf")
    assert "group size 64" in result.infeasible[name]["w4g64"]
    with pytest.raises(KeyError, match="was not measured"):
        result.score(name, "2:4")


def test_model_measure_restores_weights_and_orders_errors():
    gm, am, batches = _setup()
    before = {n: t.clone() for n, t in gm.state_dict().items()}
    result = am.get(Sensitivity(candidates=("w8", "w4", "s0.5"), measure="model", batches=2))
    assert all(torch.equal(before[n], t) for n, t in gm.state_dict().items())
    for name in result.layers:
        assert 0 < result.error[name]["w8"] < result.error[name]["w4"] < 1
        assert 0 < result.error[name]["s0.5"] < 1


def test_hutchinson_trace_of_a_quadratic_loss():
    model = torch.nn.Linear(16, 8).eval()
    x = torch.randn(64, 16)
    target = torch.randn(64, 8)
    loss_fn = lambda out, batch: ((out - target) ** 2).sum() / x.shape[0]
    gm = fxc.trace(model, (x,))
    am = AnalysisManager(gm, Calibration.of([(x,)]), loss_fn=loss_fn)
    result = am.get(Sensitivity(candidates=("w4",), measure="hutchinson", samples=64, skip=()))
    name = result.layers[0]
    exact = (2 * x.T @ x / x.shape[0]).trace().item() / 16  # Tr(I_8 ⊗ 2XᵀX/B) / (8*16)
    assert result.trace[name] == pytest.approx(exact, rel=0.2)
    assert result.score(name, "w4") == pytest.approx(result.trace[name] * result.weight_change[name]["w4"])
    assert not ir.get_tensor(gm, ir.weight_layers(gm)[0].weight).requires_grad


def test_bad_input():
    with pytest.raises(OptionError, match="candidates"):
        Sensitivity(candidates=("w4", "w5"))
    with pytest.raises(OptionError, match="measure"):
        Sensitivity(measure="exact")
    gm, am, _ = _setup()
    with pytest.raises(FxcError, match="loss_fn"):
        am.get(Sensitivity(measure="hutchinson"))
    with pytest.raises(CalibrationError, match="needs calibration"):
        AnalysisManager(gm).get(Sensitivity())
    nan_am = AnalysisManager(gm, Calibration.of([(torch.full((2, 16), float("nan")),)]))
    with pytest.raises(CalibrationError, match="NaN"):
        nan_am.get(Sensitivity(measure="model"))
    with pytest.raises(FxcError, match="no linear layer matches"):
        am.get(Sensitivity(layers=("nothing*",)))


def test_registered_and_pipeline_text():
    s = fxc.Pipeline.parse("sensitivity{candidates=[w8,2:4],measure=model}")
    assert str(s) == "sensitivity{candidates=[w8,2:4],measure=model}"


def _odd_model():
    """97 -> 64 -> 7 -> 5: odd input widths (97, 7) and one (97) no group size divides."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(97, 64), torch.nn.ReLU(), torch.nn.Linear(64, 7), torch.nn.ReLU(), torch.nn.Linear(7, 5)
    ).eval()
    batches = [(torch.randn(8, 97),) for _ in range(3)]
    gm = fxc.trace(model, batches[0])
    loss_fn = lambda out, batch: (out**2).mean()
    return gm, AnalysisManager(gm, Calibration.of(batches), loss_fn=loss_fn)


@pytest.mark.parametrize("measure", ["layer", "model", "hutchinson"])
def test_unsupported_int4_pairs_are_skipped_not_crashed(measure):
    gm, am = _odd_model()
    before = {n: t.clone() for n, t in gm.state_dict().items()}
    texts = ("w8", "w4", "w4g32", "r0.5+w4")
    result = am.get(Sensitivity(candidates=texts, measure=measure, skip=(), batches=2))
    assert all(torch.equal(before[n], t) for n, t in gm.state_dict().items())
    supported = {}
    for layer in ir.weight_layers(gm):
        shape = tuple(ir.get_tensor(gm, layer.weight).shape)
        name = layer.node.name
        for text in texts:
            candidate = parse_candidate(text)
            supported[layer.fqn, text] = candidate.supports(shape)
            if candidate.supports(shape):
                assert 0 < result.score(name, text) < float("inf")
                assert text not in result.infeasible[name]
            else:
                assert result.score(name, text) == float("inf")
                assert result.infeasible[name][text] == candidate.problem(shape)
    assert supported == {
        ("0", "w8"): True, ("0", "w4"): False, ("0", "w4g32"): False, ("0", "r0.5+w4"): False,  # 97 columns
        ("2", "w8"): True, ("2", "w4"): True, ("2", "w4g32"): True, ("2", "r0.5+w4"): False,  # rank 3: odd
        ("4", "w8"): True, ("4", "w4"): False, ("4", "w4g32"): False, ("4", "r0.5+w4"): False,  # 7 columns
    }  # fmt: skip
    assert "odd" in result.infeasible[ir.weight_layers(gm)[0].node.name]["w4"]


def test_layer_without_any_supported_candidate_is_named():
    gm, am = _odd_model()
    with pytest.raises(FxcError, match=r"layer 4 \(node \w+, weight \[5, 7\]\).*w4.*odd.*skip"):
        am.get(Sensitivity(candidates=("w4", "w4g32"), measure="layer", layers=("2", "4"), skip=()))
    result = am.get(Sensitivity(candidates=("w4", "w4g32"), measure="layer", layers=("2",), skip=()))
    assert result.layers == [ir.weight_layers(gm)[1].node.name]


def test_gptq_quantizer_scores_the_error_gptq_leaves():
    """quantizer=gptq: a weight-only candidate's layer error is that of gptq_quantize's weight (below RTN's on
    correlated inputs); structured candidates are unchanged."""
    from fxc.ir import qformat
    from fxc.passes.algorithms.gptq import gptq_quantize

    mix = torch.randn(16, 16)  # correlated input columns: where GPTQ's error feedback pays
    gm, am, batches = _setup(scale=None)
    am = AnalysisManager(gm, Calibration.of([(torch.randn(32, 16) @ mix,) for _ in range(4)]))
    rtn = am.get(Sensitivity(candidates=("w4", "2:4"), measure="layer"))
    gptq = am.get(Sensitivity(candidates=("w4", "2:4"), measure="layer", quantizer="gptq"))
    hessians = am.get("hessian")
    for layer in ir.weight_layers(gm):
        name = layer.node.name
        weight = ir.get_tensor(gm, layer.weight)
        q = gptq_quantize(weight, hessians[name], 4, act_order=True)
        delta = (qformat.dequantize(q.qweight, q.scale, q.zero_point, 4) - weight).double()
        expected = float(((delta @ hessians[name].double()) * delta).sum())
        assert gptq.error[name]["w4"] == pytest.approx(expected, rel=1e-6)
        assert gptq.error[name]["w4"] < rtn.error[name]["w4"]
        assert gptq.error[name]["2:4"] == rtn.error[name]["2:4"]
    with pytest.raises(OptionError, match="quantizer"):
        Sensitivity(quantizer="awq")
