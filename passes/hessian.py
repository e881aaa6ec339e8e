"""hessian: for each linear layer the input Hessian H = 2·XᵀX/n over calibration tokens (an analysis).

Reads: calibration (required). Writes: nothing in the graph; returns {linear node name: H} (float32
[K, K]), accumulated in float64 one batch at a time. Layers that read the same input share one
matrix (computed once). `HessianAccumulator` and `segment_hessians` are also what the sequential
passes (sparse-gpt, gptq, whitened low rank) use inside one segment.
`dampen(H, damp)` adds damp·mean(diag H) to the diagonal and raises a clear error naming the layer
when the result still cannot be Cholesky-factored.
For the column loops of gptq and sparse-gpt: `inverse_cholesky_upper(H)` (the upper Cholesky
factor of H⁻¹ they both propagate errors with) and `one_thread()` (the loop's thread setting).
Options: none.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.errors import FxcError
from fxc.passbase import Analysis
from fxc.sequential import CalibrationRunner, Segment


class HessianAccumulator:
    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        if self.sum is None:
            self.sum = torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float64)
        self.sum.addmm_(rows.T, rows)
        self.tokens += rows.shape[0]

    def result(self) -> torch.Tensor:
        return (2.0 * self.sum / max(self.tokens, 1)).to(torch.float32)


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


def dampen(hessian: torch.Tensor, damp: float, layer: str) -> torch.Tensor:
    """H + damp·mean(diag H)·I (dead inputs get 1 on the diagonal); raise if still not positive definite."""
    h = hessian.clone().to(torch.float64)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    if torch.linalg.cholesky_ex(h).info != 0:
        raise FxcError(
            f"the Hessian of layer {layer} is not positive definite even with dampening {damp}; "
            "raise the pass's 'damp' option or give more (and more varied) calibration data"
        )
    return h


def inverse_cholesky_upper(h: torch.Tensor) -> torch.Tensor:
    """Upper-triangular U with UᵀU = H⁻¹ for a dampened (positive definite) H, as float32: row i of U
    holds the weights by which GPTQ / SparseGPT push column i's error onto the later columns."""
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).to(torch.float32)


@contextlib.contextmanager
def one_thread():
    """Run a column loop of thousands of small ops on one intra-op thread (thread hand-offs and barrier
    waits cost more than they save: 8-15x slower on a busy 2-core machine); the setting is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
