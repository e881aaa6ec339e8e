"""Compression-aware training: a plan the pass pipeline wrote, simulated in a trainable copy of a model.

Not a pass: nothing here rewrites the IR. It is the bridge between the plans on the IR and a plain
PyTorch training loop, so training and deployment share one format and one rounding (fxc.ir.qformat),
and the trained model is lowered by the same passes as a post-training one.

    recorder = qat.PlanRecorder()                      # what the passes did, per layer (+ pruning masks)
    fxc.compile(model, passes="quantize{bits=4,group-size=32}", example_inputs=x, instruments=[recorder])
    trainable = qat.prepare(model, recorder.plan)      # or qat.uniform_plan(model, bits=4, group_size=32)
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=1e-4)
    for x, y in loader:
        loss = F.cross_entropy(trainable(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    cm = fxc.compile(qat.finish(trainable), passes="quantize{bits=4,group-size=32}", example_inputs=x)

Reads: a plan, {module path: LayerTarget}, from passes/training/qat_plan.py (`PlanRecorder` during fxc.compile,
`plan_from_graph`, `uniform_plan`; re-exported here). Writes:
a deep copy of the user's model (never the model itself) whose planned weights carry a
`FakeCompress` parametrization (torch.nn.utils.parametrize). Per weight, viewed [N, K] as in qformat:

    w = weight * mask                                    # fixed mask from the plan, or gradual_prune's
    w = clamp(w, alpha_low * min, alpha_high * max)      # per group; scales="learned" only
    scale, zero = qformat.group_scales(w)                # the RTN rule of the quantize pass
    q = qformat.quantize_with(w, scale, zero)            # the integers deployment will store
    forward (q - zero) * scale; backward straight through the rounding (STE)

A planned rank (meta.LowRank, or LayerPlan.rank_ratio) trains the weight as two factors up @ down
(LowRankFactors, SVD-initialized); finish() multiplies them back into a weight of that rank, which the
low-rank pass splits again without loss. Rank is simulated alone, not together with bits or masks.

scales="rtn": scales follow the weights by the deployment rule (no scale parameters). "learned":
per-group clipping ratios alpha = sigmoid(theta) (learnable weight clipping) get gradients through the
scale, as in LSQ. `finish` bakes mask and clip into plain float weights, so RTN in the quantize pass
picks exactly the scales and integers the forward used (tests/passes/training/test_qat.py checks this).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from fxc.ir import qformat
from fxc.passes.algorithms.low_rank_math import svd_decomposition
from fxc.passes.training.qat_plan import LayerTarget, PlanError, PlanRecorder, plan_from_graph, uniform_plan

__all__ = [
    "FakeCompress",
    "LayerTarget",
    "LowRankFactors",
    "PlanError",
    "PlanRecorder",
    "compressed_layers",
    "finish",
    "plan_from_graph",
    "prepare",
    "simulated_weights",
    "source_weight",
    "uniform_plan",
]

SCALE_MODES = ("rtn", "learned")
CLIP_INIT_LOGIT = 4.0  # sigmoid(4) ~= 0.98: start just inside the RTN range


class FakeCompress(nn.Module):
    """Parametrization of one weight: mask, optional learned clip, fake quantization (see module doc)."""

    def __init__(self, weight: torch.Tensor, target: LayerTarget, scales: str, where: str):
        super().__init__()
        self.target, self.where = target, where
        rows = weight.shape[0]
        cols = weight.numel() // rows
        self.group_size = target.group_size or cols
        if target.bits is not None and cols % self.group_size:
            raise PlanError(
                f"{where}: group size {self.group_size} does not divide the {cols} input columns; "
                "choose a group size that divides it"
            )
        mask = torch.ones(rows, cols) if target.mask is None else target.mask.to(torch.float32)
        if tuple(mask.shape) != (rows, cols):
            raise PlanError(f"{where}: mask has shape {tuple(mask.shape)}, the weight is [{rows}, {cols}]")
        self.register_buffer("mask", mask.to(weight.device))
        self.learned = scales == "learned" and target.bits is not None
        if self.learned:
            logits = torch.full((rows, cols // self.group_size), CLIP_INIT_LOGIT, device=weight.device)
            self.clip_high = nn.Parameter(logits.clone())
            self.clip_low = None if target.symmetric else nn.Parameter(logits.clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        w = self.deployable(weight)
        if self.target.bits is None:
            return w.view_as(weight).to(weight.dtype)
        grouped = w.view(w.shape[0], -1, self.group_size)
        full_range = qformat.weights_full_range(self.target.act_bits)  # as the quantize pass stores them
        scale, zero = qformat.group_scales(grouped, self.target.bits, self.target.symmetric, full_range)
        q = qformat.quantize_with(w.detach(), scale.detach(), None if zero is None else zero.detach(), self.target.bits)
        shift = 0.0 if zero is None else zero.unsqueeze(-1)
        x = grouped / scale.unsqueeze(-1)  # x - x.detach() is exactly 0: forward is exact, gradient is the STE's
        out = (q.view_as(grouped).to(torch.float32) - shift + (x - x.detach())) * scale.unsqueeze(-1)
        return out.view_as(weight).to(weight.dtype)

    def deployable(self, weight: torch.Tensor) -> torch.Tensor:
        """The float [N, K] weight deployment quantizes: masked, and clipped when scales are learned."""
        w = weight.to(torch.float32).reshape(self.mask.shape) * self.mask
        if not self.learned:
            return w
        grouped = w.view(w.shape[0], -1, self.group_size)
        if self.clip_low is None:  # symmetric: one ratio of the group's max |w|
            high = torch.sigmoid(self.clip_high) * grouped.abs().amax(dim=-1)
            low = -high
        else:  # asymmetric: ratios of the group's min and max (qformat includes 0 in the range)
            high = torch.sigmoid(self.clip_high) * grouped.amax(dim=-1).clamp(min=0)
            low = torch.sigmoid(self.clip_low) * grouped.amin(dim=-1).clamp(max=0)
        clipped = torch.minimum(torch.maximum(grouped, low.unsqueeze(-1)), high.unsqueeze(-1))
        return clipped.view_as(w)

    def integers(self, weight: torch.Tensor) -> qformat.QuantizedWeight:
        """The stored form the forward simulates (packed as the quantize pass stores it)."""
        if self.target.bits is None:
            raise PlanError(f"{self.where} is not quantized in the plan")
        with torch.no_grad():
            w = self.deployable(weight)
            return qformat.quantize_rtn(w, self.target.bits, self.group_size, self.target.symmetric)


class LowRankFactors(nn.Module):
    """First parametrization of a low-rank layer: the weight is up @ down, trained as two factors,
    initialized by truncated SVD (passes/algorithms/low_rank_math.py), so finish() gives a rank-`rank` weight
    that the low-rank pass splits again without loss."""

    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def forward(self, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        return up @ down

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        down, up = svd_decomposition(weight.detach()).factors(self.rank, weight.dtype)
        return up, down


class FakeQuantizeInput:
    """Forward pre-hook of a W8A8 layer: its input quantized to int8 per token as int8_linear does
    (qformat.quantize_activations_per_token), the gradient passed straight through."""

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x, *rest = args
        rows = x.reshape(-1, x.shape[-1])
        q, scale = qformat.quantize_activations_per_token(rows)
        fake = q.to(torch.float32) * scale + (rows - rows.detach())
        return (fake.to(x.dtype).view_as(x), *rest)


def prepare(model: nn.Module, plan: dict[str, LayerTarget], scales: str = "rtn") -> nn.Module:
    """A trainable deep copy of `model` whose planned weights are fake-compressed in every forward.
    Train it with any loop and optimizer (`trainable.parameters()` includes learned clip ratios)."""
    if scales not in SCALE_MODES:
        raise PlanError(f"scales must be one of {SCALE_MODES}, got {scales!r}")
    if not plan:
        raise PlanError("the plan is empty: no layer to compress (did the pipeline plan or rewrite any layer?)")
    trainable = copy.deepcopy(model)
    modules = dict(trainable.named_modules())
    for fqn, target in plan.items():
        module = modules.get(fqn)
        if module is not None and parametrize.is_parametrized(module, "weight"):
            raise PlanError(f"layer '{fqn}' is already parametrized; prepare the original model, not a trainable copy")
        weight = getattr(module, "weight", None) if module is not None else None
        if not isinstance(weight, nn.Parameter) or weight.dim() < 2:
            raise PlanError(
                f"plan names layer '{fqn}', but {type(model).__name__} has no module there with a 2-D+ "
                "weight parameter; build the plan from this model (same module paths)"
            )
        if target.act_bits is not None and (target.act_bits != 8 or not isinstance(module, nn.Linear)):
            raise PlanError(f"layer '{fqn}': act_bits={target.act_bits}: only nn.Linear with 8-bit inputs is simulated")
        weight.requires_grad_(True)
        if target.rank is not None:
            _check_rank(fqn, module, weight, target)
            parametrize.register_parametrization(module, "weight", LowRankFactors(target.rank))
        parametrize.register_parametrization(module, "weight", FakeCompress(weight, target, scales, fqn))
        if target.act_bits == 8:
            module.register_forward_pre_hook(FakeQuantizeInput())
    return trainable


def _check_rank(fqn: str, module: nn.Module, weight: torch.Tensor, target: LayerTarget) -> None:
    if not isinstance(module, nn.Linear):
        raise PlanError(f"layer '{fqn}': low rank is simulated for nn.Linear only, not {type(module).__name__}")
    if target.bits is not None or target.mask is not None or target.sparsity is not None:
        raise PlanError(
            f"layer '{fqn}': the plan combines rank {target.rank} with {target.describe()}; QAT simulates low "
            "rank alone (deployment would quantize or prune the two factors, which is not simulated)"
        )
    if not 1 <= target.rank <= min(weight.shape):
        raise PlanError(f"layer '{fqn}': rank {target.rank} is outside [1, {min(weight.shape)}] for its weight")


def source_weight(module: nn.Module) -> torch.Tensor:
    """The weight a layer's FakeCompress receives: the raw trained weight, or up @ down."""
    chain = module.parametrizations.weight
    if isinstance(chain[0], LowRankFactors):
        return chain[0](chain.original0, chain.original1)
    return chain.original


