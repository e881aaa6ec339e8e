"""Exact multiple-choice knapsack: pick one option per group, minimizing the summed error with the
summed cost within a capacity. fxc's one solver for per-layer budgets: `low-rank` chooses a rank (or
"stay dense") per layer under a parameter budget (passes/algorithms/low_rank_math.py's allocate_ranks),
`mixed-precision` a precision per layer under a byte budget, `auto` a compression per layer under a byte
or latency budget (passes/auto/plan.py's solve). Pure numpy; reads and writes nothing.

    solution = solve_multiple_choice(costs=[[10, 5], [8, 4]], errors=[[0.0, 1.0], [0.0, 3.0]], capacity=14)
    solution.picks, solution.error, solution.cost    # [1, 0], 1.0, 13
    solution.exact, solution.bound                   # True: proven optimal; no choice errs less than bound

Costs are integers (parameters, bytes, latency ticks) of any size: unlike a dynamic program over a cost
grid, nothing here grows with the capacity, so byte budgets of a 100 MB model need no rescaling.

Why not a plain greedy: marginal allocation (give the next rank to the layer whose error drops most per
parameter) is optimal only when every step costs the same, and it ends wherever the next step stops
fitting, up to one layer's step short of the budget. Here steps cost m+n parameters (different per layer
shape) and "stay dense" is an all-or-nothing jump of m·n - r·(m+n). The method, exact by construction:

1. LP relaxation. Per group, the lower convex hull of its (cost, error) points; hull segments sorted by
   error saved per unit cost and taken in that order give the relaxation's optimum (Sinha & Zoltners
   1979) and its dual price λ: the rate of the first segment that no longer fits.
2. Bounds. For any λ ≥ 0 and any feasible choice x, Σ err(x) ≥ Σ_g min_o [err_g(o) + λ·cost_g(o)] - λ·C
   (Lagrangian duality). A feasible incumbent comes from taking hull segments greedily while they fit.
3. DP over groups with pruning (branch and bound on a Pareto frontier). A partial state (cost c,
   error e) after groups 1..k is dropped when
   - another state costs no more and errs no more (it can be completed the same way, no worse), or
   - even its Lagrangian bound e + Σ_{rest} min_o [err + λ·cost] - λ·(C - c) exceeds the incumbent, or
   - the cheapest completion no longer fits.
   Neither rule can drop every optimal solution's prefix, so the surviving best full state is optimal.
   Options whose reduced cost alone exceeds the duality gap are never expanded. On real spectra the gap
   is small and only a few options per group near the relaxation's choice survive, so hundreds of layers
   with hundreds of options each stay cheap.
4. Degenerate instances (near-linear errors, e.g. identical flat spectra: thousands of near-ties) can
   keep the frontier wide. When a group's expansion would pass `max_candidates`, the frontier is
   thinned to one state per cost bucket (the least error in each) and the result is no longer proven
   optimal: `Solution.exact` is False and `Solution.bound` (the Lagrangian lower bound) says how far from
   optimal it can at most be. The greedy incumbent is kept as a fallback, so the answer is never worse
   than the greedy. Measured spectra keep the frontier narrow, so their results stay exact.

`solve_multiple_choice` raises InfeasibleBudget (a ValueError carrying `.minimum`, the least reachable
cost) when even the cheapest option of every group exceeds the capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_CANDIDATES = 2_000_000  # states x options expanded per group before the frontier is thinned


class InfeasibleBudget(ValueError):
    """Even the cheapest option everywhere costs more than the capacity."""

    def __init__(self, minimum: int, capacity: int):
        self.minimum, self.capacity = minimum, capacity
        super().__init__(f"the cheapest choice needs {minimum} but the capacity is {capacity}")


@dataclass(frozen=True)
class Solution:
    picks: list[int]  # index of the chosen option in each group
    error: float  # Σ of the chosen errors
    cost: int
    bound: float  # no choice within the capacity errs less than this (Lagrangian dual bound)
    exact: bool  # True: proven optimal (the frontier was never thinned)

    @property
    def gap(self) -> float:
        """(error - bound) / error: at most this fraction above the optimum (also when `exact` is False)."""
        return (self.error - self.bound) / max(abs(self.error), 1e-300)


def solve_multiple_choice(
    costs: Sequence[Sequence[int]],
    errors: Sequence[Sequence[float]],
    capacity: int,
    max_candidates: int = MAX_CANDIDATES,
) -> Solution:
    """min Σ errors[g][i_g] s.t. Σ costs[g][i_g] ≤ capacity, one option i_g per group (arrays or lists)."""
    if len(costs) != len(errors):
        raise ValueError(f"{len(costs)} groups of costs but {len(errors)} of errors")
    groups = [_pareto(_integers(c), np.asarray(e, dtype=np.float64)) for c, e in zip(costs, errors)]
    cheapest = sum(int(g[0][0]) for g in groups)
    if cheapest > capacity:
        raise InfeasibleBudget(cheapest, capacity)
    price = _dual_price(groups, capacity)
    incumbent_error, incumbent_picks = _greedy(groups, capacity)
    reduced_min = np.array([float((e + price * c).min()) for c, e, _ in groups])
    dual_bound = float(reduced_min.sum()) - price * capacity
    tolerance = 1e-9 * (abs(incumbent_error) + abs(dual_bound)) + 1e-300
    gap = incumbent_error - dual_bound + tolerance
    rest_reduced = np.concatenate([np.cumsum(reduced_min[::-1])[::-1][1:], [0.0]])
    rest_cheapest = np.concatenate([np.cumsum([g[0][0] for g in groups][::-1])[::-1][1:], [0]])

    state_cost, state_error = np.zeros(1, dtype=np.int64), np.zeros(1)
    exact = True
    history: list[tuple[np.ndarray, np.ndarray]] = []
    for k, (cost, error, _) in enumerate(groups):
        useful = np.nonzero(error + price * cost - reduced_min[k] <= gap)[0]
        if state_cost.size * useful.size > max_candidates:  # degenerate: one state per cost bucket
            exact = False
            thinned = _thin(state_cost, max(1, max_candidates // useful.size))
            state_cost, state_error = state_cost[thinned], state_error[thinned]
            history[-1] = (history[-1][0][thinned], history[-1][1][thinned])
        new_cost = (state_cost[:, None] + cost[useful][None, :]).ravel()
        new_error = (state_error[:, None] + error[useful][None, :]).ravel()
        parent = np.repeat(np.arange(state_cost.size), useful.size)
        option = np.tile(useful, state_cost.size)
        bound = new_error + rest_reduced[k] - price * (capacity - new_cost)
        keep = (new_cost + rest_cheapest[k] <= capacity) & (bound <= incumbent_error + tolerance)
        keep = np.nonzero(keep)[0]
        keep = keep[np.lexsort((new_error[keep], new_cost[keep]))]  # by cost, then error
        best_before = np.minimum.accumulate(np.concatenate([[np.inf], new_error[keep][:-1]]))
        keep = keep[new_error[keep] < best_before]  # strictly better than every cheaper (or equal-cost) state
        state_cost, state_error = new_cost[keep], new_error[keep]
        history.append((parent[keep], option[keep]))
    if state_cost.size == 0 or float(state_error.min()) > incumbent_error:
        if exact:  # cannot happen: the incumbent's prefixes always survive unthinned
            raise RuntimeError("budget solver lost every state; please report this bug")
        return _solution(groups, incumbent_picks, dual_bound, exact=False)
    index = int(np.argmin(state_error))
    positions = []
    for k in range(len(groups) - 1, -1, -1):
        parent, option = history[k]
        positions.append(int(option[index]))
        index = int(parent[index])
    return _solution(groups, positions[::-1], dual_bound, exact)


def _thin(cost: np.ndarray, count: int) -> np.ndarray:
    """Indices of a Pareto front (increasing cost, decreasing error) cut into `count` equal cost buckets,
    keeping each bucket's least error: its most expensive state."""
    bucket = np.floor((cost - cost[0]) * (count / (cost[-1] - cost[0] + 1))).astype(np.int64)
    return np.nonzero(np.r_[bucket[1:] != bucket[:-1], True])[0]


