"""GramAccumulator (passes/algorithms/gram.py): float32 partial sums (upper tiles only for XᵀX), summed in
float64, match float64 XᵀY."""

import pytest
import torch

from fxc.passes.algorithms import gram as gram_module
from fxc.passes.algorithms.gram import GramAccumulator, HessianAccumulator


@pytest.mark.parametrize("rows_per_flush", [7, 4096])
def test_gram_matches_float64_over_several_flushes(monkeypatch, rows_per_flush):
    monkeypatch.setattr(gram_module, "GRAM_ROWS", rows_per_flush)
    torch.manual_seed(0)
    lefts = [torch.randn(n, 12) * 3 + 1 for n in (5, 9, 1, 20)]
    rights = [torch.randn(n, 7) for n in (5, 9, 1, 20)]
    cross, gram = GramAccumulator(), GramAccumulator()
    for left, right in zip(lefts, rights):
        cross.add(left, right)
        gram.add(left)
    x, y = torch.cat(lefts).double(), torch.cat(rights).double()
    assert cross.rows == gram.rows == 35
    assert cross.total().dtype == torch.float64
    torch.testing.assert_close(cross.total(), x.T @ y, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(gram.total(), x.T @ x, rtol=1e-6, atol=1e-5)


def test_hessian_of_equal_inputs_is_the_cross_covariance_bit_for_bit():
    """dense_target's C - H is exactly 0 where the compressed and dense inputs agree."""
    batches = [torch.randn(2, 30, 16) for _ in range(3)]
    h, c = HessianAccumulator(), GramAccumulator()
    for x in batches:
        h.add(x)
        c.add(x.reshape(-1, 16), x.reshape(-1, 16).clone())
    assert torch.equal(h.gram.total(), c.total())
    torch.testing.assert_close(h.result(), (2 * c.total() / 180).float())


@pytest.mark.parametrize("rows_per_flush", [7, 4096])
def test_equal_and_unequal_inputs_mixed_in_one_accumulator(monkeypatch, rows_per_flush):
    """Batches whose two inputs agree take the symmetric (upper-tile) product, the others the full one; any
    mix of the two sums to XᵀY."""
    monkeypatch.setattr(gram_module, "GRAM_ROWS", rows_per_flush)
    torch.manual_seed(1)
    lefts = [torch.randn(n, 10) for n in (6, 4, 8, 3)]
    rights = [lefts[0].clone(), torch.randn(4, 10), lefts[2].clone(), torch.randn(3, 10)]
    cross = GramAccumulator()
    for left, right in zip(lefts, rights):
        cross.add(left, right)
    x, y = torch.cat(lefts).double(), torch.cat(rights).double()
    torch.testing.assert_close(cross.total(), x.T @ y, rtol=1e-6, atol=1e-5)


def test_symmetric_product_is_exactly_symmetric_for_every_width():
    for width in (1, 3, 13, 64):
        gram = GramAccumulator()
        for _ in range(3):
            gram.add(torch.randn(9, width))
        total = gram.total()
        assert torch.equal(total, total.T)
