"""Gram matrices and damped Hessians: the linear algebra under the `hessian` analysis and the methods
that solve with an input Hessian (gptq, sparse-gpt, the kept-weight re-solve, the dense-model fit target,
whitened low rank).

    gram = GramAccumulator(); gram.add(x_rows); gram.add(left, right); gram.total()   # Σ XᵀX / Σ XᵀY, float64
    acc = HessianAccumulator(); acc.add(x); acc.result()                               # H = 2·XᵀX/n, float32
    damped = damped_hessian(h, damp=0.01, layer="fc1")   # H + damp·mean(diag H)·I and its Cholesky factor
    damped_hessian(h, 0.01, "fc1", shrink=0.5)           # H first moved halfway to diag(H) (few samples)
    damped.solve(rhs); damped.inverse_cholesky_upper     # H⁻¹ rhs; U with UᵀU = H⁻¹
    with one_thread(): ...                               # a column loop of thousands of small ops

`GramAccumulator` sums float32 products of up to GRAM_ROWS rows, then adds them to a float64 total;
a self-product computes only the tiles on and above the diagonal. `dampen(H, damp)` adds damp·mean(diag H)
to the diagonal (dead inputs get 1) and raises an error naming the layer when the result still cannot be
Cholesky-factored; `damped_hessian` also keeps the factor (DampedHessian) for callers that solve with it
more than once, and can shrink H toward its diagonal first (`shrink`: the covariance estimate for few
calibration tokens per input that passes/algorithms/layer_inputs.py's calibration_fit chooses);
`damped.scaled(c)` is c times it without a new factorization.
`inverse_cholesky_upper(H)` is the upper Cholesky factor of H⁻¹ that GPTQ and SparseGPT propagate errors
with. Tensors in, tensors out: reads and writes nothing else.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

from fxc.errors import FxcError

GRAM_ROWS = 16384  # rows summed in float32 before a GramAccumulator adds them to its float64 total
SYMMETRIC_TILES = 4  # a self-product is computed on the upper tiles of a 4 x 4 tiling


class GramAccumulator:
    """Σ leftᵀ right over streamed row matrices [n, K] (left = right for a Hessian), in float64.
    Each batch is added into a float32 partial sum by one GEMM (addmm, no copies); every GRAM_ROWS rows the
    partial sum is added to the float64 total. So float32 rounding stays inside sums of at most GRAM_ROWS
    terms (far below the dampening every user adds to the diagonal) while the products run at float32
    speed; a flush costs a few passes over the [K, K] matrix, which is why flushes are rare.
    A self-product (no `right`, or `right` equal to `left`) is symmetric: only the
    tiles on and above the diagonal are computed, then mirrored, so the cross-covariance of identical inputs
    is exactly the Hessian."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.rows = 0
        self._partial: torch.Tensor | None = None  # float32 sum of the rows since the last flush
        self._symmetric = True
        self._partial_rows = 0

    def add(self, left: torch.Tensor, right: torch.Tensor | None = None) -> None:
        """Add leftᵀ right (leftᵀ left without `right`) for row matrices with the same number of rows."""
        left = left.detach().to(torch.float32)
        if right is not None:
            right = right.detach().to(torch.float32)
            if right.shape == left.shape and torch.equal(left, right):
                right = None
        if self._partial is None:
            columns = left.shape[1] if right is None else right.shape[1]
            self._partial = torch.zeros(left.shape[1], columns, dtype=torch.float32)
        if right is None and self._symmetric:
            _add_upper_tiles(self._partial, left)
        elif right is None:  # the partial sum already holds a cross product in full
            self._partial.addmm_(left.T, left)
        else:
            self._mirror()  # a cross product fills the whole partial sum
            self._partial.addmm_(left.T, right)
        self._partial_rows += left.shape[0]
        self.rows += left.shape[0]
        if self._partial_rows >= GRAM_ROWS:
            self._flush()

    def total(self) -> torch.Tensor:
        """Σ leftᵀ right so far (float64 [K_left, K_right])."""
        self._flush()
        return self.sum

    def _mirror(self) -> None:
        """Turn a partial sum holding only upper tiles into the full symmetric matrix."""
        if self._symmetric and self._partial_rows:
            upper = torch.triu(self._partial)
            self._partial.copy_(upper + torch.triu(self._partial, 1).T)
        self._symmetric = False

    def _flush(self) -> None:
        if not self._partial_rows:
            return
        self._mirror()
        partial = self._partial.to(torch.float64)
        self.sum = partial if self.sum is None else self.sum.add_(partial)
        self._partial.zero_()
        self._partial_rows, self._symmetric = 0, True


