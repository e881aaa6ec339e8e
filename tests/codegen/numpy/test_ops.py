"""numpy backend vs torch backend op by op: indexing, scans, reductions, integer arithmetic with
torch's promotion, in-place ops and aliasing, creation ops, norms, and multi-output ops."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.codegen.numpy.numpy_check import check_model


class Indexing(nn.Module):
    def forward(self, x, ids):
        picked = torch.gather(x, 1, ids[:, :2].clamp(0, 3))
        rows = x[ids[:, 0].clamp(0, 1)]
        masked = x.masked_fill(x > 0.5, -1.0)
        chosen = torch.where(x < 0, x * 2, torch.zeros_like(x))
        a, b = x.split([1, 3], dim=1)
        c, d = x.chunk(2, dim=0)
        parts = torch.stack(x.unbind(1), dim=0)
        flipped = x.flip(0).roll(1, 1).repeat(2, 1)
        tri = torch.tril(x[:, :3].T @ x[:, :3]) + torch.triu(torch.ones(3, 3), 1)
        selected = x.index_select(1, ids[0].clamp(0, 3)) + x.narrow(1, 1, 2).sum(1, keepdim=True)
        return picked, rows, masked, chosen, a * b.sum(1, keepdim=True), c - d, parts, flipped, tri, selected


def test_indexing_and_shuffling_ops_match_torch():
    x = torch.randn(2, 4)
    ids = torch.tensor([[1, 3, 0], [2, 0, 1]])
    check_model(Indexing(), (x, ids))


class Reductions(nn.Module):
    def forward(self, x):
        values, indices = x.max(dim=-1)
        return (
            x.sum(), x.mean((0, 2)), x.amax(1), x.amin(-1, keepdim=True), values, indices, x.argmin(1),
            x.std(-1), x.var(1, unbiased=False), torch.logsumexp(x, -1), x.cumsum(1), (x > 0).cumsum(-1),
            x.softmax(-1), F.log_softmax(x, 1), x.norm(dim=-1), (x > 0).any(-1), (x > -3).all(),
            x.prod(-1), torch.diff(x, dim=-1), x.abs().sqrt().rsqrt().log1p(),
        )


def test_reductions_and_scans_match_torch():
    check_model(Reductions(), (torch.randn(3, 4, 5),), other_inputs=[(torch.randn(2, 1, 3),)])


class IntegerMath(nn.Module):
    def forward(self, a, b):
        return (
            a / b, a // b, torch.div(a, b, rounding_mode="trunc"), a % b, a * 0.5, a + 1, a.pow(2),
            (a.float() / 3).round(), a.float().floor() + a.float().ceil(), a & 6, (a > 2) | (b < 0), ~(a > 0),
            torch.arange(a.shape[0]) * 0.25, torch.full((2, a.shape[0]), 7), a.to(torch.float32).new_ones(3),
            torch.clamp(a, min=-2, max=3), a.sign(), a.abs().max(), torch.maximum(a, b), a.eq(b).sum(),
        )


def test_integer_arithmetic_follows_torch_promotion():
    a = torch.tensor([-7, -3, 0, 4, 9])
    b = torch.tensor([2, -2, 3, -4, 5])
    check_model(IntegerMath(), (a, b))


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.fc(x)
        view = y[:, :2]
        y += x  # the view sees the write, as in torch
        y = self.act(y)
        y.mul_(2)
        return y, view.clone(), x.clone().add_(1).sub_(x)


def test_in_place_ops_write_through_views_like_torch():
    check_model(InPlace(), (torch.randn(3, 4),))


class Norms(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(6)
        self.ln_plain = nn.LayerNorm([2, 6], elementwise_affine=False)
        self.rms = nn.RMSNorm(6, eps=1e-6)
        self.emb = nn.Embedding(10, 6)

    def forward(self, ids):
        x = self.emb(ids)
        return self.ln(x), self.ln_plain(x), self.rms(x), F.gelu(x, approximate="tanh"), F.elu(x), F.softplus(x)


def test_norms_embeddings_and_activations_match_torch():
    with torch.no_grad():
        model = Norms()
        model.ln.weight.uniform_(0.5, 1.5)
        model.rms.weight.uniform_(0.5, 1.5)
    check_model(model.eval(), (torch.randint(0, 10, (3, 2)),))


class Writes(nn.Module):
    def forward(self, x, idx):
        y = x.clone()
        y[idx] = 0.5
        z = x.clone()
        z.index_put_((idx,), torch.ones(2, 4), accumulate=True)
        scattered = torch.zeros(3, 4).scatter(1, idx[None].expand(3, 2) % 4, x[:, :2])
        added = torch.zeros(3, 4).scatter_add(0, (idx % 3)[:, None].expand(2, 4), x[:2])
        w = x.clone()
        w.fill_(2.0)
        c = x.clone()
        c.copy_(x * 3)
        c.clamp_(-1, 1).masked_fill_(c > 0.5, 9.0)
        return y, z, scattered, added, w, c


def test_index_put_scatter_fill_and_copy_match_torch():
    check_model(Writes(), (torch.randn(3, 4), torch.tensor([0, 2])))


def test_float32_erf_is_accurate_everywhere():
    import numpy as np
    import scipy.special

    from fxc.codegen.numpy.ops.elementwise import erf

    x = np.concatenate([np.linspace(-6, 6, 100001), [0.0, 1e-30, -1e-30, np.inf, -np.inf]]).astype(np.float32)
    got = erf(x)
    assert got.dtype == np.float32
    assert np.abs(got - scipy.special.erf(x.astype(np.float64))).max() <= 5e-7
    assert np.isnan(erf(np.array([np.nan], np.float32))).all()
    assert np.abs(got).max() <= 1.0
