"""hessian: for each linear layer the input Hessian H = 2·XᵀX/n over calibration tokens (an analysis).

Reads: calibration (required). Writes: nothing in the graph; returns {linear node name: H} (float32
[K, K]): float32 products of up to GRAM_ROWS rows, summed in float64 (`GramAccumulator`, also the
cross-covariances of passes/dense_target.py). Layers that read the same input share one matrix
(computed once). `HessianAccumulator` and `segment_hessians` are also what the sequential passes
(sparse-gpt, gptq, whitened low rank) use inside one segment.
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

GRAM_ROWS = 4096  # rows per float32 product of a GramAccumulator


class GramAccumulator:
    """Σ leftᵀ right over streamed row matrices [n, K] (left = right for a Hessian), in float64.
    Rows are gathered until GRAM_ROWS and multiplied in float32, each product then added in float64: one
    large float32 GEMM instead of a float64 one per batch, 2x less time (SmolLM2's 512-token batches), with
    float32 rounding only inside sums of at most GRAM_ROWS terms (relative error ~1e-6, far below the
    1% dampening every user adds to the diagonal)."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.rows = 0
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (left, right) row blocks not yet multiplied
        self._pending_rows = 0

    def add(self, left: torch.Tensor, right: torch.Tensor | None = None) -> None:
        """Add leftᵀ right (leftᵀ left without `right`) for row matrices with the same number of rows."""
        left = left.detach().to(torch.float32)
        self._pending.append((left, left if right is None else right.detach().to(torch.float32)))
        self._pending_rows += left.shape[0]
        self.rows += left.shape[0]
        if self._pending_rows >= GRAM_ROWS:
            self._flush()

    def total(self) -> torch.Tensor:
        """Σ leftᵀ right so far (float64 [K_left, K_right])."""
        self._flush()
        return self.sum

    def _flush(self) -> None:
        if not self._pending:
            return
        left = torch.cat([pair[0] for pair in self._pending])
        symmetric = all(second is first for first, second in self._pending)
        right = left if symmetric else torch.cat([pair[1] for pair in self._pending])
        for start in range(0, left.shape[0], GRAM_ROWS):  # float32 sums of at most GRAM_ROWS terms
            rows = slice(start, start + GRAM_ROWS)
            product = (left[rows].T @ right[rows]).to(torch.float64)
            self.sum = product if self.sum is None else self.sum.add_(product)
        self._pending, self._pending_rows = [], 0


class HessianAccumulator:
    """H = 2·XᵀX/n over streamed layer inputs (any shape [..., K])."""

    def __init__(self) -> None:
        self.gram = GramAccumulator()

    @property
    def tokens(self) -> int:
        return self.gram.rows

    def add(self, x: torch.Tensor) -> None:
        self.gram.add(x.reshape(-1, x.shape[-1]))

    def result(self) -> torch.Tensor:
        return (2.0 * self.gram.total() / max(self.tokens, 1)).to(torch.float32)


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