def compressed_layers(trainable: nn.Module) -> dict[str, tuple[nn.Module, FakeCompress]]:
    """{module path: (module, its FakeCompress)} of a model made by `prepare`."""
    found = {}
    for fqn, module in trainable.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, FakeCompress):
                    found[fqn] = (module, p)
    if not found:
        raise PlanError(
            "model has no fake-compressed weights; make it with fxc.passes.training.qat.prepare(model, plan)"
        )
    return found


def simulated_weights(trainable: nn.Module) -> dict[str, qformat.QuantizedWeight]:
    """{module path: the stored integers and scales the forward currently simulates}, quantized layers only."""
    out = {}
    for fqn, (module, fc) in compressed_layers(trainable).items():
        if fc.target.bits is not None:
            out[fqn] = fc.integers(source_weight(module))
    return out


def finish(trainable: nn.Module) -> nn.Module:
    """A plain copy of the trained model (no parametrizations) whose weights are the masked, clipped
    float weights deployment quantizes. Lower it with fxc.compile and the plan's quantize pass."""
    plain = copy.deepcopy(trainable)
    for _, (module, fc) in compressed_layers(plain).items():
        with torch.no_grad():
            source = source_weight(module)
            baked = fc.deployable(source).view_as(source).to(source.dtype)
        # parametrize.remove_parametrizations would delete the property from the Parametrized* class,
        # which a deep copy shares with `trainable`; restore the plain class on this copy only
        del module._modules["parametrizations"]
        module.__class__ = type(module).__bases__[0]
        module.register_parameter("weight", nn.Parameter(baked))
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, FakeQuantizeInput):
                del module._forward_pre_hooks[key]
    return plain
