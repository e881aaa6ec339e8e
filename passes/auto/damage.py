"""The `auto` pass's damage of every option: each layer option's predicted damage, read from the analyses
its `measure` and `estimate` options name.

    score_options(am, choices, options)    # sets choices[i].scores ("keep": 0); options: the Auto pass

estimate=executed with measure=jacobian or layer asks the `method-error` analysis (ΔW made as the passes
will make it; weighting=output for jacobian). Otherwise the `sensitivity` analysis's round-to-nearest
candidates are measured with its measure (layer for jacobian), and for jacobian each layer's score is
scaled by the isotropic gain tr(W)/N of the `output-metric` analysis. Reads those analyses; writes only
`LayerChoices.scores`.
"""

from __future__ import annotations

import torch

from fxc.passes.analyses.method_error import MethodError
from fxc.passes.analyses.output_metric import OutputMetric
from fxc.passes.analyses.sensitivity import Sensitivity
from fxc.passes.auto.plan import LayerChoices
from fxc.passes.specs.candidates import KEEP


def score_options(am, choices: list[LayerChoices], options) -> None:
    """Damage of every option ("keep": 0), in relative model-output error for measure=jacobian."""
    fqns = tuple(c.layer.fqn for c in choices)
    texts = tuple(dict.fromkeys(o.text for c in choices for o in c.options if o is not KEEP))
    probing = {"batches": options.gain_batches, "probes": options.probes, "seed": options.seed}
    if options.estimate == "executed" and options.measure in ("jacobian", "layer"):
        errors = {}
        if texts:
            weighting = "output" if options.measure == "jacobian" else "layer"
            methods = {"quantize_method": options.quantize_method, "prune_method": options.prune_method}
            methods["low_rank_method"] = options.low_rank_method
            errors = am.get(
                MethodError(candidates=texts, weighting=weighting, layers=fqns, skip=(), **methods, **probing)
            )
        for c in choices:
            c.scores = [0.0 if o is KEEP else errors[c.layer.node.name][o.text] for o in c.options]
        return
    gains = {}
    if options.measure == "jacobian":  # rtn estimates: the isotropic gain tr(W)/N of each layer
        metric = am.get(OutputMetric(layers=fqns, skip=(), **probing))
        gains = {name: float(torch.trace(w)) / w.shape[0] for name, w in metric.items()}
    groups: dict[tuple[str, ...], list[LayerChoices]] = {}  # sensitivity measures all it is given
    for c in choices:
        groups.setdefault(tuple(o.text for o in c.options if o is not KEEP), []).append(c)
    measure = "layer" if options.measure == "jacobian" else options.measure
    for group, members in groups.items():
        sensitivity = None
        if group:
            layers = tuple(c.layer.fqn for c in members)
            sensitivity = am.get(
                Sensitivity(
                    candidates=group,
                    measure=measure,
                    layers=layers,
                    skip=(),
                    batches=options.gain_batches,
                    samples=options.probes,
                    seed=options.seed,
                )
            )
        for c in members:
            gain = gains.get(c.layer.node.name, 1.0)
            c.scores = [0.0 if o is KEEP else gain * sensitivity.score(c.layer.node.name, o.text) for o in c.options]
