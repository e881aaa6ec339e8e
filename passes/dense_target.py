"""Dense-target calibration for layer-by-layer compression (sparse-gpt, gptq): fit each layer to what the
*uncompressed* model computes there, not to its own output on the compressed model's inputs.

Layer by layer, sparse-gpt and gptq choose W for min ||W X_c - W0 X_c||², X_c the inputs the model
compressed so far gives the layer. With target=dense they fit min ||W X_c - W0 X_d||², X_d the inputs the
dense model gives it, so each layer also absorbs the error the layers before it left. With
H = 2 X_cᵀX_c / n and C = 2 X_dᵀX_c / n,

    ||W X_c - W0 X_d||² = tr((W - W̃) H (W - W̃)ᵀ) + const,   W̃ = W0 C H⁻¹ = W0 + W0 (C - H) H⁻¹,

so the methods run unchanged on the target weight W̃ (W̃ = W0 exactly where the inputs agree, e.g. the first
layer; H is dampened as the method dampens it). This is the asymmetric calibration of GPTAQ (Li et al., 2025).
GPTQ and sparse-gpt use it by default (SmolLM2 W4 g64: 20.39 perplexity vs 22.83 with fit=layer at 128 x 512
calibration, 23.62 vs 23.85 at 16 x 512; 50% sparse-gpt: 28.60 vs 31.65 at 128 x 512, but 41.10 vs 37.82 at
16 x 512: fewer tokens than the fit needs).

`DenseTwin` runs the dense model beside the compressed one: a copy of the graph with the original weights,
cut into the same segments and advanced in step, on the same calibration batches. Reads the graph and the
calibration; writes nothing (the caller writes the compressed weights).
"""

from __future__ import annotations

import copy

import torch
import torch.fx

from fxc.calibration import Calibration
from fxc.passes.hessian import DampedHessian, GramAccumulator, damped_hessian
from fxc.progress import SILENT
from fxc.sequential import CalibrationRunner, Segment, segments

TARGETS = ("layer", "dense")


class DenseTwin:
    """The uncompressed model, segment by segment beside a CalibrationRunner of the compressed one."""

    def __init__(self, gm: torch.fx.GraphModule, calibration: Calibration):
        self.gm = copy.deepcopy(gm)  # the original weights: the compressed graph's change as passes write
        self.runner = CalibrationRunner(self.gm, calibration)
        self.runner.progress = SILENT  # the compressed model's runner reports the segments
        self.segments = {segment.index: segment for segment in segments(self.gm)}
        self.nodes = {node.name: node for node in self.gm.graph.nodes}

    def cross_covariances(self, runner: CalibrationRunner, segment: Segment) -> dict[str, torch.Tensor]:
        """{linear node name: C = 2 X_dᵀX_c / n} (float64) for the segment's linear layers, from the inputs
        the compressed (runner) and the dense model give them on every batch."""
        linears = [layer.node for layer in segment.layers if layer.kind == "linear"]
        if not linears:  # conv layers keep the layer-wise fit
            return {}
        sources = list(dict.fromkeys(node.args[0] for node in linears))
        twins = [self.nodes[source.name] for source in sources]
        grams = [GramAccumulator() for _ in sources]
        for compressed, dense in zip(runner.values(sources), self.runner.values(twins)):
            for gram, xc, xd in zip(grams, compressed, dense):
                gram.add(xd.reshape(-1, xd.shape[-1]), xc.reshape(-1, xc.shape[-1]))
        by_source = {source: 2.0 * gram.total() / max(gram.rows, 1) for source, gram in zip(sources, grams)}
        return {node.name: by_source[node.args[0]] for node in linears}

    def advance(self, segment: Segment) -> None:
        """Run the dense model's copy of `segment` on every batch (call after the compressed one's)."""
        self.runner.advance(self.segments[segment.index])


def dense_target_weight(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    cross: torch.Tensor,
    damp: float,
    layer: str,
    damped: DampedHessian | None = None,
) -> torch.Tensor:
    """W̃ = W0 + W0 (C - H) (H + damp)⁻¹ for a linear weight [N, K]: the weight whose layer-wise fit on the
    compressed inputs is the dense model's output. Same shape and dtype as `weight`. `damped`: `hessian`
    already dampened and factored, when the caller has it."""
    damped = damped or damped_hessian(hessian, damp, layer)
    w0 = weight.detach().to(torch.float64)
    difference = cross.to(torch.float64) - hessian.to(torch.float64)
    correction = damped.solve((w0 @ difference).T).T  # W0 (C - H) H⁻¹ (H symmetric)
    return (w0 + correction).to(weight.dtype)
