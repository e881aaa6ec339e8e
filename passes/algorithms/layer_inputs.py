"""What the calibration inputs of weight layers give the methods: each input as rows, and the input
Hessians of linear layers, over a whole run or inside one segment of a sequential run.

    rows = channel_rows(node, x)                        # a layer's input x as [tokens, channels]
    by_input, observe = hessian_observer(linears)       # a runner hook; by_input: {input node: HessianAccumulator}
    hessians = segment_hessians(runner, segment)        # {linear node name: H = 2·XᵀX/n}, float32 [K, K]

`hessian_observer` adds each linear layer's input once per batch, so layers that read the same input
(q/k/v) share one accumulator (passes/algorithms/gram.py's HessianAccumulator: float32 GEMMs, float64
totals). `segment_hessians` is that measurement inside one segment of a sequential run
(fxc.passmgr.sequential), under the weights compressed so far: what sparse-gpt, gptq and whitened low rank
use layer by layer; the `hessian` analysis (passes/analyses/hessian.py) runs the same hook over the whole
calibration set. Reads the calibration through the runner it is given; writes nothing.
"""

from __future__ import annotations

import torch
import torch.fx

from fxc import ir
from fxc.passes.algorithms.gram import HessianAccumulator
from fxc.passmgr.sequential import CalibrationRunner, Segment


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


def segment_hessians(runner: CalibrationRunner, segment: Segment) -> dict[str, torch.Tensor]:
    """Hessians of the segment's linear layers under the current weights (one run over the batches)."""
    linears = {layer.node for layer in segment.layers if layer.kind == "linear"}
    if not linears:
        return {}
    by_input, observe = hessian_observer(linears)
    runner.observe(segment, observe)
    results = {src: acc.result() for src, acc in by_input.items()}
    return {node.name: results[node.args[0]] for node in linears}
