"""hessian: for each linear layer the input Hessian H = 2·XᵀX/n over the calibration tokens (an analysis).

    hessians = am.get("hessian")        # {linear node name: H}, float32 [K, K]

Reads: calibration (required); the graph's linear layers (fxc.ir.weight_layers).
Writes: nothing in the graph; returns {linear node name: H} for every linear layer the calibration reaches.
Layers that read the same input (q/k/v) share one matrix, computed once (passes/algorithms/layer_inputs.py's
hessian_observer; products summed by passes/algorithms/gram.py's GramAccumulator: float32 GEMMs, float64
totals).
Preserves: not applicable (an analysis changes nothing); the cached result is dropped after any pass that
does not list `hessian` in PassResult.preserved.
Options: none.

The same measurement inside one segment of a sequential run, under the weights compressed so far (what
sparse-gpt, gptq and whitened low rank use layer by layer), is passes/algorithms/layer_inputs.py's
segment_hessians.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.passes.algorithms.layer_inputs import hessian_observer
from fxc.passmgr.passbase import Analysis
from fxc.passmgr.sequential import CalibrationRunner


@dataclass(frozen=True)
class Hessian(Analysis):
    """Input Hessian 2·XᵀX/n of every linear layer."""

    name = "hessian"

    def compute(self, gm: torch.fx.GraphModule, am) -> dict[str, torch.Tensor]:
        runner = CalibrationRunner(gm, am.require_calibration("hessian"))
        linears = {layer.node for layer in ir.weight_layers(gm, kinds=("linear",))}
        by_input, observe = hessian_observer(linears)
        runner.forward_all(observe, keep_outputs=False)
        results = {src: acc.result() for src, acc in by_input.items()}
        return {node.name: results[node.args[0]] for node in linears if node.args[0] in results}
