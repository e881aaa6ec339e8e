"""Planning helpers of the `auto` pass: each layer's options with their real cost, the exact solve and
the frontier (the printed plan is passes/auto/report.py). Pure functions on the graph's shapes; reads and
writes nothing.

    choices = layer_choices(gm, layers, candidates, peak_flops, bandwidth)   # feasible options per layer
    solution = solve(costs, scores, capacity)                                  # passes/algorithms/budget_solver.py
    points = frontier(costs, scores, count=8)                                  # exact optimum at 8 budgets

Cost of an option is what the compressed model will really hold for the layer's weight (the bias is
unchanged), in the formats the passes that carry the plan out write:
    keep            N·K dense values
    wB[gG][a8]      quantize's packed integers and float32 scales (passes/specs/scheme.py)
    sS[+wB]         unstructured zeros are stored dense (the op set has no unstructured sparse format),
                    so it costs what its quantization part costs and never saves bytes by itself
    N:M             sparse_nm_linear: N/M of the values plus one uint8 index each
    N:M+w8          the same with int8 values and one float32 scale per output row
    rR[+wB]         the two factors [r, K] and [N, r] (r as the low-rank pass rounds it), each dense or quantized
This differs from Candidate.storage_bytes only for unstructured sparsity (which it counts as if a
bitmask format existed) and for weights that are not float32. Latency is a roofline estimate per layer on
the traced input: max(FLOPs / peak_flops, (weight bytes + activation bytes) / bandwidth), FLOPs as the
`cost` analysis plans them (N:M x N/M, low rank x r(N+K)/(NK), quantization unchanged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch.fx

from fxc import ir
from fxc.ir import cost
from fxc.passes.algorithms.budget_solver import Solution, solve_multiple_choice
from fxc.passes.specs.candidates import KEEP, Candidate, split_rank, unfit
from fxc.passes.specs.scheme import GROUP_SIZES, Scheme


def realizable(candidate: Candidate) -> str | None:
    """Why the passes cannot carry this candidate out on any layer, or None."""
    if candidate.group_size not in GROUP_SIZES:
        return f"{candidate.text}: quantize supports group sizes 32, 64, 128 or per channel"
    if (
        candidate.nm
        and candidate.bits is not None
        and (candidate.bits != 8 or candidate.group_size or candidate.act_bits)
    ):
        return (
            f"{candidate.text}: N:M combines with per-channel int8 weights only (e.g. 2:4+w8): "
            "sparse_nm_linear stores int8 values with one scale per output row"
        )
    return None


def stored_bytes(candidate: Candidate, n: int, k: int, element_size: int) -> int:
    """Bytes the compressed model holds for the weight [n, k] compressed as `candidate`."""
    if candidate.rank_ratio is not None:
        r = split_rank(candidate, n, k)
        return _dense_bytes(candidate, r, k, element_size) + _dense_bytes(candidate, n, r, element_size)
    if candidate.nm:
        kept = n * k * candidate.nm[0] // candidate.nm[1]
        values = kept * element_size if candidate.bits is None else kept + 4 * n
        return values + kept
    return _dense_bytes(candidate, n, k, element_size)


def _dense_bytes(candidate: Candidate, n: int, k: int, element_size: int) -> int:
    if candidate.bits is None:
        return n * k * element_size
    return Scheme(candidate.bits, candidate.group_size, True, candidate.act_bits).storage_bytes(n, k, element_size)


def roofline_seconds(
    candidate: Candidate, n: int, k: int, tokens: int, weight_bytes: int, peak_flops: float, bandwidth: float
) -> float:
    """max(compute time, memory time) of the layer on `tokens` input rows (float32 activations)."""
    if candidate.rank_ratio is not None:
        r = split_rank(candidate, n, k)
        flops, activations = 2 * tokens * r * (n + k), tokens * (k + 2 * r + n) * 4
    else:
        kept = candidate.nm[0] / candidate.nm[1] if candidate.nm else 1.0
        flops, activations = 2 * tokens * n * k * kept, tokens * (k + n) * 4
    return max(flops / peak_flops, (weight_bytes + activations) / bandwidth)


@dataclass
class LayerChoices:
    """One layer's feasible options ("keep" first) with their bytes, seconds and (once measured) damage."""

    layer: ir.WeightLayer
    shape: tuple[int, int]
    element_size: int
    options: list[Candidate]
    bytes: list[int]
    seconds: list[float]
    scores: list[float] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # candidate -> why this layer cannot take it

    @property
    def dense_bytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.element_size


def layer_choices(
    gm: torch.fx.GraphModule,
    layers: list[ir.WeightLayer],
    candidates: tuple[Candidate, ...],
    peak_flops: float,
    bandwidth: float,
) -> list[LayerChoices]:
    out = []
    for layer in layers:
        weight = ir.get_tensor(gm, layer.weight)
        n, k = weight.shape[0], weight[0].numel()
        tokens = max(1, cost.layer_cost(gm, layer.node).flops // (2 * n * k))
        options, left_out = [KEEP], {}
        for candidate in candidates:
            reason = unfit(candidate, n, k)
            if reason:
                left_out[candidate.text] = reason
            else:
                options.append(candidate)
        sizes = [stored_bytes(c, n, k, weight.element_size()) for c in options]
        seconds = [roofline_seconds(c, n, k, tokens, b, peak_flops, bandwidth) for c, b in zip(options, sizes)]
        out.append(LayerChoices(layer, (n, k), weight.element_size(), options, sizes, seconds, left_out=left_out))
    return out


def drop_unmeasured(choices: list[LayerChoices]) -> None:
    """Remove options whose damage could not be measured (inf): the layer cannot take them."""
    for c in choices:
        keep = [i for i, s in enumerate(c.scores) if math.isfinite(s)]
        for i in set(range(len(c.options))) - set(keep):
            c.left_out[c.options[i].text] = "the sensitivity analysis could not apply it"
        c.options = [c.options[i] for i in keep]
        c.bytes = [c.bytes[i] for i in keep]
        c.seconds = [c.seconds[i] for i in keep]
        c.scores = [c.scores[i] for i in keep]


# --- the exact solve and the frontier ------------------------------------------------------------------


def solve(costs: list[list[int]], scores: list[list[float]], capacity: int) -> Solution:
    """Option index per layer (`.picks`) minimizing the summed damage within `capacity`, with `.exact` and
    `.bound` (budget_solver.py). Raises InfeasibleBudget when even the cheapest options do not fit."""
    return solve_multiple_choice(costs, scores, capacity)


def frontier(costs: list[list[int]], scores: list[list[float]], count: int) -> list[list[int]]:
    """The exact optimum's picks at `count` budgets spread from the cheapest plan to the dearest useful
    one (every layer at its least-damage option); duplicates dropped."""
    low = sum(min(c) for c in costs)
    high = max(low, sum(c[int(np.argmin(s))] for c, s in zip(costs, scores)))
    plans = []
    for budget in sorted({int(round(b)) for b in np.linspace(low, high, count)}):
        picks = solve(costs, scores, budget).picks
        if picks not in plans:
            plans.append(picks)
    return plans
