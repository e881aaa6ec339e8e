"""What the calibration inputs of weight layers give the methods: each input as rows, the input Hessians of
linear layers over a whole run or inside one segment of a sequential run, and how far a layer-by-layer
method may trust them given how many calibration tokens stand behind them.

    rows = channel_rows(node, x)                        # a layer's input x as [tokens, channels]
    by_input, observe = hessian_observer(linears)       # a runner hook; by_input: {input node: HessianAccumulator}
    hessians = segment_hessians(runner, segment, tokens={})   # {linear node name: H = 2·XᵀX/n}, float32 [K, K]
    fit = calibration_fit(tokens=1024, width=576)       # CalibrationFit(fit="layer", damp=0.01, shrink=0.36, ...)
    twin = TwinOnDemand(gm, calibration, residual=True) # the dense model beside, started only if a layer needs it

`hessian_observer` adds each linear layer's input once per batch, so layers that read the same input
(q/k/v) share one accumulator (passes/algorithms/gram.py's HessianAccumulator: float32 GEMMs, float64
totals). `segment_hessians` is that measurement inside one segment of a sequential run
(fxc.passmgr.sequential), under the weights compressed so far: what sparse-gpt, gptq and whitened low rank
use layer by layer; the `hessian` analysis (passes/analyses/hessian.py) runs the same hook over the whole
calibration set.

**Calibration size.** GPTQ and SparseGPT fit each layer to its calibration tokens. A layer with K inputs
has a K x K Hessian; from n tokens its off-diagonal entries are noisy until n is many times K, and below
n = K it is singular: the fit then moves error into input directions the calibration never showed, which
new text does show, and the result can lose to round-to-nearest or Wanda, which fit nothing. The
dense-model fits (dense_target.py) also need the cross-covariance of two different inputs, which settles
more slowly still. So `calibration_fit` chooses, per layer, from r = n / K (tokens per input):

- the fit: `residual` from r >= RESIDUAL_TOKENS, else `layer` (the layer's own output on its current
  inputs). A fit the user names is kept.
- the Hessian: shrunk toward its diagonal, H <- (1 - s)·H + s·diag(H) with s = SHRINK_TOKENS / (SHRINK_TOKENS
  + r), before the usual dampening (DEFAULT_DAMP of its mean diagonal). This is the classic shrinkage
  estimate of a covariance from few samples: s -> 1 as r -> 0, where GPTQ on a diagonal Hessian is exactly
  round-to-nearest and SparseGPT's scores are Wanda's, and s -> 0 as r grows. A `damp` the user names
  turns the shrinkage off (damp=0.01 gives the method as it was before this rule). The dense-model
  target W̃ = W0 + W0 (C - H) M⁻¹ (dense_target.py) solves with M = the shrunk, dampened H over (1 - s),
  that is H + s/(1 - s)·diag(H) + dampening: a ridge pulling W̃ toward W0 as strongly as the shrinkage, so
  with few tokens a dense fit tends to the layer fit instead of fitting noise (solving with the shrunk H
  itself would scale the correction by 1/(1 - s)).

benchmarks/calib_sweep.py measures the rule on SmolLM2 from one sequence of 128 tokens to 128 x 512.
`TwinOnDemand` starts the dense model (dense_target.DenseTwin) at the first compressed segment, and only
if some layer's fit needs it, so small calibrations never copy or run it. Reads the calibration through
the runner it is given; writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.passes.algorithms.dense_target import DenseTwin
from fxc.passes.algorithms.gram import HessianAccumulator
from fxc.passmgr.calibration import Calibration
from fxc.passmgr.sequential import CalibrationRunner, Segment

DEFAULT_DAMP = 0.01  # dampening (a fraction of mean diag H) when the user gives none
RESIDUAL_TOKENS = 32.0  # calibration tokens per layer input from which the dense-model fits are chosen
SHRINK_TOKENS = 1.0  # Hessian shrinkage (tokens per input) SHRINK_TOKENS / (SHRINK_TOKENS + tokens per input)


def channel_rows(node: torch.fx.Node, x: torch.Tensor) -> torch.Tensor:
    """A layer's input as [tokens, channels]: linear inputs flatten leading dims, conv inputs move
    channels last."""
    if node.target == ir.aten.conv2d.default:
        return x.movedim(1, -1).reshape(-1, x.shape[1])
    return x.reshape(-1, x.shape[-1])


def hessian_observer(linears: set[torch.fx.Node]):
    """A hook adding each linear layer's input once per batch (q/k/v share one input tensor)."""
    by_input: dict[torch.fx.Node, HessianAccumulator] = {}
    last_seen: dict[torch.fx.Node, torch.Tensor] = {}

    def observe(node: torch.fx.Node, x: torch.Tensor) -> None:
        if node not in linears:
            return
        source = node.args[0]
        if last_seen.get(source) is not x:
            by_input.setdefault(source, HessianAccumulator()).add(x)
            last_seen[source] = x

    return by_input, observe


