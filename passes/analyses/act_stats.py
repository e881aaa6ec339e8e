"""act-stats: per-layer input statistics over the calibration batches (an analysis).

    stats = am.get("act-stats")         # {layer node name: InputStats}
    stats["linear_3"].l2, .min, .max, .mean_abs, .mean, .absmax, .tokens

Reads: calibration (required); the graph's linear and conv2d layers (fxc.ir.weight_layers).
Writes: nothing in the graph; returns {layer node name: InputStats} for every linear and conv2d layer,
streamed batch by batch (one batch's activations in memory): per input channel (the input as rows:
passes/algorithms/layer_inputs.py's channel_rows) the L2 norm over all tokens (Wanda's ||x||), min, max,
mean |x| and the signed mean (what quantize's bias correction multiplies by the weight's rounding error).
Preserves: not applicable (an analysis changes nothing); the cached result is dropped after any pass
that does not list `act-stats` in PassResult.preserved.
Options: none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.passes.algorithms.layer_inputs import channel_rows
from fxc.passmgr.passbase import Analysis
from fxc.passmgr.sequential import CalibrationRunner


@dataclass(frozen=True)
class InputStats:
    l2: torch.Tensor  # [K] sqrt(sum over tokens of x^2)
    min: torch.Tensor  # [K]
    max: torch.Tensor  # [K]
    mean_abs: torch.Tensor  # [K]
    tokens: int
    mean: torch.Tensor | None = None  # [K] signed mean of x (None where the stats were made by hand)

    @property
    def absmax(self) -> torch.Tensor:
        return torch.maximum(self.min.abs(), self.max.abs())


class _Accumulator:
    def __init__(self) -> None:
        self.sq = self.lo = self.hi = self.abs_sum = self.sum = None
        self.tokens = 0

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().to(torch.float64)
        if self.sq is None:
            self.sq = torch.zeros(rows.shape[1], dtype=torch.float64)
            self.abs_sum = torch.zeros_like(self.sq)
            self.sum = torch.zeros_like(self.sq)
            self.lo = torch.full_like(self.sq, float("inf"))
            self.hi = torch.full_like(self.sq, float("-inf"))
        self.sq += (rows * rows).sum(0)
        self.abs_sum += rows.abs().sum(0)
        self.sum += rows.sum(0)
        self.lo = torch.minimum(self.lo, rows.amin(0))
        self.hi = torch.maximum(self.hi, rows.amax(0))
        self.tokens += rows.shape[0]

    def result(self) -> InputStats:
        f = torch.float32
        return InputStats(
            self.sq.sqrt().to(f),
            self.lo.to(f),
            self.hi.to(f),
            (self.abs_sum / self.tokens).to(f),
            self.tokens,
            (self.sum / self.tokens).to(f),
        )


@dataclass(frozen=True)
class ActStats(Analysis):
    """Per-input-channel L2 norm, min, max, mean |x| and mean of every linear/conv layer's input."""

    name = "act-stats"

    def compute(self, gm: torch.fx.GraphModule, am) -> dict[str, InputStats]:
        runner = CalibrationRunner(gm, am.require_calibration("act-stats"))
        layers = {layer.node for layer in ir.weight_layers(gm)}
        acc: dict[str, _Accumulator] = {}

        def observe(node: torch.fx.Node, x: torch.Tensor) -> None:
            if node in layers:
                acc.setdefault(node.name, _Accumulator()).add(channel_rows(node, x))

        runner.forward_all(observe, keep_outputs=False)
        return {name: a.result() for name, a in acc.items()}
