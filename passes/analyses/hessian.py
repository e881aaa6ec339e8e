"""hessian: for each linear layer the input Hessian H = 2·XᵀX/n over the calibration tokens (an analysis).

    hessians = am.get("hessian")        # {linear node name: H}, float32 [K, K]

Reads: calibration (required); the graph's linear layers (fxc.ir.weight_layers).
Writes: nothing in the graph; returns {linear node name: H} for every linear layer the calibration reaches.
Layers that read the same input (q/k/v) share one matrix, computed once. Products are summed by
passes/algorithms/gram.py's GramAccumulator (float32 GEMMs, float64 totals).
Preserves: not applicable (an analysis changes nothing); the cached result is dropped after any pass that
does not list `hessian` in PassResult.preserved.
Options: none.

`segment_hessians(runner, segment)` is the same measurement inside one segment of a sequential run
(fxc.passmgr.sequential), under the weights compressed so far: what sparse-gpt, gptq and whitened
low rank use layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.passes.algorithms.gram import HessianAccumulator
from fxc.passmgr.passbase import Analysis
from fxc.passmgr.sequential import CalibrationRunner, Segment


def _collect(linears: set[torch.fx.Node]):
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


def segment_hessians(runner: CalibrationRunner, segment: Segment) -> dict[str, torch.Tensor]:
    """Hessians of the segment's linear layers under the current weights (one run over the batches)."""
    linears = {layer.node for layer in segment.layers if layer.kind == "linear"}
    if not linears:
        return {}
    by_input, observe = _collect(linears)
    runner.observe(segment, observe)
    results = {src: acc.result() for src, acc in by_input.items()}
    return {node.name: results[node.args[0]] for node in linears}


@dataclass(frozen=True)
class Hessian(Analysis):
    """Input Hessian 2·XᵀX/n of every linear layer."""

    name = "hessian"

    def compute(self, gm: torch.fx.GraphModule, am) -> dict[str, torch.Tensor]:
        runner = CalibrationRunner(gm, am.require_calibration("hessian"))
        linears = {layer.node for layer in ir.weight_layers(gm, kinds=("linear",))}
        by_input, observe = _collect(linears)
        runner.forward_all(observe, keep_outputs=False)
        results = {src: acc.result() for src, acc in by_input.items()}
        return {node.name: results[node.args[0]] for node in linears if node.args[0] in results}