def _solution(groups, positions: list[int], bound: float, exact: bool) -> Solution:
    """Map positions on each group's Pareto front back to the caller's option indices."""
    error = sum(float(g[1][p]) for g, p in zip(groups, positions))
    cost = sum(int(g[0][p]) for g, p in zip(groups, positions))
    return Solution([int(g[2][p]) for g, p in zip(groups, positions)], error, cost, bound, exact)


def _integers(cost) -> np.ndarray:
    array = np.asarray(cost)
    return array.astype(np.int64) if array.dtype.kind in "iu" else array


def _pareto(cost: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Options no other option beats on both cost and error, by increasing cost: (cost, error, index)."""
    if cost.size == 0 or cost.shape != error.shape:
        raise ValueError("every group needs at least one option, with as many costs as errors")
    if cost.dtype.kind not in "iu":
        raise ValueError(f"option costs must be integers (parameters, bytes, ticks), got {cost.dtype}")
    if not np.isfinite(error).all():
        raise ValueError("option errors must be finite")
    order = np.lexsort((error, cost))
    cost, error = cost[order], error[order]
    best_before = np.minimum.accumulate(np.concatenate([[np.inf], error[:-1]]))
    keep = error < best_before
    return cost[keep], error[keep], order[keep]


def _hull_segments(cost: np.ndarray, error: np.ndarray) -> list[tuple[int, float, int]]:
    """Lower convex hull of a Pareto front as segments (added cost, error saved, end point index)."""
    hull = [0]
    for i in range(1, cost.size):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b if it lies on or above the line from a to i
            if (error[b] - error[a]) * (cost[i] - cost[a]) >= (error[i] - error[a]) * (cost[b] - cost[a]):
                hull.pop()
            else:
                break
        hull.append(i)
    return [(int(cost[b] - cost[a]), float(error[a] - error[b]), b) for a, b in zip(hull[:-1], hull[1:])]


def _ordered_segments(groups) -> list[tuple[float, int, int, int, float, int]]:
    """Every hull segment as (rate, group, step along the hull, added cost, error saved, end position),
    best rate first; rates fall along each group's hull, so each group's segments stay in order."""
    segments = []
    for g, (cost, error, _) in enumerate(groups):
        for step, (added, saved, end) in enumerate(_hull_segments(cost, error)):
            segments.append((saved / added, g, step, added, saved, end))
    segments.sort(key=lambda s: (-s[0], s[1], s[2]))
    return segments


def _dual_price(groups, capacity: int) -> float:
    """λ of the LP relaxation: the error saved per unit cost by the first hull segment that does not fit."""
    room = capacity - sum(int(g[0][0]) for g in groups)
    for rate, _, _, added, _, _ in _ordered_segments(groups):
        if added > room:
            return rate
        room -= added
    return 0.0


def _greedy(groups, capacity: int) -> tuple[float, list[int]]:
    """A feasible choice (error, positions): hull segments in rate order while they fit (a group stops at
    its first segment that does not)."""
    room = capacity - sum(int(g[0][0]) for g in groups)
    positions = [0] * len(groups)
    blocked: set[int] = set()
    for _, g, _, added, _, end in _ordered_segments(groups):
        if g in blocked:
            continue
        if added <= room:
            room -= added
            positions[g] = end
        else:
            blocked.add(g)
    return sum(float(g[1][p]) for g, p in zip(groups, positions)), positions
