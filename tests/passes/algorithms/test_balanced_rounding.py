"""Balanced rounding: RTN's scales, each group's rounding errors summing to at most half a step, every
weight within one step of its value and inside the integer range, and only the fewest weights moved off
round-to-nearest."""

import pytest
import torch

from fxc.ir import qformat
from fxc.passes.algorithms.balanced_rounding import balanced_round, quantize_balanced


def _levels(q: qformat.QuantizedWeight, shape) -> torch.Tensor:
    n, k = shape
    return qformat.unpack(q.qweight, q.bits).to(torch.float64).view(n, q.scale.shape[1], -1)


@pytest.mark.parametrize(
    "bits,group,symmetric,full_range",
    [(8, None, True, True), (8, None, True, False), (4, 32, True, True), (4, None, False, True)],
)
def test_group_error_sums_within_half_a_step_and_each_weight_within_one(bits, group, symmetric, full_range):
    torch.manual_seed(0)
    weight = torch.randn(64, 96) * torch.exp(torch.randn(64, 1))
    balanced = quantize_balanced(weight, bits, group, symmetric, full_range)
    nearest = qformat.quantize_rtn(weight, bits, group, symmetric, full_range)
    assert torch.equal(balanced.scale, nearest.scale)  # same stored format, same scales
    assert (balanced.zero_point is None) == (nearest.zero_point is None)
    scale = balanced.scale.double().unsqueeze(-1)
    zero = 0 if balanced.zero_point is None else balanced.zero_point.double().unsqueeze(-1)
    levels = weight.double().view(64, scale.shape[1], -1) / scale + zero
    q_bal, q_rtn = _levels(balanced, weight.shape), _levels(nearest, weight.shape)
    lo, hi = qformat.qrange(bits)
    if not full_range:  # W8A8 weights stay on ±127
        lo = -hi
    assert q_bal.min() >= lo and q_bal.max() <= hi
    assert ((q_bal - levels).abs() < 1 + 1e-9).all()
    assert ((q_bal - levels).sum(-1).abs() <= 0.5 + 1e-6).all()
    rtn_sums = (q_rtn - levels).sum(-1)
    assert rtn_sums.abs().max() > 1.5  # nearest rounding really leaves sums this balance removes
    moved = (q_bal != q_rtn).sum(-1)
    assert torch.equal(moved, rtn_sums.round().abs().to(moved.dtype))  # the fewest moves that do it


def test_moves_the_weights_nearest_the_boundary():
    levels = torch.tensor([[0.45, 0.40, 0.30, 0.10, -0.05, 0.2]])  # residuals sum to 1.4: one goes up
    q = balanced_round(levels, -8, 7)
    assert q.tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    down = balanced_round(-levels, -8, 7)
    assert down.tolist() == [[-1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]


def test_never_moves_a_clamped_weight_out_of_range():
    levels = torch.tensor([[7.5, 6.6, 6.7, 0.0]])  # 7.5 clamps to 7; 6.6 / 6.7 round up to 7 already
    q = balanced_round(levels, -8, 7)
    assert q.max() <= 7
    assert ((q - levels).abs() < 1).all()


def test_zero_rows_stay_zero():
    qw = quantize_balanced(torch.zeros(3, 9), 8)
    assert torch.equal(qformat.unpack(qw.qweight, 8), torch.zeros(3, 9, dtype=torch.int8))
