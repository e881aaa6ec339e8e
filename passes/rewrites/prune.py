"""prune: set weights to zero (unstructured, N:M) or remove whole channels or attention heads (structured).

    Prune(method="wanda", sparsity=0.5)                          prune{method=wanda,sparsity=0.5}
    Prune(method="sparse-gpt", pattern="2:4", block_size=64)     prune{method=sparse-gpt,pattern=2:4,block-size=64}
    Prune(method="wanda", allocation="owl")                      per-layer sparsity, outlier-weighted (OWL)
    Prune(pattern="channel", sparsity=0.25)                      remove 25% of MLP hidden channels / conv filters
    Prune(method="wanda", pattern="head", sparsity=0.25)         remove 25% of each attention's heads

Reads: calibration (method=wanda or sparse-gpt, allocation=owl or sensitivity); the `act-stats` analysis
(allocation=owl; wanda with pattern=channel or head); the `sensitivity` and `hessian` analyses
(allocation=sensitivity); meta.LayerPlan (unstructured / N:M: a layer's planned sparsity and pattern
override the options, planned sparsity 0 leaves it dense).
Writes: new weights and meta.Sparsity(pattern, fraction zero, method) on each pruned layer; with
lower=true, N:M linears become torch.ops.fxc.sparse_nm_linear (passes/rewrites/lower_sparse.py). The
structured patterns shrink tensors instead (passes/prune/channels.py, passes/prune/heads.py).
Preserves: nothing. Every option and every layer's shape is checked before any weight changes, and a
failure part-way (NaN activations) puts the original weights back: the model is left untouched.
Options: method, sparsity, pattern, allocation, spread, outlier-threshold, block-size, damp, refine, fit,
stages, lower, layers, skip; `fxc.passmgr.registry.lookup("fxc.passes", "prune").help()` prints each.

Methods: magnitude (|W|, per layer); wanda (|W|·||x|| per output row, Sun et al. 2023); sparse-gpt (OBS
with weight update, passes/algorithms/sparse_gpt.py). sparse-gpt's options: refine=N re-solves the kept
weights for the layer's output error by N conjugate-gradient steps (passes/algorithms/mask_refine.py);
fit chooses what each layer is fitted to (passes/algorithms/dense_target.py): residual, the
dense model's output on the compressed model's inputs, a layer adding into a residual stream also making
up the stream's drift; dense, the dense layer's output alone; layer, the layer's own output on its current
inputs (classic SparseGPT). Without `fit` / `damp` (the defaults), each layer's fit and the shrinkage of its
Hessian follow its calibration tokens per input (passes/algorithms/layer_inputs.py's calibration_fit:
residual with enough tokens, else layer on a Hessian shrunk toward its diagonal, with Wanda's mask when the
tokens are very few), so a small calibration set does not overfit; the pass summary says which fit ran and
why. stages=N prunes unstructured targets gradually in N steps (closer layer fits, more time). wanda and
sparse-gpt calibrate layer by layer (fxc/passmgr/sequential.py): each layer sees the output of the
already-pruned layers before it.
Patterns: unstructured; N:M = N weights kept of every M input columns (sparsity is then 1-N/M and
the `sparsity` option is not used); channel: structured, passes/prune/channels.py (MLP hidden
channels, conv filters); head: structured, passes/prune/heads.py (whole attention heads: q/k/v rows,
o_proj columns, the head counts in view/reshape/expand; GQA removes query heads evenly per kv group).
Per-layer sparsity (unstructured): allocation=uniform, owl (layers with more Wanda-score outliers
keep more weights) or sensitivity (layers whose output error at the target sparsity is larger keep
more), spread over sparsity ± spread with the parameter-weighted mean kept at `sparsity`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
import torch.utils._pytree as pytree

from fxc import ir
from fxc.errors import CalibrationError, NodeError, OptionError
from fxc.ir import meta
from fxc.passes.algorithms.dense_target import TARGETS
from fxc.passes.algorithms.layer_inputs import CalibrationFit, describe_fits
from fxc.passes.algorithms.mask_refine import DEFAULT_STEPS
from fxc.passes.algorithms.prune_scores import apply_mask, magnitude_scores, nm_mask, unstructured_mask
from fxc.passes.algorithms.sparse_gpt import DEFAULT_STAGES, SparseGptOptions, Target, prune_sequentially
from fxc.passes.rewrites.lower_sparse import lower_nm_layer
from fxc.passes.select import DEFAULT_SKIP, select_layers
from fxc.passes.specs.prune_patterns import parse_pattern
from fxc.passmgr.options import option
from fxc.passmgr.passbase import Pass, PassResult

METHODS = ("magnitude", "wanda", "sparse-gpt")
ALLOCATIONS = ("uniform", "owl", "sensitivity")


@dataclass(frozen=True)
class Prune(Pass):
    """Zero weights (unstructured / N:M) or remove whole channels or attention heads (structured)."""

    name = "prune"
    method: str = option("magnitude", "how weights are scored", choices=METHODS)
    sparsity: float = option(0.5, "fraction of weights (or channels, heads) removed", low=0.0, high=1.0, high_open=True)
    pattern: str = option("unstructured", "unstructured, N:M (2:4, 4:8: N kept of every M), channel or head")
    allocation: str = option("uniform", "per-layer sparsity (unstructured only)", choices=ALLOCATIONS)
    spread: float = option(0.08, "owl/sensitivity: layer sparsities range over sparsity ± spread", low=0.0, high=0.5)
    outlier_threshold: float = option(5.0, "owl: outlier = Wanda score above this x the layer mean", low=1.0)
    block_size: int = option(128, "sparse-gpt: columns per block (a multiple of M for N:M)", low=1)
    damp: float | None = option(
        None,
        "sparse-gpt: dampening added to diag(H), times its mean; none: 0.01, with H shrunk toward its diagonal the "
        "more the fewer calibration tokens each input channel has (a number: exactly that, no shrinkage)",
        low=0.0,
    )
    refine: int | None = option(
        None,
        f"sparse-gpt: conjugate-gradient steps re-solving the kept weights for the layer's output error "
        f"(default {DEFAULT_STEPS}; 0: off)",
        low=0,
    )
    fit: str | None = option(
        None,
        "sparse-gpt: fit each layer to the dense model on the compressed model's inputs, layers adding into a "
        "residual stream also making up its drift (residual; runs the dense model beside), to the dense layer's "
        "output alone (dense), or to its own output there (layer); none: per layer from its calibration tokens "
        "per input, residual with enough of them, else layer (the pass summary says which ran)",
        choices=(None, *TARGETS),
    )
    stages: int | None = option(
        None,
        f"sparse-gpt, unstructured: prune gradually in this many steps, the kept weights re-solved between them "
        f"(default {DEFAULT_STAGES}; 1: one step)",
        low=1,
    )
    lower: bool = option(False, "lower N:M linears to torch.ops.fxc.sparse_nm_linear")
    layers: tuple[str, ...] = option((), "module-path patterns of layers to prune (empty: all)")
    skip: tuple[str, ...] = option(DEFAULT_SKIP, "module-path patterns of layers to leave dense")

    def __post_init__(self) -> None:
        super().__post_init__()
        kind, nm = parse_pattern(self.pattern)
        if kind in ("channel", "head") and self.method == "sparse-gpt":
            raise OptionError(
                f"prune: option 'method'=sparse-gpt prunes single weights; for pattern={kind} use magnitude or wanda"
            )
        if self.allocation != "uniform" and kind != "unstructured":
            raise OptionError(f"prune: option 'allocation'={self.allocation} applies to pattern=unstructured only")
        if nm and self.method == "sparse-gpt" and self.block_size % nm[1]:
            raise OptionError(
                f"prune: option 'block-size' ({self.block_size}) must be a multiple of M={nm[1]} "
                f"for pattern={self.pattern}"
            )
        method, sparse_gpt, use = self.method, self.method == "sparse-gpt", "use method=sparse-gpt, or "
        only_with = {  # option -> (whether it applies here, why it does not, the fix besides dropping it)
            "refine": (
                sparse_gpt,
                f"re-solves sparse-gpt's kept weights; method={method} keeps the original values",
                use,
            ),
            "stages": (
                sparse_gpt and kind == "unstructured",
                f"prunes gradually with sparse-gpt, pattern=unstructured; here method={method}, pattern={self.pattern}",
                "",
            ),
            "fit": (
                sparse_gpt,
                f"chooses what sparse-gpt's weight update fits; method={method} updates no weights",
                use,
            ),
        }
        for name, (applies, why, fix) in only_with.items():
            if getattr(self, name) is not None and not applies:
                raise OptionError(f"prune: option '{name}' {why} ({fix}drop option '{name}')")
        if self.lower and not nm:
            raise OptionError("prune: option 'lower' lowers N:M weights only; set pattern=2:4 (or another N:M)")

    def run(self, gm: torch.fx.GraphModule, am) -> PassResult:
        kind, _ = parse_pattern(self.pattern)
        if kind == "channel":
            from fxc.passes.prune.channels import prune_channels

            return prune_channels(gm, am, self)
        if kind == "head":
            from fxc.passes.prune.heads import prune_heads

            return prune_heads(gm, am, self)
        targets = self._targets(gm, am)
        if not targets:
            return PassResult(False, summary="no layer to prune")
        originals = {t.layer.weight: ir.get_tensor(gm, t.layer.weight) for t in targets}
        fits: dict[str, CalibrationFit] = {}  # sparse-gpt: what each layer fitted, and why (the summary says)
        try:
            if self.method == "magnitude":
                for t in am.progress.each(targets, name=lambda t: t.layer.fqn):  # one progress tick per layer
                    ir.set_tensor(gm, t.layer.weight, _magnitude(originals[t.layer.weight], t))
            else:
                calibration = self._calibration(am)
                given = {"refine": self.refine, "stages": self.stages}  # None: the default
                options = SparseGptOptions(
                    block_size=self.block_size,
                    damp=self.damp,
                    fit=self.fit,
                    **{k: v for k, v in given.items() if v is not None},
                )
                prune_sequentially(gm, calibration, targets, self.method, options, fits)
        except BaseException:
            for weight, tensor in originals.items():
                ir.set_tensor(gm, weight, tensor)
            raise
        zeros = total = 0
        for t in targets:
            weight = ir.get_tensor(gm, t.layer.weight)
            fraction = (weight == 0).sum().item() / weight.numel()
            zeros, total = zeros + fraction * weight.numel(), total + weight.numel()
            pattern = f"{t.nm[0]}:{t.nm[1]}" if t.nm else "unstructured"
            meta.put(t.layer.node, meta.Sparsity(pattern, fraction, self.method))
        lowered = sum(lower_nm_layer(gm, t.layer, *t.nm) is not None for t in targets if t.nm) if self.lower else 0
        if lowered:
            ir.remove_unused_tensors(gm)
            ir.refresh_meta(gm)
        summary = f"pruned {len(targets)} layers to {zeros / total:.1%} zeros ({self.method})" + describe_fits(fits)
        return PassResult(True, summary=summary + (f", {lowered} lowered to sparse_nm_linear" if lowered else ""))

    def wanda_stats(self, am):
        """The `act-stats` analysis for method=wanda (calibration required), else None: the structured
        patterns' (channel, head) activation norms, read once their groups are found."""
        if self.method != "wanda":
            return None
        am.require_calibration(f"prune{{method=wanda,pattern={self.pattern}}}")
        return am.get("act-stats")

    # -- what to prune ---------------------------------------------------------------------------------------

    def _targets(self, gm: torch.fx.GraphModule, am) -> list[Target]:
        """Every selected layer with its sparsity/pattern, checked against its shape (nothing mutated)."""
        kinds = ("linear",) if self.method == "sparse-gpt" else ("linear", "conv2d")
        layers = select_layers(gm, self.layers, self.skip, kinds)
        if self.layers and not layers:
            raise OptionError(f"prune: option 'layers'={list(self.layers)} matches no {'/'.join(kinds)} layer")
        _, default_nm = parse_pattern(self.pattern)
        allocated = self._allocate(gm, am, layers) if self.allocation != "uniform" else {}
        targets = []
        for layer in layers:
            sparsity, nm = allocated.get(layer.node.name, self.sparsity), default_nm
            plan = meta.get(layer.node, meta.LayerPlan)
            if plan is not None and plan.sparsity is not None:
                sparsity, nm = self._planned(layer, plan)
            if sparsity == 0.0 and nm is None:
                continue
            columns = ir.get_tensor(gm, layer.weight)[0].numel()
            if nm and columns % nm[1]:
                raise NodeError(
                    layer.node,
                    f"prune: pattern={nm[0]}:{nm[1]} needs the input dimension of layer {layer.fqn} ({columns}) to "
                    f"be divisible by M={nm[1]}; leave it out with skip=[...,{layer.fqn}] or use another pattern",
                )
            targets.append(Target(layer, 1.0 - nm[0] / nm[1] if nm else sparsity, nm))
        return targets

    def _planned(self, layer: ir.WeightLayer, plan: meta.LayerPlan) -> tuple[float, tuple[int, int] | None]:
        kind, nm = parse_pattern(plan.pattern or "unstructured", f"prune (plan of layer {layer.fqn})")
        if kind != "unstructured" and not nm:
            raise NodeError(
                layer.node,
                f"prune: the plan of layer {layer.fqn} asks for pattern={plan.pattern}, "
                "which prune applies to whole models only (prune{pattern=channel})",
            )
        if not 0.0 <= plan.sparsity < 1.0:
            raise NodeError(
                layer.node, f"prune: the plan of layer {layer.fqn} has sparsity {plan.sparsity}, outside [0, 1)"
            )
        return plan.sparsity, nm

    def _calibration(self, am):
        calibration = am.require_calibration(f"prune{{method={self.method}}}")
        for index, batch in enumerate(calibration):
            for leaf in pytree.tree_leaves(batch):
                if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and not torch.isfinite(leaf).all():
                    raise CalibrationError(
                        f"prune: calibration batch {index} contains NaN or Inf; clean the calibration data"
                    )
        return calibration

    def _allocate(self, gm: torch.fx.GraphModule, am, layers: list[ir.WeightLayer]) -> dict[str, float]:
        """Per-layer sparsity around self.sparsity: higher importance -> fewer zeros (OWL's mapping)."""
        self._calibration(am)
        importance: dict[str, float] = {}
        if self.allocation == "owl":
            stats = am.get("act-stats")
            for layer in layers:
                scores = magnitude_scores(ir.get_tensor(gm, layer.weight))
                l2 = stats[layer.node.name].l2
                scores = scores * (l2.repeat_interleave(scores.shape[1] // l2.numel()).unsqueeze(0))
                importance[layer.node.name] = (scores > self.outlier_threshold * scores.mean()).float().mean().item()
        else:
            from fxc.passes.analyses.sensitivity import Sensitivity

            linear = [layer for layer in layers if layer.kind == "linear"]
            if len(linear) != len(layers):
                raise OptionError("prune: option 'allocation'=sensitivity measures linear layers only; skip convs")
            result = am.get(
                Sensitivity(candidates=(f"s{self.sparsity}",), measure="layer", layers=self.layers, skip=self.skip)
            )
            hessians = am.get("hessian")
            for layer in layers:
                w = ir.get_tensor(gm, layer.weight).double()
                energy = float(((w @ hessians[layer.node.name].double()) * w).sum())
                importance[layer.node.name] = result.error[layer.node.name][f"s{self.sparsity}"] / max(energy, 1e-30)
        sizes = {layer.node.name: ir.get_tensor(gm, layer.weight).numel() for layer in layers}
        return spread_sparsity(importance, sizes, self.sparsity, self.spread)


def spread_sparsity(
    importance: dict[str, float], sizes: dict[str, int], target: float, spread: float
) -> dict[str, float]:
    """Map importance linearly onto target+spread (least important) .. target-spread (most), then shift so
    the parameter-weighted mean is `target`; clipped to [0, 0.99]."""
    values = torch.tensor(list(importance.values()), dtype=torch.float64)
    span = (values.max() - values.min()).item()
    if span == 0.0:
        return {name: target for name in importance}
    unit = (values - values.min()) / span  # 0 least .. 1 most important
    sparsity = target + spread - 2 * spread * unit
    weights = torch.tensor([sizes[n] for n in importance], dtype=torch.float64)
    sparsity = sparsity - ((sparsity * weights).sum() / weights.sum() - target)
    return {name: float(s) for name, s in zip(importance, sparsity.clamp(0.0, 0.99))}


def _magnitude(weight: torch.Tensor, target: Target) -> torch.Tensor:
    scores = magnitude_scores(weight)
    mask = nm_mask(scores, *target.nm) if target.nm else unstructured_mask(scores, target.sparsity, per_row=False)
    return apply_mask(weight, mask)
