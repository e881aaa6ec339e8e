"""The method-error analysis (passes/analyses/method_error.py): its output-weighted errors predict the
measured model-output error, and its executed estimates (GPTQ, SparseGPT) beat round-to-nearest."""

import pytest
import torch
from tiny_models import MLP

import fxc
from fxc.passes.analyses.method_error import MethodError
from fxc.passes.analyses.output_metric import OutputMetric
from fxc.passes.analyses.sensitivity import Sensitivity
from fxc.passes.select import select_layers
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.calibration import Calibration


def _model():
    """MLP 32 -> 256 -> 256 -> 32; the first layer's weights have rare large outliers (int4 hurts it most)."""
    torch.manual_seed(0)
    model = MLP((32, 256, 256, 32)).eval()
    with torch.no_grad():
        w = model.layers[0].weight
        w[torch.rand_like(w) < 0.02] *= 25
    calibration = [torch.randn(64, 32) for _ in range(4)]
    return model, calibration


def test_output_metric_predicts_the_model_output_error():
    model, calibration = _model()
    gm = fxc.trace(model, (calibration[0],))
    am = AnalysisManager(gm, Calibration.of(calibration))
    layers = select_layers(gm, kinds=("linear",))
    specs = ("w4", "r0.25+w8")
    measured = am.get(Sensitivity(candidates=specs, measure="model", batches=2))
    predicted = am.get(MethodError(candidates=specs, quantize_method="rtn", weighting="output", batches=2))
    metric = am.get(OutputMetric(batches=2))
    layer_error = am.get(Sensitivity(candidates=specs, measure="layer"))
    for item in layers:
        name = item.node.name
        for spec in specs:
            assert 0.5 < predicted[name][spec] / measured.error[name][spec] < 2.0, (item.fqn, spec)
        isotropic = float(torch.trace(metric[name])) / metric[name].shape[0] * layer_error.error[name]["w4"]
        assert 0.5 < isotropic / measured.error[name]["w4"] < 2.0, item.fqn


def test_executed_estimates_use_gptq_and_sparse_gpt():
    model, calibration = _model()
    gm = fxc.trace(model, (calibration[0],))
    am = AnalysisManager(gm, Calibration.of(calibration))
    specs = ("w4", "2:4+w8")
    made = am.get(MethodError(candidates=specs))
    rtn = am.get(MethodError(candidates=specs, quantize_method="rtn", prune_method="wanda"))
    sensitivity = am.get(Sensitivity(candidates=specs, measure="layer"))
    for name in sensitivity.layers:
        assert rtn[name]["w4"] == pytest.approx(sensitivity.error[name]["w4"], rel=1e-6)
        assert rtn[name]["2:4+w8"] == pytest.approx(sensitivity.error[name]["2:4+w8"], rel=1e-6)
        assert made[name]["w4"] < rtn[name]["w4"] and made[name]["2:4+w8"] < rtn[name]["2:4+w8"]
