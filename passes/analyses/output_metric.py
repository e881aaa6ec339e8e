"""output-metric: how an error in each layer's output reaches the model output, for every layer at once
(an analysis).

    metric = am.get(OutputMetric(batches=2, probes=4))    # {linear node name: W [N, N]}
    damage ≈ tr(W ΔW H ΔWᵀ)                                # ≈ ||Δy||² / ||y||² of the model output
    gain = tr(W) / N                                       # the same for an error spread evenly (isotropic)

Reads: calibration (required: the first `batches` batches); the graph's selected linear layers.
Writes: nothing in the graph (weights are not changed; their requires_grad flags are restored); returns
{linear node name: W}, [N, N] float32.
Preserves: not applicable (an analysis changes nothing); the cached result is dropped after any pass
that does not list `output-metric` in PassResult.preserved.
Options: layers, skip, batches, probes, seed.

Why: tr(ΔW H ΔWᵀ) (H = 2XᵀX/n, what `sensitivity`'s layer measure and `method-error` give) is exact for
the layer's own output, but in that layer's units: summed over layers it over-weights layers with large
activations and ignores how much of an error the rest of the network damps or amplifies. Measuring the
model output with one layer compressed at a time is exact but costs a forward pass per layer and
candidate. In between, to second order: with J_t the Jacobian of the model output y with respect to the
layer's output at token t, and the error δ_t = ΔW x_t independent of J_t across tokens,
    E||Σ_t J_t δ_t||² ≈ tr(M ΔW (H/2) ΔWᵀ),   M = Σ_t J_tᵀ J_t    (the Kronecker-factored Gauss-Newton)
so W = M / (2 Σ||y||²) turns a layer's error matrix into relative model-output error. Quantization
errors are close to isotropic (then only tr M matters), low-rank and pruning errors are not: they sit in
particular output directions, which M weighs. M is estimated by Hutchinson: for Gaussian probes v on the
output, g_t = J_tᵀ v has E[g_t g_tᵀ] = J_tᵀ J_t, and one backward pass gives g_t of every layer at once —
a zero "tap" added to each layer's output receives exactly that gradient. Cost: one forward and `probes`
backward passes per calibration batch. Memory: one N x N float32 matrix per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch.fx._pytree import tree_flatten_spec

from fxc import ir
from fxc.errors import FxcError
from fxc.ir.kv_signature import model_output
from fxc.passes.select import DEFAULT_SKIP, select_layers
from fxc.passmgr.options import option
from fxc.passmgr.passbase import Analysis


class _Tapped(torch.fx.Interpreter):
    """Runs the graph adding a zero tensor that requires grad to each chosen layer's output."""

    def __init__(self, gm: torch.fx.GraphModule, nodes: set[torch.fx.Node]):
        super().__init__(gm)
        self.nodes = nodes
        self.taps: dict[torch.fx.Node, torch.Tensor] = {}

    def run_node(self, n: torch.fx.Node):
        out = super().run_node(n)
        if n in self.nodes:
            tap = torch.zeros_like(out, requires_grad=True)
            self.taps[n] = tap
            out = out + tap
        return out


def _flat_inputs(gm: torch.fx.GraphModule, batch) -> list:
    args, kwargs = batch
    spec = getattr(gm, "_in_spec", None)
    return tree_flatten_spec((tuple(args), dict(kwargs)), spec) if spec is not None else [*args, *kwargs.values()]


def output_metrics(
    gm: torch.fx.GraphModule, batches: list, layers: list[ir.WeightLayer], probes: int = 4, seed: int = 0
) -> dict[str, torch.Tensor]:
    """W per layer node name: Σ_t J_tᵀJ_t / (2 Σ||y||²), [N, N] float32, over the batches."""
    nodes = {layer.node for layer in layers}
    sums = {node: None for node in nodes}
    energy = 0.0
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in gm.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        for batch in batches:
            interpreter = _Tapped(gm, nodes)
            with torch.enable_grad():
                output = model_output(gm, interpreter.run(*_flat_inputs(gm, batch)))  # a step graph: its logits
                leaves = [t for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor) and t.requires_grad]
                if not leaves:
                    raise FxcError("auto: the model output does not depend on the planned layers; nothing to plan")
                energy += sum(float(t.detach().double().square().sum()) for t in leaves)
                taps = list(interpreter.taps.items())
                for probe in range(probes):
                    vectors = [torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in leaves]
                    grads = torch.autograd.grad(
                        leaves, [tap for _, tap in taps], vectors, retain_graph=probe < probes - 1, allow_unused=True
                    )
                    for (node, tap), grad in zip(taps, grads):
                        rows = torch.zeros_like(tap) if grad is None else grad
                        rows = rows.detach().reshape(-1, rows.shape[-1]).float()
                        update = rows.T @ rows / probes
                        sums[node] = update if sums[node] is None else sums[node] + update
    finally:
        for p in params:
            p.requires_grad_(True)
    if not energy > 0.0 or not all(torch.isfinite(m).all() for m in sums.values() if m is not None):
        raise FxcError("auto: the model output on the calibration batches is zero or not finite; check the data")
    out = {}
    for layer in layers:
        n = ir.get_tensor(gm, layer.weight).shape[0]
        m = sums[layer.node]
        out[layer.node.name] = torch.zeros(n, n) if m is None else (m / (2 * energy)).to(torch.float32)
    return out


@dataclass(frozen=True)
class OutputMetric(Analysis):
    """Per linear layer, the output-error metric W with damage ≈ tr(W ΔW H ΔWᵀ) (Jacobian probes)."""

    name = "output-metric"
    layers: tuple[str, ...] = option((), "module-path patterns of layers (empty: every linear layer)")
    skip: tuple[str, ...] = option(DEFAULT_SKIP, "module-path patterns of layers to leave out")
    batches: int = option(2, "calibration batches to probe", low=1)
    probes: int = option(4, "Gaussian probes per batch", low=1)
    seed: int = option(0, "seed of the probes")

    def compute(self, gm: torch.fx.GraphModule, am) -> dict[str, torch.Tensor]:
        calibration = am.require_calibration("output-metric")
        layers = select_layers(gm, self.layers, self.skip, kinds=("linear",))
        if not layers:
            raise FxcError(f"output-metric: no linear layer matches layers={list(self.layers)} skip={list(self.skip)}")
        return output_metrics(gm, list(calibration)[: self.batches], layers, self.probes, self.seed)
