"""Gradual magnitude pruning on a schedule (Zhu & Gupta 2017, "To prune, or not to prune") for the
trainable form that passes/training/qat.py makes. Not a pass: it runs inside a training loop.

    trainable = qat.prepare(model, qat.uniform_plan(model, bits=4, group_size=32, sparsity=0.75))
    pruner = GradualPruner(trainable, begin_step=100, end_step=1000, every=50)
    for x, y in loader:
        loss = F.cross_entropy(trainable(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        pruner.step()                                  # counts steps; updates masks when due
    cm = fxc.compile(qat.finish(trainable), passes="quantize{bits=4,group-size=32}", example_inputs=x)

Schedule (cubic): s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3 for t0 <= t <= t1, s_i before
t0 and s_f after t1. Masks are updated at t0, t0 + every, ... and at t1 (always), so each layer has
exactly round(s_f * numel) zeros from step t1 on. An update keeps a layer's largest |weight * mask|
(pruned weights stay pruned; sparsity never decreases, so a fixed mask from the plan is a floor).

Reads: each layer's LayerTarget.sparsity (or `final_sparsity` for every compressed layer). Writes:
the `mask` buffers of the layers' FakeCompress parametrizations. Unstructured sparsity only: for N:M
take the mask from the prune pass (qat.PlanRecorder) and train with it fixed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fxc.passes.training.qat import FakeCompress, PlanError, compressed_layers, source_weight


def cubic_sparsity(step: int, final: float, begin: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's sparsity at `step`: `initial` until `begin`, `final` from `end`, cubic between."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    progress = (step - begin) / (end - begin)
    return final + (initial - final) * (1.0 - progress) ** 3


class GradualPruner:
    """Raises each compressed layer's sparsity to its target along the cubic schedule.

    trainable       a model from qat.prepare
    final_sparsity  target for every compressed layer; None: each layer's plan sparsity (layers
                    without one are left dense)
    begin_step, end_step, every   schedule: mask updates at begin, begin+every, ..., end
    initial_sparsity              s_i, the sparsity at begin_step
    """

    def __init__(
        self,
        trainable: nn.Module,
        final_sparsity: float | None = None,
        begin_step: int = 0,
        end_step: int = 1000,
        every: int = 100,
        initial_sparsity: float = 0.0,
    ):
        if not 0 <= begin_step < end_step:
            raise PlanError(f"need 0 <= begin_step < end_step, got begin_step={begin_step}, end_step={end_step}")
        if every < 1:
            raise PlanError(f"every must be a positive number of steps, got {every}")
        for name, value in (("final_sparsity", final_sparsity), ("initial_sparsity", initial_sparsity)):
            if value is not None and not 0 <= value < 1:
                raise PlanError(f"{name} must be in [0, 1), got {value}")
        self.begin, self.end, self.every, self.initial = begin_step, end_step, every, initial_sparsity
        self.targets: dict[str, tuple[FakeCompress, nn.Module, float]] = {}
        for fqn, (module, fc) in compressed_layers(trainable).items():
            target = final_sparsity if final_sparsity is not None else fc.target.sparsity
            if target is None:
                continue
            if fc.target.pattern != "unstructured":
                raise PlanError(
                    f"layer '{fqn}': gradual pruning schedules unstructured sparsity, the plan says "
                    f"{fc.target.pattern}; take that mask from the prune pass (qat.PlanRecorder) and keep it fixed"
                )
            if not 0 <= target < 1:
                raise PlanError(f"layer '{fqn}': sparsity must be in [0, 1), got {target}")
            self.targets[fqn] = (fc, module, target)
        if not self.targets:
            raise PlanError("no layer has a sparsity target: pass final_sparsity or plan layers with sparsity")
        self.step_count = 0
        if self.begin == 0:
            self._update(0)

    def step(self) -> None:
        """Call once per optimizer step; updates the masks when the schedule says so."""
        self.step_count += 1
        t = self.step_count
        if t == self.end or (self.begin <= t < self.end and (t - self.begin) % self.every == 0):
            self._update(t)

    def sparsity_at(self, step: int, final: float) -> float:
        """The scheduled sparsity of a layer whose target is `final`, after the masks of `step`."""
        points = [t for t in range(self.begin, self.end, self.every) if t <= step] + (
            [self.end] if step >= self.end else []
        )
        return self.initial if not points else cubic_sparsity(points[-1], final, self.begin, self.end, self.initial)

    def _update(self, step: int) -> None:
        for fc, module, final in self.targets.values():
            sparsity = cubic_sparsity(step, final, self.begin, self.end, self.initial)
            weight = source_weight(module)
            with torch.no_grad():
                fc.mask.copy_(magnitude_mask(weight.reshape(fc.mask.shape), fc.mask, sparsity))


def magnitude_mask(weight: torch.Tensor, mask: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask zeroing the round(sparsity * numel) smallest |weight * mask| (at least the current zeros)."""
    scores = (weight.detach().to(torch.float32) * mask).abs().flatten()
    prune = round(sparsity * scores.numel())
    keep = torch.ones_like(scores)
    if prune > 0:
        keep[torch.topk(scores, prune, largest=False).indices] = 0.0
    return keep.view_as(mask) * mask


def sparsity_of(trainable: nn.Module) -> dict[str, float]:
    """{module path: fraction of the layer's weights its mask zeroes}."""
    return {fqn: 1.0 - fc.mask.mean().item() for fqn, (_, fc) in compressed_layers(trainable).items()}