def _add_upper_tiles(partial: torch.Tensor, x: torch.Tensor) -> None:
    """partial += xᵀx on the tiles on and above the diagonal (the rest of partial is not touched)."""
    columns = x.shape[1]
    tile = -(-columns // SYMMETRIC_TILES)
    for start in range(0, columns, tile):
        partial[start : start + tile, start:].addmm_(x[:, start : start + tile].T, x[:, start:])


class HessianAccumulator:
    """H = 2·XᵀX/n over streamed layer inputs (any shape [..., K])."""

    def __init__(self) -> None:
        self.gram = GramAccumulator()

    @property
    def tokens(self) -> int:
        return self.gram.rows

    def add(self, x: torch.Tensor) -> None:
        self.gram.add(x.reshape(-1, x.shape[-1]))

    def result(self) -> torch.Tensor:
        return (2.0 * self.gram.total() / max(self.tokens, 1)).to(torch.float32)


@dataclass(frozen=True)
class DampedHessian:
    """H + damp·mean(diag H)·I (float64; dead inputs get 1 on the diagonal) and its lower Cholesky factor,
    made once per layer and shared by the steps that need it (dense target, sparse-gpt, the kept-weight
    re-solve), so each layer's Hessian is factored once."""

    matrix: torch.Tensor
    factor: torch.Tensor

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """H⁻¹ rhs (float64) for rhs [K, n]."""
        return torch.cholesky_solve(rhs.to(torch.float64), self.factor)

    def scaled(self, factor: float) -> DampedHessian:
        """factor · this matrix, its Cholesky factor scaled to match (no new factorization)."""
        return DampedHessian(self.matrix * factor, self.factor * factor**0.5)

    @functools.cached_property
    def inverse_cholesky_upper(self) -> torch.Tensor:
        """Upper-triangular U with UᵀU = H⁻¹, as float32 (made once; every gradual sparse-gpt stage uses it):
        row i of U holds the weights by which GPTQ / SparseGPT push column i's error onto the later columns."""
        return torch.linalg.cholesky(torch.cholesky_inverse(self.factor), upper=True).to(torch.float32)


def damped_hessian(hessian: torch.Tensor, damp: float, layer: str, shrink: float = 0.0) -> DampedHessian:
    """Dampen H (see DampedHessian) and factor it; raise naming the layer if it is still not positive definite.
    shrink: first move H that fraction of the way to its diagonal, (1 - shrink)·H + shrink·diag(H), the
    shrinkage estimate of a covariance from few samples (its off-diagonal entries are the noisy ones)."""
    h = hessian.clone().to(torch.float64)
    if shrink > 0.0:
        diagonal = torch.diag(h).clone()
        h.mul_(1.0 - shrink).diagonal().copy_(diagonal)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(damp * torch.diag(h).mean())
    factor, info = torch.linalg.cholesky_ex(h)
    if info != 0:
        raise FxcError(
            f"the Hessian of layer {layer} is not positive definite even with dampening {damp}; "
            "raise the pass's 'damp' option or give more (and more varied) calibration data"
        )
    return DampedHessian(h, factor)


def dampen(hessian: torch.Tensor, damp: float, layer: str) -> torch.Tensor:
    """H + damp·mean(diag H)·I (dead inputs get 1 on the diagonal); raise if still not positive definite."""
    return damped_hessian(hessian, damp, layer).matrix


def inverse_cholesky_upper(h: torch.Tensor) -> torch.Tensor:
    """Upper-triangular U with UᵀU = H⁻¹ for a dampened (positive definite) H, as float32."""
    return DampedHessian(h, torch.linalg.cholesky(h)).inverse_cholesky_upper


@contextlib.contextmanager
def one_thread():
    """Run a column loop of thousands of small ops on one intra-op thread (for ops this small, thread
    hand-offs and barrier waits cost more than they save); the setting is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
