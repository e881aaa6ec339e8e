"""The multiple-choice knapsack behind mixed precision: pick one option per item (layer), total cost
within a budget, minimum summed score. Solved exactly, by dynamic programming or integer programming.

    choice = solve(costs=[[10, 5], [8, 4]], scores=[[0.0, 1.0], [0.0, 3.0]], budget=14)   # -> [1, 0]

- `solve_dp`: costs are integers (bytes). Every item's cheapest option is taken as a base; the extra
  costs are divided by their greatest common divisor g, which loses nothing (every reachable total is a
  multiple of g above the base), and best[c] = least score with extra cost ≤ c·g is built item by item
  in numpy, with the argmin kept per item for the backtrack. Exact; time and memory ∝ items × budget/g.
- `solve_ilp`: the same problem as a 0/1 integer program (one binary per option, one "exactly one"
  row per item, one budget row) for scipy's HiGHS branch and bound with a zero optimality gap. Exact; used
  when the DP grid would be too large.
- `solve(..., method="auto")` picks the DP when its grid has at most `DP_LIMIT` cells.
`InfeasibleBudget` (a ValueError) carries the least reachable cost. Reads and writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DP_LIMIT = 40_000_000  # cells (items x budget steps) the DP may use; above this, the ILP


class InfeasibleBudget(ValueError):
    def __init__(self, minimum: int, budget: int):
        self.minimum, self.budget = minimum, budget
        super().__init__(f"budget {budget} is below the least reachable cost {minimum}")


def _check(costs: Sequence[Sequence[int]], scores: Sequence[Sequence[float]], budget: int) -> int:
    if len(costs) != len(scores) or any(len(c) != len(s) or not c for c, s in zip(costs, scores)):
        raise ValueError("costs and scores need the same non-empty option list per item")
    minimum = sum(min(c) for c in costs)
    if minimum > budget:
        raise InfeasibleBudget(minimum, budget)
    return minimum


def _reduced(costs: Sequence[Sequence[int]]) -> tuple[list[list[int]], int]:
    """Extra cost of each option over its item's cheapest, in units of their gcd (and that gcd)."""
    extras = [[int(c) - min(item) for c in item] for item in costs]
    unit = math.gcd(*(e for item in extras for e in item)) or 1
    return [[e // unit for e in item] for item in extras], unit


def grid_cells(costs: Sequence[Sequence[int]], budget: int) -> int:
    extras, unit = _reduced(costs)
    capacity = min((budget - sum(min(c) for c in costs)) // unit, sum(max(e) for e in extras))
    return len(costs) * (max(capacity, 0) + 1)


def solve(costs, scores, budget: int, method: str = "auto") -> list[int]:
    """The option index chosen for each item."""
    _check(costs, scores, budget)
    if method == "auto":
        method = "dp" if grid_cells(costs, budget) <= DP_LIMIT else "ilp"
    if method == "dp":
        return solve_dp(costs, scores, budget)
    if method == "ilp":
        return solve_ilp(costs, scores, budget)
    raise ValueError(f"method must be auto, dp or ilp, got {method!r}")


def solve_dp(costs, scores, budget: int) -> list[int]:
    base = _check(costs, scores, budget)
    extras, unit = _reduced(costs)
    capacity = min((budget - base) // unit, sum(max(e) for e in extras))
    best = np.zeros(capacity + 1)
    choices = []
    for extra, score in zip(extras, scores):
        new = np.full(capacity + 1, np.inf)
        pick = np.full(capacity + 1, -1, dtype=np.int16)
        for index, (e, s) in enumerate(zip(extra, score)):
            if e > capacity:
                continue
            candidate = best[: capacity + 1 - e] + float(s)
            better = candidate < new[e:]
            new[e:][better] = candidate[better]
            pick[e:][better] = index
        best = new
        choices.append(pick)
    chosen, c = [], capacity
    for extra, pick in zip(reversed(extras), reversed(choices)):
        index = int(pick[c])
        chosen.append(index)
        c -= extra[index]
    return chosen[::-1]


def solve_ilp(costs, scores, budget: int) -> list[int]:
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    base = _check(costs, scores, budget)
    extras, unit = _reduced(costs)
    capacity = (budget - base) // unit
    flat_scores = np.array([s for item in scores for s in item], dtype=np.float64)
    scale = np.abs(flat_scores).max() or 1.0
    sizes = [len(item) for item in extras]
    starts = np.cumsum([0, *sizes[:-1]])
    one_each = lil_matrix((len(extras), sum(sizes)))
    for row, (start, size) in enumerate(zip(starts, sizes)):
        one_each[row, start : start + size] = 1
    extra_row = np.array([e for item in extras for e in item], dtype=np.float64)
    result = milp(
        flat_scores / scale,
        constraints=[
            LinearConstraint(one_each.tocsr(), 1, 1),
            LinearConstraint(extra_row.reshape(1, -1), -np.inf, capacity),
        ],
        integrality=np.ones(sum(sizes)),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0.0, "disp": False},
    )
    if result.x is None or result.status != 0:
        raise RuntimeError(f"the integer program did not solve to optimality: {result.message}")
    chosen = [int(np.argmax(result.x[start : start + size])) for start, size in zip(starts, sizes)]
    if sum(extra[i] for extra, i in zip(extras, chosen)) > capacity:
        raise RuntimeError("the integer program's solution breaks the budget (solver tolerance); use method=dp")
    return chosen
