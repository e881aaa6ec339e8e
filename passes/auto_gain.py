"""Output gains: how much of a layer's output error reaches the model output, for every layer at once.

    gains = output_gains(gm, batches, layers, probes=4, seed=0)   # {layer node name: gain}
    damage ≈ gains[name] * tr(ΔW H ΔWᵀ)                            # ≈ ||Δy||² / ||y||² of the model output

Why: the `sensitivity` analysis's layer measure tr(ΔW H ΔWᵀ) (H = 2XᵀX/n) is exact for the layer's own
output but in that layer's units; summed across layers it over-weights layers with large activations
and ignores how much of an error the rest of the network damps or amplifies. Its model measure runs
the model once per layer and candidate (too slow for hundreds of layers). In between: with J_l the
Jacobian of the model output y with respect to layer l's output, an error δ spread evenly over the
layer's N outputs per token (per-element variance e/(2N), e = tr(ΔW H ΔWᵀ)) moves the output by
E||J_l δ||² = ||J_l||²_F · e / (2N). ||J_l||²_F = E_v ||J_lᵀ v||² for Gaussian probes v on the output
(Hutchinson), and one backward pass gives J_lᵀ v for every layer: a zero "tap" added to each layer's
output receives exactly that gradient. So the gains of all layers cost `probes` backward passes per
batch, and damage = gain · e is in the same units as the model measure (relative output error).

Also the analysis `output-gains` (options layers, skip, batches, probes, seed), so the AnalysisManager
caches the gains like any other analysis. Reads the graph and calibration (weights are not changed;
their requires_grad flags are restored). Writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch.fx._pytree import tree_flatten_spec

from fxc import ir
from fxc.errors import FxcError
from fxc.options import option
from fxc.passbase import Analysis
from fxc.passes.select import DEFAULT_SKIP, select_layers


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


def output_gains(
    gm: torch.fx.GraphModule, batches: list, layers: list[ir.WeightLayer], probes: int = 4, seed: int = 0
) -> dict[str, float]:
    """gain per layer node name: ||J_l||²_F / (2 N_l ||y||²), summed over the batches."""
    nodes = {layer.node for layer in layers}
    squares = {node: 0.0 for node in nodes}
    energy = 0.0
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in gm.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        for batch in batches:
            interpreter = _Tapped(gm, nodes)
            with torch.enable_grad():
                output = interpreter.run(*_flat_inputs(gm, batch))
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
                    for (node, _), grad in zip(taps, grads):
                        if grad is not None:
                            squares[node] += float(grad.double().square().sum()) / probes
    finally:
        for p in params:
            p.requires_grad_(True)
    if energy == 0.0 or not all(map(_finite, squares.values())):
        raise FxcError("auto: the model output on the calibration batches is zero or not finite; check the data")
    gains = {}
    for layer in layers:
        outputs = ir.get_tensor(gm, layer.weight).shape[0]
        gains[layer.node.name] = squares[layer.node] / (2 * outputs * energy)
    return gains


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


@dataclass(frozen=True)
class OutputGains(Analysis):
    """Per linear layer, the share of its output error that reaches the model output (Jacobian probes)."""

    name = "output-gains"
    layers: tuple[str, ...] = option((), "module-path patterns of layers (empty: every linear layer)")
    skip: tuple[str, ...] = option(DEFAULT_SKIP, "module-path patterns of layers to leave out")
    batches: int = option(2, "calibration batches to probe", low=1)
    probes: int = option(4, "Gaussian probes per batch", low=1)
    seed: int = option(0, "seed of the probes")

    def compute(self, gm: torch.fx.GraphModule, am) -> dict[str, float]:
        calibration = am.require_calibration("output-gains")
        layers = select_layers(gm, self.layers, self.skip, kinds=("linear",))
        if not layers:
            raise FxcError(f"output-gains: no linear layer matches layers={list(self.layers)} skip={list(self.skip)}")
        return output_gains(gm, list(calibration)[: self.batches], layers, self.probes, self.seed)
