"""Bad input to prune and lower-sparse: a clear error naming the option or layer, the model untouched."""

import pytest
import torch
from graph_snapshot import snapshot, untouched
from tiny_models import mlp

import fxc
from fxc.errors import CalibrationError, FxcError, NodeError, OptionError
from fxc.ir import meta
from fxc.passes.rewrites.lower_sparse import LowerSparse
from fxc.passes.rewrites.prune import Prune
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.calibration import Calibration


@pytest.fixture(scope="module")
def traced():
    model, (x,) = mlp()
    return fxc.trace(model, (x,))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"sparsity": 1.0}, "option 'sparsity' must be in \\[0.0, 1.0\\)"),
        ({"sparsity": -0.1}, "option 'sparsity'"),
        ({"pattern": "4:2"}, "option 'pattern'.*0 < N < M"),
        ({"pattern": "4:4"}, "option 'pattern'.*0 < N < M"),
        ({"pattern": "2-4"}, "option 'pattern' must be one of"),
        ({"method": "obs"}, "option 'method'"),
        ({"method": "sparse-gpt", "pattern": "2:4", "block_size": 6}, "option 'block-size'.*multiple of M=4"),
        ({"lower": True}, "option 'lower'"),
        ({"method": "sparse-gpt", "pattern": "head"}, "option 'method'=sparse-gpt.*pattern=head"),
        ({"pattern": "2:4", "allocation": "owl"}, "option 'allocation'"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(OptionError, match=match):
        Prune(**options)


def test_pattern_the_layer_cannot_hold():
    model = torch.nn.Sequential(torch.nn.Linear(30, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    gm = fxc.trace(model, (torch.randn(2, 30),))
    before = snapshot(gm)
    with pytest.raises(NodeError, match="input dimension of layer 0 \\(30\\).*M=4"):
        Prune(pattern="2:4", skip=()).run(gm, AnalysisManager(gm))
    assert untouched(gm, before)


@pytest.mark.parametrize("method", ["wanda", "sparse-gpt"])
def test_calibrated_method_without_calibration(traced, method):
    before = snapshot(traced)
    with pytest.raises(CalibrationError, match=f"prune\\{{method={method}\\}} needs calibration data"):
        Prune(method=method, skip=()).run(traced, AnalysisManager(traced))
    assert untouched(traced, before)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_calibration_with_nan_or_inf(traced, bad):
    before = snapshot(traced)
    batch = torch.randn(4, 16)
    batch[1, 3] = bad
    am = AnalysisManager(traced, Calibration.of([(torch.randn(4, 16),), (batch,)]))
    with pytest.raises(CalibrationError, match="calibration batch 1 contains NaN or Inf"):
        Prune(method="sparse-gpt", skip=()).run(traced, am)
    assert untouched(traced, before)


class _Overflow(torch.nn.Module):
    """Finite inputs, an activation that overflows between the two layers."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Linear(16, 16), torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.second(torch.exp(self.first(x) * 1000))


def test_inf_reached_midway_restores_the_weights():
    gm = fxc.trace(_Overflow().eval(), (torch.randn(4, 16),))
    before = snapshot(gm)
    am = AnalysisManager(gm, Calibration.of([(torch.randn(4, 16),)]))
    with pytest.raises(CalibrationError, match="reaching layer second contain NaN or Inf"):
        Prune(method="wanda", skip=()).run(gm, am)
    assert untouched(gm, before)


def test_singular_hessian_without_dampening(traced):
    before = snapshot(traced)
    am = AnalysisManager(traced, Calibration.of([(torch.randn(2, 16),)]))  # 2 tokens: rank-2 Hessian
    with pytest.raises(FxcError, match="not positive definite even with dampening 0.0.*'damp'"):
        Prune(method="sparse-gpt", damp=0.0, skip=()).run(traced, am)
    assert untouched(traced, before)


def test_lower_sparse_refuses_a_dense_weight(traced):
    gm = fxc.trace(*mlp())
    node = next(n for n in gm.graph.nodes if n.target == torch.ops.aten.linear.default)
    meta.put(node, meta.Sparsity("2:4", 0.5, "test"))
    before = snapshot(gm)
    with pytest.raises(NodeError, match="lower-sparse: layer layers.0 is not 2:4 sparse"):
        LowerSparse().run(gm, AnalysisManager(gm))
    assert untouched(gm, before)
