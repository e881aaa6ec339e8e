"""budget_solver, fxc's one multiple-choice knapsack (low-rank, mixed-precision, auto): optimal against
brute force on random instances (small and byte-sized cost grids), infeasible budgets name the minimum,
degenerate instances thinned but feasible and bounded, bad input refused."""

import itertools

import numpy as np
import pytest

from fxc.passes.algorithms.budget_solver import InfeasibleBudget, solve_multiple_choice


def brute_force(costs, errors, capacity):
    """The least summed error of any choice within the capacity, or None when none fits."""
    best = None
    for combo in itertools.product(*[range(len(c)) for c in costs]):
        cost = sum(costs[g][i] for g, i in enumerate(combo))
        error = sum(errors[g][i] for g, i in enumerate(combo))
        if cost <= capacity and (best is None or error < best):
            best = error
    return best


def check_optimal(costs, errors, capacity):
    best = brute_force(costs, errors, capacity)
    solution = solve_multiple_choice(costs, errors, capacity)
    picked_cost = sum(int(costs[g][i]) for g, i in enumerate(solution.picks))
    picked_error = sum(float(errors[g][i]) for g, i in enumerate(solution.picks))
    assert solution.exact and picked_cost == solution.cost <= capacity
    assert picked_error == pytest.approx(best, abs=1e-12) and solution.error == pytest.approx(picked_error)
    assert solution.bound <= picked_error + 1e-9 and solution.gap >= -1e-9


def test_matches_brute_force_on_random_instances():
    rng = np.random.default_rng(1)
    for _ in range(150):
        groups = int(rng.integers(1, 5))
        costs = [rng.integers(1, 25, size=int(rng.integers(1, 5))) for _ in range(groups)]
        errors = [rng.random(c.size) * 10 for c in costs]
        capacity = int(rng.integers(0, 70))
        if brute_force(costs, errors, capacity) is None:
            with pytest.raises(InfeasibleBudget, match="capacity") as info:
                solve_multiple_choice(costs, errors, capacity)
            assert info.value.minimum == sum(int(c.min()) for c in costs) > capacity
            continue
        check_optimal(costs, errors, capacity)


@pytest.mark.parametrize("seed", range(12))
def test_optimal_on_cost_grids_with_a_common_unit(seed):
    """Mixed-precision-like: byte costs sharing a unit, every budget from the cheapest to the dearest plan."""
    rng = np.random.default_rng(seed)
    items, unit = int(rng.integers(3, 7)), int(rng.integers(1, 50))
    costs = [[unit * int(c) for c in rng.integers(1, 40, size=int(rng.integers(2, 5)))] for _ in range(items)]
    errors = [[float(s) for s in rng.random(len(c))] for c in costs]
    low, high = sum(min(c) for c in costs), sum(max(c) for c in costs)
    for capacity in np.linspace(low, high, 7).round().astype(int).tolist():
        check_optimal(costs, errors, capacity)


def test_optimal_on_byte_sized_costs():
    """Costs of 10⁸-byte layers with no common unit: a dynamic program over the cost grid would need
    ~10⁹ cells per group; nothing here grows with the capacity."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        costs = [rng.integers(10**7, 10**8, size=int(rng.integers(2, 5))) for _ in range(6)]
        errors = [rng.gamma(1.0, 1.0, size=c.size) for c in costs]
        low, high = sum(int(c.min()) for c in costs), sum(int(c.max()) for c in costs)
        check_optimal(costs, errors, int(rng.integers(low, high + 1)))


def test_infeasible_budget_reports_the_minimum():
    with pytest.raises(InfeasibleBudget, match="cheapest choice needs 9 but the capacity is 8") as info:
        solve_multiple_choice([[10, 5], [8, 4]], [[0, 1], [0, 1]], 8)
    assert (info.value.minimum, info.value.capacity) == (9, 8)
    assert isinstance(info.value, ValueError)
    solution = solve_multiple_choice([[10, 5], [8, 4]], [[0.0, 1.0], [0.0, 3.0]], 14)
    assert (solution.picks, solution.error, solution.cost, solution.exact) == ([1, 0], 1.0, 13, True)


def test_degenerate_instance_is_thinned_but_feasible_and_bounded():
    # identical near-linear groups with a "dense" jump: thousands of near-ties; a tiny cap forces thinning
    rng = np.random.default_rng(0)
    costs = [np.r_[np.arange(1, 40) * 3, 200] for _ in range(30)]
    errors = [np.r_[np.linspace(10.0, 0.5, 39) + rng.random(39) * 1e-3, 0.0] for _ in range(30)]
    capacity = 1500
    solution = solve_multiple_choice(costs, errors, capacity, max_candidates=200)
    exact = solve_multiple_choice(costs, errors, capacity)
    assert not solution.exact and exact.exact
    assert solution.cost <= capacity and solution.bound <= exact.error <= solution.error
    assert solution.error <= exact.error * 1.01
    assert solution.gap >= (solution.error - exact.error) / solution.error


@pytest.mark.parametrize(
    "costs, errors, match",
    [
        ([[1.5, 2.0]], [[1.0, 0.0]], "integers"),
        ([[1, 2]], [[1.0, float("nan")]], "finite"),
        ([[1, 2], []], [[1.0, 0.0], []], "at least one option"),
        ([[1, 2]], [[1.0, 0.0], [1.0]], "groups"),
    ],
)
def test_bad_input_is_refused(costs, errors, match):
    with pytest.raises(ValueError, match=match):
        solve_multiple_choice(costs, errors, 10)
