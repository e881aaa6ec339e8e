"""Low-rank math for the `low-rank` pass: plain and whitened SVD, rank rules, exact budget allocation.

Pure functions on tensors and numbers; reads and writes nothing else.

A linear layer y = x Wᵀ + b with W [m, n] (m outputs, n inputs) is approximated by W ≈ U_r diag(s_r) R_r
and split into two layers: `down` = diag(√s_r) R_r  [r, n] and `up` = U_r diag(√s_r)  [m, r]
(the singular values shared evenly, so both factors have the same scale). It keeps r·(m+n) parameters.

- `svd_decomposition(W)`: W = U diag(s) Vᵀ; truncation minimizes the weight error ||W - W'||_F.
- `whitened_decomposition(W, H)` (SVD-LLM, Wang et al. 2024): with the input Hessian H ∝ XᵀX factored
  H = L Lᵀ (Cholesky), the layer-output error of any W' is ||X(W - W')ᵀ||² ∝ tr(ΔW H ΔWᵀ) = ||ΔW L||_F².
  So take the SVD W L = U diag(s) Vᵀ, truncate it (Eckart-Young: optimal for that error), and undo
  the whitening: R = Vᵀ L⁻¹. Truncating to rank r then leaves an output error of exactly Σ_{i≥r} s_i²,
  which `Decomposition.tail` lists for every r: the whitened spectrum *is* the measured sensitivity.
- `rank_for_ratio`, `rank_for_energy`, `max_split_rank` (the margin rule r·(m+n) ≤ (1-margin)·m·n).
- `allocate_ranks`: per layer a rank (or "stay dense") minimizing the summed errors so the total
  parameters stay within a budget, solved exactly by `solve_multiple_choice` (budget_solver.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fxc.passes.algorithms.budget_solver import Solution, solve_multiple_choice


@dataclass(frozen=True)
class Decomposition:
    """W ≈ left[:, :r] · diag(singular[:r]) · right[:r] for every r (float64, singular descending)."""

    left: torch.Tensor  # [m, k]
    singular: torch.Tensor  # [k]
    right: torch.Tensor  # [k, n], already mapped back to input space (whitening undone)

    @property
    def tail(self) -> torch.Tensor:
        """[k + 1]: tail[r] = Σ_{i≥r} s_i², the error left when keeping rank r (tail[k] = 0)."""
        squares = self.singular.square()
        return torch.cat([squares.flip(0).cumsum(0).flip(0), squares.new_zeros(1)])

    def factors(self, rank: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(down [rank, n], up [m, rank]) with up @ down the rank-`rank` approximation."""
        if not 1 <= rank <= self.singular.numel():
            raise ValueError(f"rank must be in [1, {self.singular.numel()}], got {rank}")
        root = self.singular[:rank].sqrt()
        down = root[:, None] * self.right[:rank]
        up = self.left[:, :rank] * root[None, :]
        return down.to(dtype).contiguous(), up.to(dtype).contiguous()

    def approximation(self, rank: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        down, up = self.factors(rank, torch.float64)
        return (up @ down).to(dtype)


def svd_decomposition(weight: torch.Tensor) -> Decomposition:
    """Plain truncated-SVD ingredients of a 2-D weight."""
    _check_matrix(weight)
    u, s, vh = torch.linalg.svd(weight.detach().to(torch.float64), full_matrices=False)
    return Decomposition(u, s, vh)


def whitened_decomposition(weight: torch.Tensor, hessian: torch.Tensor) -> Decomposition:
    """Activation-aware SVD: truncation minimizes tr(ΔW H ΔWᵀ). `hessian` [n, n] must be symmetric
    positive definite (dampen it first); raises ValueError otherwise."""
    _check_matrix(weight)
    n = weight.shape[1]
    if hessian.shape != (n, n):
        raise ValueError(f"the Hessian must be [{n}, {n}] for a weight of shape {tuple(weight.shape)}, "
                         f"got {tuple(hessian.shape)}")
    h = hessian.detach().to(torch.float64)
    chol, info = torch.linalg.cholesky_ex(0.5 * (h + h.T))
    if info != 0:
        raise ValueError("the Hessian is not positive definite; dampen it (add a multiple of the identity)")
    u, s, vh = torch.linalg.svd(weight.detach().to(torch.float64) @ chol, full_matrices=False)
    right = torch.linalg.solve_triangular(chol, vh, upper=False, left=False)  # Vᵀ L⁻¹
    return Decomposition(u, s, right)


def output_error(weight: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor) -> float:
    """tr(ΔW H ΔWᵀ): the layer-output squared error the Hessian stands for."""
    delta = (weight.to(torch.float64) - approx.to(torch.float64))
    return float(torch.einsum("ij,jk,ik->", delta, hessian.to(torch.float64), delta))


def rank_for_ratio(m: int, n: int, ratio: float) -> int:
    """The largest rank keeping at most `ratio` of the m·n parameters: floor(ratio·m·n/(m+n)), capped
    at min(m, n). 0 means no split is that small."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return min(math.floor(ratio * m * n / (m + n) + 1e-9), min(m, n))


def rank_for_energy(tail: torch.Tensor, energy: float) -> int:
    """The smallest rank whose kept share of Σ s² is at least `energy` (in (0, 1])."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    total = float(tail[0])
    if total == 0:
        return 1
    kept = 1.0 - tail / total
    reached = torch.nonzero(kept >= energy - 1e-12)
    return max(1, int(reached[0]))


def max_split_rank(m: int, n: int, margin: float) -> int:
    """The largest r with r·(m+n) ≤ (1-margin)·m·n, i.e. a split that saves at least `margin` of the
    layer's parameters (0 when none does)."""
    limit = (1.0 - margin) * m * n
    r = math.floor(limit / (m + n))
    while (r + 1) * (m + n) <= limit:
        r += 1
    while r > 0 and r * (m + n) > limit * (1 + 1e-12):
        r -= 1
    return min(r, min(m, n))


@dataclass(frozen=True)
class LayerChoices:
    """What the budget allocator may do with one layer: split at a rank in [1, max_rank] (error
    tail[r]) or, when `may_stay_dense`, keep the m·n weight (error 0)."""

    m: int
    n: int
    tail: Sequence[float] | np.ndarray | torch.Tensor  # [≥ max_rank + 1] error when keeping rank r
    max_rank: int
    may_stay_dense: bool = True

    def options(self) -> tuple[np.ndarray, np.ndarray, list[int | None]]:
        ranks = list(range(1, self.max_rank + 1))
        tail = np.asarray(torch.as_tensor(self.tail, dtype=torch.float64), dtype=np.float64)
        costs = [r * (self.m + self.n) for r in ranks]
        errors = [float(tail[r]) for r in ranks]
        labels: list[int | None] = list(ranks)
        if self.may_stay_dense or not ranks:
            costs.append(self.m * self.n)
            errors.append(0.0)
            labels.append(None)
        return np.asarray(costs, dtype=np.int64), np.asarray(errors, dtype=np.float64), labels


def min_params(layers: Sequence[LayerChoices]) -> int:
    """The fewest parameters any allocation keeps (rank 1 where allowed, else dense)."""
    return sum(int(layer.options()[0].min()) for layer in layers)


def allocate_ranks(layers: Sequence[LayerChoices], capacity: int) -> tuple[list[int | None], Solution]:
    """Per layer a rank (None: stay dense) minimizing Σ error with Σ params ≤ capacity (exactly unless
    `Solution.exact` is False, see budget_solver.py). Raises ValueError when even the smallest choice
    everywhere exceeds the capacity."""
    options = [layer.options() for layer in layers]
    solution = solve_multiple_choice([o[0] for o in options], [o[1] for o in options], capacity)
    return [o[2][i] for o, i in zip(options, solution.picks)], solution


def _check_matrix(weight: torch.Tensor) -> None:
    if weight.dim() != 2:
        raise ValueError(f"low rank needs a 2-D weight, got shape {tuple(weight.shape)}")
    if not torch.isfinite(weight).all():
        raise ValueError("the weight contains NaN or Inf")
