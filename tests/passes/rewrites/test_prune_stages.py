"""The prune pass's gradual sparse-gpt (option `stages`; the stages run in passes/algorithms/sparse_gpt.py): the same
sparsity in the end, less layer output error than one step, and refused where it does not apply."""

import pytest
import torch

import fxc
from fxc import ir
from fxc.errors import OptionError
from fxc.passes.rewrites.prune import Prune


def _layer_and_inputs():
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(64, 32).eval()
    mix = torch.randn(64, 64, generator=generator) * torch.linspace(0.1, 3.0, 64)  # correlated, skewed inputs
    return layer, torch.randn(512, 64, generator=generator) @ mix


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_more_stages_leave_less_output_error_at_the_same_sparsity(sparsity):
    layer, x = _layer_and_inputs()
    errors = {}
    for stages in (1, 3, 6):
        cm = fxc.compile(layer, f"prune{{method=sparse-gpt,sparsity={sparsity},stages={stages},fit=layer,skip=[]}}",
                         example_inputs=(x[:4],), calibration=[(c,) for c in x.chunk(8)])
        w = ir.get_tensor(cm.graph, ir.weight_layers(cm.graph)[0].weight)
        assert (w == 0).float().mean().item() == pytest.approx(sparsity, abs=0.01)
        errors[stages] = float(((w - layer.weight.detach()) @ x.T).norm())
    assert errors[3] < 0.97 * errors[1] and errors[6] < errors[3]


def test_default_is_one_stage():
    layer, x = _layer_and_inputs()
    weights = {}
    for spec in ("", ",stages=3", ",stages=1"):
        cm = fxc.compile(layer, f"prune{{method=sparse-gpt,skip=[]{spec}}}", example_inputs=(x[:4],),
                         calibration=[(c,) for c in x.chunk(8)])
        weights[spec] = ir.get_tensor(cm.graph, ir.weight_layers(cm.graph)[0].weight)
    assert torch.equal(weights[""], weights[",stages=1"]) and not torch.equal(weights[""], weights[",stages=3"])


@pytest.mark.parametrize("options", [{"method": "wanda"}, {"method": "sparse-gpt", "pattern": "2:4"}])
def test_stages_are_refused_outside_unstructured_sparse_gpt(options):
    with pytest.raises(OptionError, match="option 'stages' prunes gradually with sparse-gpt"):
        Prune(stages=2, **options)
    with pytest.raises(OptionError, match="'stages'"):
        Prune(method="sparse-gpt", stages=0)
