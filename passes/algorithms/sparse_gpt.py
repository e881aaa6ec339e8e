"""SparseGPT (Frantar & Alistarh, 2023): OBS-style pruning with weight update, and the sequential
driver that calibrated pruning methods (wanda, sparse-gpt) share.

    new_weight = sparse_gpt(weight, hessian, sparsity=0.5, nm=None, block_size=128, damp=0.01, layer="fc1")
    prune_sequentially(gm, calibration, targets, method="sparse-gpt", options=SparseGptOptions(stages=3))

sparse_gpt walks the columns left to right in blocks. Inside a block it picks the mask from the
OBS saliency w²/[H⁻¹]ᵢᵢ² (the `sparsity` lowest of the block, or the M-N lowest of every group of M
columns per row for N:M), zeroes column i, and spreads the error (wᵢ - qᵢ)/[H⁻¹]ᵢᵢ over the
remaining columns through the upper Cholesky factor of H⁻¹ (so H⁻¹ is factored once). Dead inputs
(zero diagonal) are zeroed; dampening comes from passes/algorithms/gram.py's damped_hessian, which raises
when H cannot be inverted.

`stages` > 1 (unstructured targets) prunes gradually: sparse-gpt to FIRST_STAGE (40%) of the target
sparsity, the kept weights re-solved (passes/algorithms/mask_refine.py, STAGE_REFINE_STEPS), then in even
steps from there up to the target (stage_sparsities); each stage chooses its mask on weights already
fitted to the ones removed before, which lowers the layer error at the cost of one more sparse-gpt run
and re-solve per stage. One stage is the default.

prune_sequentially runs the calibration data segment by segment (fxc/passmgr/sequential.py): each segment's
layers see the outputs of the already-pruned segments before them; peak memory is one segment plus
the values live across it. Wanda gets its ||x|| from the same run. Without a fit or a damp from the caller
(prune's defaults), each sparse-gpt layer's fit target and Hessian shrinkage come from its calibration tokens
per input (passes/algorithms/layer_inputs.py's calibration_fit; `fits` returns each layer's choice). Where
the shrinkage reaches WANDA_MASK_SHRINK (very few tokens per input), sparse-gpt's own mask, chosen from the
inverse Hessian's diagonal and compared across a whole block of rows, rests on too few samples; the layer
takes Wanda's mask (|W|·||x|| per output row, from the Hessian's diagonal) and the kept weights are then
re-solved on the shrunk Hessian (`refine`), so with very few tokens sparse-gpt tends to Wanda instead of
overfitting them. The dense model runs beside only when some layer fits to it (layer_inputs.TwinOnDemand).
Writes the new weights with fxc.ir.set_tensor; reads nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.errors import CalibrationError
from fxc.passes.algorithms.dense_target import dense_target_weight
from fxc.passes.algorithms.gram import DampedHessian, damped_hessian, one_thread
from fxc.passes.algorithms.layer_inputs import (
    CalibrationFit,
    TwinOnDemand,
    calibration_fit,
    channel_rows,
    segment_hessians,
)
from fxc.passes.algorithms.mask_refine import DEFAULT_STEPS, refine_kept_weights
from fxc.passes.algorithms.prune_scores import apply_mask, as_matrix, nm_mask, unstructured_mask, wanda_scores
from fxc.passmgr.calibration import Calibration
from fxc.passmgr.sequential import CalibrationRunner, segments, segments_through

STAGE_REFINE_STEPS = 10  # re-solve steps between gradual stages
FIRST_STAGE = 0.4  # fraction of the target sparsity the first gradual stage prunes
DEFAULT_STAGES = 1  # what prune{method=sparse-gpt} runs unless told otherwise (more stages: better, slower)
WANDA_MASK_SHRINK = 0.5  # from this Hessian shrinkage on (one calibration token per input or fewer), Wanda's mask


@dataclass(frozen=True)
class Target:
    """One layer to prune: its fraction of zeros, or N:M (N kept of every M)."""

    layer: ir.WeightLayer
    sparsity: float
    nm: tuple[int, int] | None = None


def sparse_gpt(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None,
    block_size: int,
    damp: float,
    layer: str,
    damped: DampedHessian | None = None,
) -> torch.Tensor:
    """The pruned and error-compensated weight (same shape and dtype). `damped`: `hessian` already dampened
    and factored (passes/algorithms/gram.py's damped_hessian), when the caller has it."""
    w = as_matrix(weight).detach().to(torch.float32).clone()
    dead = torch.diagonal(hessian) == 0
    w[:, dead] = 0.0
    hinv_upper = (damped or damped_hessian(hessian, damp, layer)).inverse_cholesky_upper
    with one_thread():
        _compensate_blocks(w, hinv_upper, sparsity, nm, block_size)
    return w.to(weight.dtype).view_as(weight)


def _compensate_blocks(w, hinv_upper, sparsity, nm, block_size) -> None:
    """SparseGPT's blocked loop, updating w [N, K] in place. Each block is held transposed ([B, N]: column i
    is a contiguous row) and a column's error is its pruned entries times 1/[H⁻¹]ᵢᵢ (`scale`, zero where
    kept), so a column costs two tensor ops: its error and the rank-1 update of the columns after it. The
    pruned entries are zeroed once at the end of the block (the update leaves them at rounding level)."""
    cols = w.shape[1]
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = w[:, start:end].T.contiguous()
        u = hinv_upper[start:end, start:end]
        diag = torch.diagonal(u).unsqueeze(1)
        if nm is None:
            pruned = unstructured_mask(block**2 / diag**2, sparsity, per_row=False)
            scale = pruned / diag
        else:
            pruned, scale = torch.zeros_like(block, dtype=torch.bool), torch.zeros_like(block)
        errors = torch.empty_like(block)
        for i in range(end - start):
            if nm is not None and i % nm[1] == 0:  # the group's mask, chosen on the columns updated so far
                group = slice(i, i + nm[1])
                pruned[group] = nm_mask((block[group] ** 2 / diag[group] ** 2).T, *nm).T
                torch.div(pruned[group], diag[group], out=scale[group])
            torch.mul(block[i], scale[i], out=errors[i])
            block[i + 1 :].addr_(u[i, i + 1 :], errors[i], alpha=-1.0)
        w[:, start:end] = block.masked_fill_(pruned, 0.0).T
        w[:, end:].addmm_(errors.T, hinv_upper[start:end, end:], alpha=-1.0)


def prune_with_norms(weight: torch.Tensor, input_l2: torch.Tensor, target: Target) -> torch.Tensor:
    """Wanda: zero the lowest |W|·||x|| per output row (or per group of M)."""
    scores = wanda_scores(weight, input_l2)
    mask = nm_mask(scores, *target.nm) if target.nm else unstructured_mask(scores, target.sparsity, per_row=True)
    return apply_mask(weight, mask)


class _Norms:
    """Per input channel sum of x² of each observed layer (Wanda's ||x||², streamed)."""

    def __init__(self, nodes: set[torch.fx.Node]):
        self.nodes, self.sums = nodes, {}

    def __call__(self, node: torch.fx.Node, x: torch.Tensor) -> None:
        if node in self.nodes:
            rows = channel_rows(node, x.detach()).to(torch.float64)
            self.sums[node] = self.sums.get(node, 0) + (rows * rows).sum(0)

    def l2(self, node: torch.fx.Node) -> torch.Tensor:
        return self.sums[node].sqrt().to(torch.float32)


@dataclass(frozen=True)
class SparseGptOptions:
    """How prune_sequentially runs sparse-gpt (the prune pass's options of the same names, same defaults)."""

    block_size: int = 128
    damp: float | None = None  # None: chosen per layer from its calibration tokens (layer_inputs.calibration_fit)
    refine: int = DEFAULT_STEPS  # conjugate-gradient steps re-solving the kept weights (algorithms/mask_refine.py)
    fit: str | None = None  # each layer fitted to the dense model's stream (residual), its output (dense), or its
    # own output (layer): passes/algorithms/dense_target.py; None: chosen per layer like damp
    stages: int = DEFAULT_STAGES  # gradual pruning for unstructured targets (module docstring)


def prune_sequentially(
    gm: torch.fx.GraphModule,
    calibration: Calibration,
    targets: list[Target],
    method: str,
    options: SparseGptOptions = SparseGptOptions(),
    fits: dict[str, CalibrationFit] | None = None,
) -> dict[str, torch.Tensor]:
    """Prune `targets` segment by segment; returns {weight target: new weight} (already written). fits: a dict
    to fill with each sparse-gpt layer's CalibrationFit (layer_inputs.calibration_fit), by node name."""
    by_node = {t.layer.node: t for t in targets}
    runner = CalibrationRunner(gm, calibration)
    twin = TwinOnDemand(gm, calibration, residual=options.fit in (None, "residual"))
    widths = {t.layer.node: ir.get_tensor(gm, t.layer.weight)[0].numel() for t in targets}
    fits = {} if fits is None else fits
    written: dict[str, torch.Tensor] = {}
    for segment in segments_through(segments(gm), set(by_node)):
        chosen = [by_node[layer.node] for layer in segment.layers if layer.node in by_node]
        if chosen:
            crosses = {}
            if method == "sparse-gpt":
                tokens: dict[str, int] = {}
                stats = segment_hessians(runner, segment, tokens)
                count = max(tokens.values(), default=0)
                needed = any(
                    calibration_fit(count, k, options.fit, options.damp).fit != "layer" for k in widths.values()
                )
                crosses = twin.cross_covariances(runner, segment, needed)
            else:
                norms = _Norms({t.layer.node for t in chosen})
                runner.observe(segment, norms)
                stats = {t.layer.node.name: norms.l2(t.layer.node) for t in chosen}
            for target in chosen:
                name = target.layer.node.name
                _check_finite(stats[name], target.layer)
                weight = ir.get_tensor(gm, target.layer.weight)
                if method == "sparse-gpt":
                    fqn, h = target.layer.fqn, stats[name]
                    fit = calibration_fit(tokens[name], widths[target.layer.node], options.fit, options.damp)
                    if fit.fit != "layer" and name not in crosses:  # the dense model does not run: fits itself
                        fit = dataclasses.replace(fit, fit="layer", note="no dense model ran for it")
                    fits[name] = fit
                    damped = damped_hessian(h, fit.damp, fqn, fit.shrink)  # factored once for every step below
                    goal = weight
                    if fit.fit != "layer":
                        ridge = damped.scaled(1.0 / (1.0 - fit.shrink))  # a ridge toward W0 (layer_inputs)
                        goal = dense_target_weight(weight, h, crosses[name], fit.damp, fqn, ridge)
                    if fit.shrink >= WANDA_MASK_SHRINK:  # too few tokens for sparse-gpt's own mask: Wanda's
                        fits[name] = dataclasses.replace(fit, note="Wanda's mask")
                        new = prune_with_norms(goal, torch.diagonal(h).clamp_min(0.0).sqrt(), target)
                    else:
                        new = _sparse_gpt_in_stages(goal, h, damped, target, options, fit.damp)
                    new = refine_kept_weights(new, goal, h, options.refine, fit.damp, fqn, damped)
                else:
                    new = prune_with_norms(weight, stats[name], target)
                ir.set_tensor(gm, target.layer.weight, new)
                written[target.layer.weight] = new
        runner.advance(segment)
        twin.advance(segment)
    return written


def stage_sparsities(sparsity: float, stages: int) -> list[float]:
    """The sparsity after each gradual stage: FIRST_STAGE of the target first, then even steps up to it
    (50% in 3 stages: 0.2, 0.35, 0.5; a larger first step than even thirds)."""
    if stages <= 1:
        return [sparsity]
    return [sparsity * (FIRST_STAGE + (1.0 - FIRST_STAGE) * k / (stages - 1)) for k in range(stages)]


def _sparse_gpt_in_stages(
    goal: torch.Tensor,
    hessian: torch.Tensor,
    damped: DampedHessian,
    target: Target,
    options: SparseGptOptions,
    damp: float,
) -> torch.Tensor:
    """sparse-gpt to the target's sparsity, through options.stages gradual steps for unstructured targets."""
    fqn, weight = target.layer.fqn, goal
    for sparsity in stage_sparsities(target.sparsity, 1 if target.nm else options.stages)[:-1]:
        weight = sparse_gpt(weight, hessian, sparsity, None, options.block_size, damp, fqn, damped)
        weight = refine_kept_weights(weight, goal, hessian, STAGE_REFINE_STEPS, damp, fqn, damped)
    return sparse_gpt(weight, hessian, target.sparsity, target.nm, options.block_size, damp, fqn, damped)


def _check_finite(stat: torch.Tensor, layer: ir.WeightLayer) -> None:
    if not torch.isfinite(stat).all():
        raise CalibrationError(
            f"the calibration activations reaching layer {layer.fqn} contain NaN or Inf; clean the calibration "
            "data (or check the layers before it)"
        )
