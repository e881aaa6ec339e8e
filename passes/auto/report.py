"""What the `auto` pass shows and records: the per-layer plan table (printed only with print-plan=true), the
one-line summary, and the meta.Frontier it keeps on the graph's output node. Pure functions on the planned
choices; reads and writes nothing (the pass prints the table when asked and puts the Frontier).

    print(plan_table(choices, picks, summary_line(choices, picks, fixed, frontier, "jacobian")))
"""

from __future__ import annotations

from fxc.ir import meta
from fxc.passes.auto.plan import LayerChoices


def plan_table(choices: list[LayerChoices], picks: list[int], title: str) -> str:
    header = ("layer", "shape", "choice", "bytes", "dense bytes", "est. us", "damage")
    body = [
        (
            c.layer.fqn,
            f"{c.shape[0]}x{c.shape[1]}",
            c.options[i].text,
            f"{c.bytes[i]:,}",
            f"{c.dense_bytes:,}",
            f"{1e6 * c.seconds[i]:.1f}",
            f"{c.scores[i]:.3g}",
        )
        for c, i in zip(choices, picks)
    ]
    widths = [max(len(r[j]) for r in [header, *body]) for j in range(len(header))]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
    return "\n".join([title, line(header), *map(line, body)])


def mix(choices: list[LayerChoices], picks: list[int]) -> tuple[tuple[str, int], ...]:
    """(option, number of layers) of a plan, the most used first."""
    counts: dict[str, int] = {}
    for c, i in zip(choices, picks):
        counts[c.options[i].text] = counts.get(c.options[i].text, 0) + 1
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def frontier_record(
    choices: list[LayerChoices],
    picks: list[int],
    plans: list[list[int]],
    fixed: int,
    budget: float,
    latency: bool,
    scope: str,
    measure: str,
) -> meta.Frontier:
    """The meta.Frontier of a plan: (cost, predicted damage) of the chosen plan and of each frontier plan.
    Costs are seconds for a latency budget, else bytes (with the `fixed` bytes outside the planned layers
    when scope is "model"); `budget` is the budget in the same units."""

    def point(p: list[int]) -> tuple[float, float]:
        damage = float(sum(c.scores[i] for c, i in zip(choices, p)))
        if latency:
            return float(sum(c.seconds[i] for c, i in zip(choices, p))), damage
        return float(sum(c.bytes[i] for c, i in zip(choices, p)) + (fixed if scope == "model" else 0)), damage

    return meta.Frontier(
        objective="latency" if latency else "bytes",
        scope=scope,
        budget=float(budget),
        chosen=point(picks),
        points=tuple(sorted({point(p) for p in plans})),
        measure=measure,
        mix=mix(choices, picks),
        source="auto",
    )


def summary_line(
    choices: list[LayerChoices], picks: list[int], fixed: int, frontier: meta.Frontier, measure: str
) -> str:
    """The pass's summary: layers, stored and dense weight bytes, model bytes, estimated time, the mix and
    the predicted damage."""
    stored = sum(c.bytes[i] for c, i in zip(choices, picks))
    dense = sum(c.dense_bytes for c in choices)
    mixed = ", ".join(f"{name} x{n}" for name, n in frontier.mix)
    return (
        f"auto: {len(choices)} layers, {stored:,} of {dense:,} weight bytes ({dense / stored:.2f}x smaller; model "
        f"{fixed + stored:,} bytes), est. {1e6 * sum(c.seconds[i] for c, i in zip(choices, picks)):.1f} us; "
        f"{mixed}; predicted damage {frontier.chosen[1]:.4g} ({measure})"
    )
