"""low_rank_math: exact splits of known-rank matrices, whitening beats plain SVD on
skewed inputs, the tail is the real error, rank rules, and the budget allocation is optimal and met."""

import numpy as np
import pytest
import torch

from fxc.passes.algorithms import low_rank_math as lrm


def skewed_inputs(tokens: int, n: int) -> torch.Tensor:
    """Inputs whose channel scales span four orders of magnitude (like LLM outlier channels)."""
    scales = torch.logspace(-2, 2, n, dtype=torch.float64)[torch.randperm(n)]
    return torch.randn(tokens, n, dtype=torch.float64) * scales


def test_known_rank_matrix_splits_exactly():
    m, n, k = 24, 40, 5
    weight = torch.randn(m, k, dtype=torch.float64) @ torch.randn(k, n, dtype=torch.float64)
    x = skewed_inputs(200, n)
    for decomposition in (lrm.svd_decomposition(weight), lrm.whitened_decomposition(weight, x.T @ x)):
        down, up = decomposition.factors(k, torch.float64)
        assert down.shape == (k, n) and up.shape == (m, k)
        torch.testing.assert_close(up @ down, weight, atol=1e-9, rtol=1e-9)
        assert float(decomposition.tail[k]) < 1e-18 * float(decomposition.tail[0])


def test_whitened_output_error_is_below_plain_and_equals_its_tail():
    m, n, rank = 32, 48, 8
    weight = torch.randn(m, n, dtype=torch.float64)
    x = skewed_inputs(500, n)
    hessian = x.T @ x
    plain = lrm.svd_decomposition(weight).approximation(rank, torch.float64)
    whitened_dec = lrm.whitened_decomposition(weight, hessian)
    whitened = whitened_dec.approximation(rank, torch.float64)
    plain_error = lrm.output_error(weight, plain, hessian)
    whitened_error = lrm.output_error(weight, whitened, hessian)
    assert whitened_error < 0.5 * plain_error
    assert whitened_error == pytest.approx(float(whitened_dec.tail[rank]), rel=1e-8)
    # the same measured directly on the layer outputs
    direct = float(((x @ weight.T - x @ whitened.T) ** 2).sum())
    assert direct == pytest.approx(whitened_error, rel=1e-8)


def test_factors_share_the_singular_values_evenly():
    weight = torch.randn(16, 12)
    down, up = lrm.svd_decomposition(weight).factors(4)
    assert down.dtype == torch.float32
    torch.testing.assert_close(down.norm(dim=1), up.norm(dim=0), rtol=1e-4, atol=1e-5)


def test_rank_rules():
    assert lrm.rank_for_ratio(576, 576, 0.8) == 230  # floor(0.8 * 576 * 576 / 1152)
    assert lrm.rank_for_ratio(4, 4, 0.1) == 0  # no split keeps only 10% of a 4x4 weight
    assert lrm.rank_for_ratio(8, 8, 1.0) == 4
    with pytest.raises(ValueError, match="ratio"):
        lrm.rank_for_ratio(8, 8, 1.5)
    tail = lrm.svd_decomposition(torch.diag(torch.tensor([3.0, 2.0, 1.0]))).tail
    assert [round(float(t), 6) for t in tail] == [14.0, 5.0, 1.0, 0.0]
    assert lrm.rank_for_energy(tail, 9 / 14) == 1
    assert lrm.rank_for_energy(tail, 0.65) == 2
    assert lrm.rank_for_energy(tail, 1.0) == 3
    for m, n, margin in ((576, 576, 0.1), (192, 576, 0.25), (7, 3, 0.0)):
        r = lrm.max_split_rank(m, n, margin)
        assert r * (m + n) <= (1 - margin) * m * n < (r + 1) * (m + n) or r == min(m, n)


def decaying_layers(shapes, margin=0.1, seed=0):
    rng = np.random.default_rng(seed)
    layers = []
    for m, n in shapes:
        singular = torch.tensor(np.sort(rng.gamma(0.7, 1.0, size=min(m, n)))[::-1].copy())
        layers.append(lrm.LayerChoices(m, n, lrm.Decomposition(torch.zeros(m, 0), singular, torch.zeros(0, n)).tail,
                                       lrm.max_split_rank(m, n, margin)))
    return layers


@pytest.mark.parametrize("budget", [0.35, 0.6, 0.85])
def test_budget_is_met_exactly(budget):
    shapes = [(48, 48), (16, 48), (96, 48), (48, 96)] * 3
    layers = decaying_layers(shapes)
    capacity = int(budget * sum(m * n for m, n in shapes))
    ranks, solution = lrm.allocate_ranks(layers, capacity)
    used = sum(m * n if r is None else r * (m + n) for r, (m, n) in zip(ranks, shapes))
    assert solution.exact and used == solution.cost <= capacity
    # nothing left over that one more rank (or keeping a layer dense) could use
    for r, layer in zip(ranks, layers):
        if r is None:
            continue
        step = layer.m + layer.n if r < layer.max_rank else layer.m * layer.n - r * (layer.m + layer.n)
        assert used + step > capacity
    # and it beats the uniform split at the same budget
    uniform = [min(lrm.rank_for_ratio(m, n, budget), layer.max_rank) for (m, n), layer in zip(shapes, layers)]
    uniform_error = sum(float(torch.as_tensor(layer.tail)[r]) for r, layer in zip(uniform, layers))
    assert solution.error <= uniform_error + 1e-12


def test_budget_no_split_can_meet_is_refused():
    layers = decaying_layers([(32, 32), (32, 64)])
    assert lrm.min_params(layers) == 64 + 96
    with pytest.raises(ValueError, match="cheapest choice needs 160"):
        lrm.allocate_ranks(layers, 159)
