"""method-error: each layer's output error tr(ΔW H ΔWᵀ) for each candidate made the way the auto pass
will make it (an analysis).

    errors = am.get(MethodError(candidates=("w4", "2:4+w8", "r0.5+w8"), quantize_method="gptq"))
    errors["linear_3"]["w4"]        # the GPTQ int4 weight's layer-output error on the calibration data

Reads: calibration (required) through the `hessian` analysis (the dense model's input Hessians), and the
`output-metric` analysis for weighting=output.
Writes: nothing in the graph; returns {linear node name: {candidate: error}}; a candidate a layer cannot
take gets inf.
Preserves: not applicable (an analysis changes nothing); the cached result is dropped after any pass
that does not list `method-error` in PassResult.preserved.
Options: candidates, quantize-method, prune-method, low-rank-method, damp, weighting, batches, probes,
seed, layers, skip; `fxc.passmgr.registry.lookup("fxc.analyses", "method-error").help()` prints each.

Why next to `sensitivity`: that analysis measures every candidate with round-to-nearest quantization and
Wanda-style masks (passes/specs/candidates.py, on purpose independent of the passes). The auto pass carries
its plan out with GPTQ and SparseGPT, which cut those errors by different amounts per layer and per
candidate (most for per-channel int4, least for int8); planning with the RTN numbers would under-value
exactly the options GPTQ helps most. Here ΔW comes from
    quantization only        passes/algorithms/gptq.py's gptq_quantize (quantize-method=gptq) or
                             fxc.ir.qformat RTN
    N:M / unstructured (+q)  passes/algorithms/sparse_gpt.py's sparse_gpt and prune's kept-weight re-solve
                             (prune-method=sparse-gpt), else the candidate's own mask (Wanda-style
                             |W|·sqrt(diag H), or |W| for magnitude); then RTN of the quantization part
                             (what auto does for N:M+w8; GPTQ for unstructured+q)
    low rank (+q)            whitened (or plain) SVD factors as the low-rank pass makes them
                             (passes/algorithms/low_rank_math.py, one decomposition per layer), RTN factors
weighting=layer gives tr(ΔW H ΔWᵀ) (the layer's own output error); weighting=output gives tr(W ΔW H ΔWᵀ)
with the `output-metric` analysis's W (passes/analyses/output_metric.py): relative model-output error,
comparable across layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.errors import FxcError
from fxc.ir import qformat
from fxc.passes.algorithms import low_rank_math as lrm
from fxc.passes.algorithms.gptq import gptq_quantize
from fxc.passes.algorithms.gram import dampen
from fxc.passes.algorithms.mask_refine import DEFAULT_STEPS, refine_kept_weights
from fxc.passes.algorithms.prune_scores import magnitude_scores, nm_mask, unstructured_mask
from fxc.passes.algorithms.sparse_gpt import sparse_gpt
from fxc.passes.analyses.output_metric import OutputMetric
from fxc.passes.select import DEFAULT_SKIP, select_layers
from fxc.passes.specs.candidates import Candidate, parse_candidates, unfit
from fxc.passmgr.options import option
from fxc.passmgr.passbase import Analysis


@dataclass(frozen=True)
class MethodError(Analysis):
    """Layer-output error of each candidate made by GPTQ / SparseGPT / whitened SVD, as auto makes it."""

    name = "method-error"
    candidates: tuple[str, ...] = option(("w8", "w4"), "candidate specs (passes/specs/candidates.py)")
    quantize_method: str = option("gptq", "how quantization is made", choices=("rtn", "gptq"))
    prune_method: str = option("sparse-gpt", "how sparsity is made", choices=("magnitude", "wanda", "sparse-gpt"))
    low_rank_method: str = option("whitened", "how low rank is made", choices=("svd", "whitened"))
    damp: float = option(0.01, "GPTQ / SparseGPT dampening, a fraction of the mean Hessian diagonal", low=0.0)
    weighting: str = option(
        "layer", "layer: the layer's output error; output: the model's", choices=("layer", "output")
    )
    batches: int = option(2, "weighting=output: calibration batches of the output metric", low=1)
    probes: int = option(4, "weighting=output: Gaussian probes per batch", low=1)
    seed: int = option(0, "weighting=output: seed of the probes")
    layers: tuple[str, ...] = option((), "module-path patterns of layers (empty: every linear layer)")
    skip: tuple[str, ...] = option(DEFAULT_SKIP, "module-path patterns of layers to leave out")

    def compute(self, gm: torch.fx.GraphModule, am) -> dict[str, dict[str, float]]:
        am.require_calibration("method-error")
        layers = select_layers(gm, self.layers, self.skip, kinds=("linear",))
        if not layers:
            raise FxcError(f"method-error: no linear layer matches layers={list(self.layers)} skip={list(self.skip)}")
        candidates = parse_candidates(self.candidates, "method-error")
        hessians = am.get("hessian")
        metrics = {}
        if self.weighting == "output":
            metrics = am.get(
                OutputMetric(
                    layers=self.layers, skip=self.skip, batches=self.batches, probes=self.probes, seed=self.seed
                )
            )
        out: dict[str, dict[str, float]] = {}
        for layer in layers:
            weight = ir.get_tensor(gm, layer.weight).detach().to(torch.float32)
            hessian = hessians[layer.node.name]
            shared: dict = {}  # 2:4 and 2:4+w8 share one SparseGPT run, low ranks one decomposition
            out[layer.node.name] = {}
            for c in candidates:
                if unfit(c, *weight.shape):
                    out[layer.node.name][c.text] = float("inf")
                    continue
                made = self.make(c, weight, hessian, layer.fqn, shared)
                delta = (made - weight).to(torch.float64)
                left = metrics[layer.node.name].to(torch.float64) @ delta if metrics else delta
                out[layer.node.name][c.text] = float(((delta @ hessian.to(torch.float64)) * left).sum())
        return out

    def make(self, c: Candidate, weight, hessian, fqn: str, shared: dict) -> torch.Tensor:
        """The compressed weight of candidate c as the auto pass will make it (`shared`: one dict per layer)."""
        if c.rank_ratio is not None:
            if "svd" not in shared:
                whitened = self.low_rank_method == "whitened"
                shared["svd"] = (
                    lrm.whitened_decomposition(weight, dampen(hessian, self.damp, fqn))
                    if whitened
                    else lrm.svd_decomposition(weight)
                )
            down, up = shared["svd"].factors(lrm.rank_for_ratio(*weight.shape, c.rank_ratio))
            return _rtn(up, c) @ _rtn(down, c) if c.bits is not None else up @ down
        w = weight
        if c.nm or c.sparsity:
            key = (c.nm, c.sparsity)
            if key not in shared:
                shared[key] = self._prune(c, weight, hessian, fqn)
            w = shared[key]
            if c.bits is not None and (c.nm or self.quantize_method == "rtn"):
                return _rtn(w, c)
        if c.bits is None:
            return w
        if self.quantize_method == "rtn":
            return _rtn(w, c)
        q = gptq_quantize(w, hessian, c.bits, c.group_size, True, self.damp, layer=fqn)
        return qformat.dequantize(q.qweight, q.scale, q.zero_point, q.bits)

    def _prune(self, c: Candidate, weight, hessian, fqn: str) -> torch.Tensor:
        if self.prune_method == "sparse-gpt":  # with prune's default kept-weight re-solve, as auto runs it
            pruned = sparse_gpt(weight, hessian, c.sparsity or 0.0, c.nm, 128, self.damp, fqn)
            return refine_kept_weights(pruned, weight, hessian, DEFAULT_STEPS, self.damp, fqn)
        scores = magnitude_scores(weight)
        if self.prune_method == "wanda":
            scores = scores * torch.diagonal(hessian).clamp(min=0).sqrt().unsqueeze(0)
        mask = nm_mask(scores, *c.nm) if c.nm else unstructured_mask(scores, c.sparsity, per_row=True)
        return weight.masked_fill(mask, 0.0)


def _rtn(w: torch.Tensor, c: Candidate) -> torch.Tensor:
    q = qformat.quantize_rtn(w, c.bits, c.group_size, full_range=qformat.weights_full_range(c.act_bits))
    return qformat.dequantize(q.qweight, q.scale, q.zero_point, q.bits)