def segment_hessians(
    runner: CalibrationRunner, segment: Segment, tokens: dict[str, int] | None = None
) -> dict[str, torch.Tensor]:
    """Hessians of the segment's linear layers under the current weights (one run over the batches).
    tokens: a dict to fill with each layer's number of input rows (the samples behind its Hessian)."""
    linears = {layer.node for layer in segment.layers if layer.kind == "linear"}
    if not linears:
        return {}
    by_input, observe = hessian_observer(linears)
    runner.observe(segment, observe)
    results = {src: acc.result() for src, acc in by_input.items()}
    if tokens is not None:
        tokens.update({node.name: by_input[node.args[0]].tokens for node in linears})
    return {node.name: results[node.args[0]] for node in linears}


@dataclass(frozen=True)
class CalibrationFit:
    """How a layer-by-layer method uses one layer's calibration: what it fits (`fit`, passes/algorithms/
    dense_target.py's TARGETS), the dampening and shrinkage of its Hessian (gram.py's damped_hessian), and
    the counts they were chosen from. `chosen`: the fit was chosen from the calibration size, not given."""

    fit: str
    damp: float
    shrink: float
    tokens: int
    width: int
    chosen: bool = True
    note: str = ""  # what else the method did differently for the calibration size ("Wanda's mask")

    @property
    def per_input(self) -> float:
        """Calibration tokens per input channel: how many samples stand behind each row of the Hessian."""
        return self.tokens / max(self.width, 1)


def calibration_fit(tokens: int, width: int, fit: str | None = None, damp: float | None = None) -> CalibrationFit:
    """The fit and Hessian regularization one layer's calibration supports (module docstring): `fit` and
    `damp` are the user's options, None where they were not given."""
    per_input = tokens / max(width, 1)
    chosen_fit = fit or ("residual" if per_input >= RESIDUAL_TOKENS else "layer")
    shrink = 0.0 if damp is not None else SHRINK_TOKENS / (SHRINK_TOKENS + per_input)
    return CalibrationFit(chosen_fit, DEFAULT_DAMP if damp is None else damp, shrink, tokens, width, fit is None)


class TwinOnDemand:
    """The dense model beside a sequential run (dense_target.DenseTwin), started at the first segment that
    compresses a layer whose fit needs it, before any weight was written, then advanced in step. Runs that
    fit every layer to itself never copy or run the dense model."""

    def __init__(self, gm: torch.fx.GraphModule, calibration: Calibration, residual: bool):
        self.gm, self.calibration, self.residual = gm, calibration, residual
        self.twin: DenseTwin | None = None
        self.decided = False  # after the first compressed segment: a twin started later would copy new weights
        self._passed: list[Segment] = []

    def cross_covariances(self, runner: CalibrationRunner, segment: Segment, needed: bool) -> dict:
        """The segment's dense-target statistics (DenseTwin.cross_covariances); `needed`: whether any layer of
        this run will fit to the dense model (only read at the first segment that compresses a layer)."""
        if not self.decided and needed:
            self.twin = DenseTwin(self.gm, self.calibration, residual=self.residual)
            for passed in self._passed:
                self.twin.advance(passed)
        self.decided = True
        return self.twin.cross_covariances(runner, segment) if self.twin is not None else {}

    def advance(self, segment: Segment) -> None:
        if self.twin is not None:
            self.twin.advance(segment)
        elif not self.decided:
            self._passed.append(segment)


def describe_fits(fits: dict[str, CalibrationFit]) -> str:
    """What the layers fitted and why, for a pass's summary: "; fit=residual (chosen: 42.7 to 114 calibration
    tokens per input, residual from 32), Hessian shrinkage 0.01 to 0.02, damp 0.01"; empty without layers."""
    if not fits:
        return ""
    parts = []
    for fit in sorted({f.fit for f in fits.values()}):
        group = [f for f in fits.values() if f.fit == fit]
        count = f" on {len(group)} of {len(fits)} layers" if len(group) < len(fits) else ""
        if all(f.chosen for f in group):
            low, high = min(f.per_input for f in group), max(f.per_input for f in group)
            span = f"{low:.3g}" if round(low, 3) == round(high, 3) else f"{low:.3g} to {high:.3g}"
            why = f"chosen: {span} calibration tokens per input, residual from {RESIDUAL_TOKENS:g}"
        else:
            rule = sorted({calibration_fit(f.tokens, f.width).fit for f in group} - {fit})
            why = "given" + (f"; this calibration size would choose {' or '.join(rule)}" if rule else "")
        parts.append(f"fit={fit}{count} ({why})")
    notes = sorted({f.note for f in fits.values() if f.note})
    parts += [f"{note} on {sum(f.note == note for f in fits.values())} of {len(fits)} layers" for note in notes]
    shrinks = [f.shrink for f in fits.values()]
    regularized = f"Hessian shrinkage {min(shrinks):.2f} to {max(shrinks):.2f}" if max(shrinks) > 0 else ""
    damps = sorted({f.damp for f in fits.values()})
    damped = f"damp {', '.join(f'{d:g}' for d in damps)}"
    return "; " + ", ".join(parts) + ", " + (regularized + ", " if regularized else "") + damped
