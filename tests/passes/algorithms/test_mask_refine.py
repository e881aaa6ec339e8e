"""Re-solving sparse-gpt's kept weights (passes/algorithms/mask_refine.py): the exact per-row least-squares solution for
the fixed mask, the same zeros (N:M kept), lower layer error than sparse-gpt alone, and the prune option."""

import pytest
import torch

import fxc
from fxc import ir
from fxc.errors import OptionError
from fxc.passes.algorithms.gram import dampen
from fxc.passes.algorithms.mask_refine import refine_kept_weights
from fxc.passes.algorithms.sparse_gpt import sparse_gpt
from fxc.passes.rewrites.prune import Prune


def _problem(n: int = 12, k: int = 24, tokens: int = 200):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, k, generator=generator) @ torch.randn(k, k, generator=generator)  # correlated inputs
    return torch.randn(n, k, generator=generator), 2 * x.T @ x / tokens, x


def _layer_error(w, w0, h) -> float:
    delta = (w - w0).double()
    return float(((delta @ h.double()) * delta).sum())


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_refined_weights_are_the_least_squares_optimum_for_the_mask(nm):
    weight, hessian, _ = _problem()
    pruned = sparse_gpt(weight, hessian, 0.5, nm, 8, 0.01, "layer")
    refined = refine_kept_weights(pruned, weight, hessian, 100, 0.01, "layer")
    assert torch.equal(refined == 0, pruned == 0)  # the same zeros: N:M stays N:M
    h = dampen(hessian, 0.01, "layer").double()
    for row in range(weight.shape[0]):  # exact: H_SS w_S = H_S: w0
        kept = pruned[row] != 0
        exact = torch.linalg.solve(h[kept][:, kept], h[kept] @ weight[row].double())
        assert torch.allclose(refined[row, kept].double(), exact, rtol=1e-4, atol=1e-5)
    damped = dampen(hessian, 0.01, "layer")
    assert _layer_error(refined, weight, damped) < 0.95 * _layer_error(pruned, weight, damped)


def test_zero_steps_return_the_pruned_weight():
    weight, hessian, _ = _problem()
    pruned = sparse_gpt(weight, hessian, 0.5, None, 8, 0.01, "layer")
    assert refine_kept_weights(pruned, weight, hessian, 0, 0.01, "layer") is pruned


def test_prune_option_lowers_the_layer_output_error_and_is_refused_for_other_methods():
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 12).eval()
    _, _, x = _problem()
    errors = {}
    for refine in (0, 30):
        cm = fxc.compile(layer, f"prune{{method=sparse-gpt,refine={refine},skip=[]}}", example_inputs=(x[:4],),
                         calibration=[(c,) for c in x.chunk(4)])
        w = ir.get_tensor(cm.graph, ir.weight_layers(cm.graph)[0].weight)
        assert (w == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
        errors[refine] = float(((w - layer.weight.detach()) @ x.T).norm())
    assert errors[30] < 0.95 * errors[0]
    with pytest.raises(OptionError, match="option 'refine' re-solves sparse-gpt's kept weights; method=wanda"):
        Prune(method="wanda", refine=10)
