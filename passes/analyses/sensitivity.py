"""sensitivity: how much each layer, compressed alone in each candidate way, moves the model (an analysis).

    s = am.get(Sensitivity(candidates=("w8", "w4g128", "2:4"), measure="layer"))
    s.error["linear_3"]["w4g128"]       # the measured error of that layer under that candidate
    s.trace["linear_3"]                 # Hutchinson loss-Hessian trace per parameter, or None
    s.score("linear_3", "w4g128")       # what planners minimize

Reads: calibration (required); the `hessian` analysis for linear layers (candidates see H, so
sparsity is Wanda-like and low rank is whitened); for measure=hutchinson the loss function given to
fxc.compile(..., loss_fn=...).
Writes: nothing in the graph (weights swapped for a measurement are restored before it returns, also on
error); returns a SensitivityResult.
Preserves: not applicable (an analysis changes nothing); the cached result is dropped after any pass
that does not list `sensitivity` in PassResult.preserved.
Options:
    candidates  spec strings (passes/specs/candidates.py)
    measure     layer:      exact layer-output error tr(ΔW H ΔWᵀ) from the input Hessian; cheap, linear only
                model:      relative model-output error ||y' - y||² / ||y||² on the first `batches`
                            calibration batches, one layer compressed at a time (linear and conv2d)
                hutchinson: loss-Hessian trace per layer by Hutchinson's estimator (Rademacher probes,
                            `samples` per batch); error = ½·trace·||ΔW||², the second-order loss increase
    layers, skip  which layers (passes/select.py)
    batches, samples, seed
    quantizer   rtn | gptq: weight-only candidates rounded as quantize{method=gptq} would round them
                (needs the layer's Hessian: linear layers; others stay rtn)

Score (HAWQ-v2): trace·||ΔW||² when a trace is known, else the measured error. `.trace` is the
average trace Tr(H_l)/n_l over the layer's n_l weights. A (layer, candidate) pair the candidate does
not support (`Candidate.supports`: 2:4 on 30 input columns, int4 on an odd input width, a group size
that does not divide it) is skipped, never applied: it scores inf, so a planner minimizing scores never
picks it, and its reason is in `.infeasible`. A layer that supports none of the candidates is an
FxcError naming the layer, its shape and each candidate's reason (checked before anything is measured).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx
import torch.utils._pytree as pytree

from fxc import ir
from fxc.errors import CalibrationError, FxcError
from fxc.passes.select import DEFAULT_SKIP, select_layers
from fxc.passes.specs.candidates import QUANTIZERS, Candidate, parse_candidates
from fxc.passmgr.options import option
from fxc.passmgr.passbase import Analysis

MEASURES = ("layer", "model", "hutchinson")


@dataclass
class SensitivityResult:
    measure: str
    candidates: tuple[str, ...]
    error: dict[str, dict[str, float]] = field(default_factory=dict)
    weight_change: dict[str, dict[str, float]] = field(default_factory=dict)  # ||ΔW||²
    trace: dict[str, float | None] = field(default_factory=dict)
    infeasible: dict[str, dict[str, str]] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)  # weights per layer
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    fqn: dict[str, str] = field(default_factory=dict)  # node name -> module path

    @property
    def layers(self) -> list[str]:
        return list(self.error)

    def score(self, layer: str, candidate: str) -> float:
        if layer not in self.error:
            raise KeyError(f"no sensitivity for layer {layer!r}; measured: {', '.join(self.error) or 'none'}")
        if candidate not in self.error[layer]:
            raise KeyError(f"candidate {candidate!r} was not measured; measured: {', '.join(self.candidates)}")
        if candidate in self.infeasible.get(layer, {}):
            return float("inf")
        trace = self.trace.get(layer)
        return trace * self.weight_change[layer][candidate] if trace is not None else self.error[layer][candidate]

    def table(self) -> str:
        head = ["layer", *self.candidates]
        rows = [[self.fqn.get(n, n), *(f"{self.score(n, c):.3g}" for c in self.candidates)] for n in self.error]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in [head, *rows])


@dataclass(frozen=True)
class Sensitivity(Analysis):
    """Per-layer output error of each candidate compression, alone; optionally HAWQ traces."""

    name = "sensitivity"
    candidates: tuple[str, ...] = option(("w8", "w4g128", "s0.5", "2:4"), "candidate specs to measure per layer")
    measure: str = option("layer", "how the error is measured", choices=MEASURES)
    layers: tuple[str, ...] = option((), "module-path patterns of layers to measure (empty: all)")
    skip: tuple[str, ...] = option(DEFAULT_SKIP, "module-path patterns of layers to leave out")
    batches: int = option(4, "calibration batches used by measure=model and measure=hutchinson", low=1)
    samples: int = option(8, "Hutchinson probe vectors per batch", low=1)
    seed: int = option(0, "seed of the Hutchinson probes")
    quantizer: str = option(
        "rtn", "how weight-only candidates are rounded: rtn, or gptq (as quantize{method=gptq})", choices=QUANTIZERS
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.candidates:
            from fxc.errors import OptionError

            raise OptionError("sensitivity: option 'candidates' is empty; give at least one spec such as w8")
        parse_candidates(self.candidates, "sensitivity")

    def compute(self, gm: torch.fx.GraphModule, am) -> SensitivityResult:
        calibration = am.require_calibration(f"sensitivity{{measure={self.measure}}}")
        kinds = ("linear",) if self.measure == "layer" else ("linear", "conv2d")
        chosen = select_layers(gm, self.layers, self.skip, kinds)
        if not chosen:
            raise FxcError(
                f"sensitivity: no {'/'.join(kinds)} layer matches layers={list(self.layers)} "
                f"skip={list(self.skip)}; widen 'layers' or narrow 'skip'"
            )
        if self.measure == "hutchinson" and am.loss_fn is None:
            raise FxcError(
                "sensitivity{measure=hutchinson} needs a loss: pass loss_fn=lambda outputs, batch: ... "
                "to fxc.compile, or use measure=layer / measure=model"
            )
        candidates = parse_candidates(self.candidates, "sensitivity")
        _check_supported(gm, chosen, candidates)
        batches = list(calibration)[: self.batches]
        _check_finite(batches)
        hessians = am.get("hessian") if any(layer.kind == "linear" for layer in chosen) else {}
        result = SensitivityResult(self.measure, tuple(self.candidates))
        traces = (
            _hutchinson_traces(gm, am, chosen, batches, self.samples, self.seed) if self.measure == "hutchinson" else {}
        )
        reference = model_outputs(am, batches) if self.measure == "model" else None
        for layer in chosen:
            name = layer.node.name
            weight = ir.get_tensor(gm, layer.weight)
            hessian = hessians.get(name)
            result.fqn[name], result.params[name] = layer.fqn, weight.numel()
            result.shapes[name] = tuple(weight.shape)
            result.trace[name] = traces.get(name)
            result.error[name], result.weight_change[name], result.infeasible[name] = {}, {}, {}
            for candidate in candidates:
                self._measure_one(gm, am, layer, weight, hessian, candidate, batches, reference, result)
        return result

    def _measure_one(self, gm, am, layer, weight, hessian, candidate: Candidate, batches, reference, result) -> None:
        name, text = layer.node.name, candidate.text
        if not candidate.supports(tuple(weight.shape)):  # skipped: apply would refuse it
            result.error[name][text] = result.weight_change[name][text] = float("inf")
            result.infeasible[name][text] = candidate.problem(tuple(weight.shape))
            return
        compressed = candidate.apply(weight, hessian, self.quantizer)
        delta = (compressed - weight).to(torch.float64).reshape(weight.shape[0], -1)
        result.weight_change[name][text] = float((delta * delta).sum())
        if self.measure == "layer":
            result.error[name][text] = float(((delta @ hessian.to(torch.float64)) * delta).sum())
        elif self.measure == "hutchinson":
            result.error[name][text] = 0.5 * result.trace[name] * result.weight_change[name][text]
        else:
            ir.set_tensor(gm, layer.weight, compressed)
            try:
                result.error[name][text] = relative_squared_error(model_outputs(am, batches), reference)
            finally:
                ir.set_tensor(gm, layer.weight, weight)


def _check_supported(gm, chosen, candidates: tuple[Candidate, ...]) -> None:
    """Every layer must support at least one candidate; otherwise name the layer and each reason."""
    for layer in chosen:
        shape = tuple(ir.get_tensor(gm, layer.weight).shape)
        if not any(c.supports(shape) for c in candidates):
            reasons = "; ".join(c.problem(shape) for c in candidates)
            raise FxcError(
                f"sensitivity: layer {layer.fqn} (node {layer.node.name}, weight {list(shape)}) supports none of "
                f"the candidates ({reasons}); add one it supports (e.g. w8) to option 'candidates' or leave the "
                f'layer out with skip=["{layer.fqn}"]'
            )


def _check_finite(batches) -> None:
    for index, batch in enumerate(batches):
        for leaf in pytree.tree_leaves(batch):
            if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and not torch.isfinite(leaf).all():
                raise CalibrationError(
                    f"sensitivity: calibration batch {index} contains NaN or Inf; clean the calibration data"
                )


def model_outputs(am, batches) -> list[torch.Tensor]:
    out = []
    for args, kwargs in batches:
        leaves = [t for t in pytree.tree_leaves(am.run_model(args, kwargs)) if isinstance(t, torch.Tensor)]
        out.append(torch.cat([t.detach().reshape(-1).to(torch.float64) for t in leaves if t.is_floating_point()]))
    return out


def relative_squared_error(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """Σ ||o - r||² / Σ ||r||² over the batches (the squared error's share of the reference's energy; the raw
    squared error when the reference is zero). Not fxc.passmgr.instruments.relative_error, which is the
    largest max|o - r| / max|r| of any output."""
    num = sum(float(((o - r) ** 2).sum()) for o, r in zip(outputs, reference))
    den = sum(float((r**2).sum()) for r in reference)
    return num / den if den > 0 else num


def _hutchinson_traces(gm, am, chosen, batches, samples: int, seed: int) -> dict[str, float]:
    """Tr(∂²loss/∂W²)/n per layer: mean over batches and Rademacher probes v of vᵀ(Hv), by double backprop."""
    weights = [ir.get_tensor(gm, layer.weight) for layer in chosen]
    generator = torch.Generator().manual_seed(seed)
    totals = [0.0] * len(chosen)
    flags = [w.requires_grad for w in weights]
    try:
        for w in weights:
            w.requires_grad_(True)
        for args, kwargs in batches:
            with torch.enable_grad():
                loss = am.loss_fn(gm(*args, **kwargs), (args, kwargs))
                if not (isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad):
                    raise FxcError("sensitivity: loss_fn must return a scalar tensor that depends on the model output")
                grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
                for _ in range(samples):
                    probes = [torch.randint(0, 2, w.shape, generator=generator).to(w.dtype) * 2 - 1 for w in weights]
                    live = [
                        (i, g, v) for i, (g, v) in enumerate(zip(grads, probes)) if g is not None and g.requires_grad
                    ]
                    hvs = torch.autograd.grad(
                        [g for _, g, _ in live],
                        [weights[i] for i, _, _ in live],
                        grad_outputs=[v for _, _, v in live],
                        retain_graph=True,
                        allow_unused=True,
                    )
                    for (i, _, v), hv in zip(live, hvs):
                        if hv is not None:
                            totals[i] += float((v * hv).sum())
    finally:
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
    count = len(batches) * samples
    return {layer.node.name: totals[i] / count / weights[i].numel() for i, layer in enumerate(chosen)}
