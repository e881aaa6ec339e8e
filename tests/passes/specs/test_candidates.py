"""Candidate specs: parsing, the error each one introduces, and the bytes it claims."""

import pytest
import torch

from fxc.errors import OptionError
from fxc.passes.specs.candidates import CandidateError, parse_candidate, parse_candidates


def _layer_error(delta: torch.Tensor, hessian: torch.Tensor) -> float:
    return float(((delta.double() @ hessian.double()) * delta.double()).sum())


@pytest.fixture
def weight_and_hessian():
    weight = torch.randn(32, 64)
    x = torch.randn(400, 64) * torch.logspace(-1, 1, 64)  # skewed input channels
    return weight, 2 * x.T @ x / x.shape[0]


def test_parse_fields_and_plan():
    c = parse_candidate("2:4+w4g64")
    assert (c.nm, c.bits, c.group_size, c.pattern, c.zero_fraction) == ((2, 4), 4, 64, "2:4", 0.5)
    plan = parse_candidate("r0.5+w8").to_plan("test")
    assert (plan.rank_ratio, plan.bits, plan.sparsity, plan.source) == (0.5, 8, None, "test")
    assert parse_candidate("w8a8").act_bits == 8
    assert parse_candidate("dense").apply(torch.ones(2, 4)).equal(torch.ones(2, 4))


@pytest.mark.parametrize("bad", ["", "w3", "q8", "s1.5", "4:2", "2:4+4:8", "w8+w4", "r0.5+w4g64", "r1.2"])
def test_bad_specs_name_the_problem(bad):
    with pytest.raises(CandidateError, match="candidate"):
        parse_candidate(bad)
    with pytest.raises(OptionError, match="option 'candidates'"):
        parse_candidates(("w8", bad), "sensitivity")


def test_shape_problems_refused():
    c = parse_candidate("2:4")
    assert "not divisible by M=4" in c.problem((8, 30))
    with pytest.raises(CandidateError, match="not divisible"):
        c.apply(torch.randn(8, 30))
    assert "group size 64" in parse_candidate("w4g64").problem((8, 96))


def test_patterns_hold(weight_and_hessian):
    weight, hessian = weight_and_hessian
    nm = parse_candidate("2:4").apply(weight, hessian)
    assert ((nm.view(32, 16, 4) == 0).sum(-1) == 2).all()
    s = parse_candidate("s0.25").apply(weight)
    assert ((s == 0).sum(1) == 16).all()
    q = parse_candidate("w4").apply(weight)
    assert (q.unique(dim=None).numel() <= 32 * 16) and all(row.unique().numel() <= 16 for row in q)


def test_hessian_lowers_layer_error(weight_and_hessian):
    weight, hessian = weight_and_hessian
    for spec in ("s0.5", "r0.5"):
        c = parse_candidate(spec)
        blind = _layer_error(c.apply(weight) - weight, hessian)
        aware = _layer_error(c.apply(weight, hessian) - weight, hessian)
        assert aware < 0.8 * blind, spec


def test_errors_order_with_precision(weight_and_hessian):
    weight, hessian = weight_and_hessian
    errors = {
        s: _layer_error(parse_candidate(s).apply(weight, hessian) - weight, hessian) for s in ("w8", "w4g32", "w4")
    }
    assert errors["w8"] < errors["w4g32"] < errors["w4"]


def test_storage_bytes():
    shape = (64, 128)
    assert parse_candidate("dense").storage_bytes(shape) == 64 * 128 * 4
    assert parse_candidate("w8").storage_bytes(shape) == 64 * 128 + 64 * 4
    assert parse_candidate("w4g64").storage_bytes(shape) == 64 * 64 + 64 * 2 * 4
    assert parse_candidate("2:4").storage_bytes(shape) == 64 * 64 * 4 + 64 * 64
    r = parse_candidate("r0.5")
    assert r.rank(shape) == int(0.5 * 64 * 128 / 192) and r.storage_bytes(shape) == r.rank(shape) * 192 * 4
    assert parse_candidate("r0.5+w8").storage_bytes(shape) < r.storage_bytes(shape) / 3


@pytest.mark.parametrize(
    "spec, shape, supported, why",
    [
        ("w4", (5, 7), False, "odd"),
        ("w4", (5, 8), True, None),
        ("w8", (5, 7), True, None),
        ("w4g32", (8, 96), True, None),
        ("w4g32", (8, 97), False, "group size 32"),
        ("s0.5+w4", (8, 97), False, "odd"),
        ("r0.5+w4", (7, 64), False, "rank-3 factor"),  # factor [7, 3] would pack an odd number of columns
        ("r0.5+w4", (64, 97), False, "odd"),
        ("r0.5+w8", (7, 64), True, None),
        ("2:4+w4", (8, 96), True, None),
    ],
)
def test_supports_declares_the_shapes_apply_can_take(spec, shape, supported, why):
    candidate = parse_candidate(spec)
    assert candidate.supports(shape) is supported
    weight = torch.randn(shape)
    if supported:
        assert candidate.problem(shape) is None and candidate.apply(weight).shape == weight.shape
    else:
        assert why in candidate.problem(shape)
        with pytest.raises(CandidateError, match=why):
            candidate.apply(weight)
