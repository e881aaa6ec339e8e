"""Per-layer drift: how far each layer's output in the compressed graph moved from the dense graph's,
on one calibration batch. It fills the `drift` column of CompiledModule.report().

    probe = DriftProbe.capture(gm, batch)   # before the passes: the dense layer outputs
    ...                                    # passes rewrite gm
    drift = probe.measure(gm)               # {layer node name: relative error}

Layers are matched by module path (LayerInfo.fqn); the compressed node standing for a layer is the
one with that path whose output has the dense output's shape (for a low-rank split, the second half,
which restores the layer's output size). When the dense layer fed an eval BatchNorm that a pass then
folded into it, the layer is compared with the norm's output, which is what the folded layer computes.
Drift is ||y - y_dense|| / ||y_dense||: the error a user sees at that point of the network (errors of
earlier layers included), not the layer's error in isolation. To bound memory, each output is kept
as an evenly strided sample of at most SAMPLE values (the same positions on both sides). A path
whose layer runs more than once (its output is ambiguous) is left out. Reads the graphs; writes nothing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch.fx._pytree import tree_flatten_spec

from fxc.ir import meta
from fxc.passmgr.calibration import as_batch

SAMPLE = 1 << 16
_NORMS = (torch.ops.aten.batch_norm.default, torch.ops.aten._native_batch_norm_legit_no_training.default)


class DriftProbe:
    def __init__(self, batch: tuple[tuple, dict], direct: dict, folded: dict, shapes: dict):
        self.batch = batch
        self.direct = direct  # fqn -> sampled dense output of the layer
        self.folded = folded  # fqn -> sampled output of the eval norm the layer feeds
        self.shapes = shapes  # fqn -> full output shape

    @classmethod
    def capture(cls, gm: torch.fx.GraphModule, batch: Any) -> DriftProbe:
        """Record the dense layer outputs of `gm` on `batch` (call before any pass runs)."""
        batch = as_batch(batch)
        layers = _unique_layers(gm)
        norms = {_sole_norm(node): info.fqn for node, info in layers.items() if _sole_norm(node) is not None}
        values = _run(gm, batch, set(layers) | set(norms))
        direct = {info.fqn: values[node][1] for node, info in layers.items() if node in values}
        folded = {fqn: values[norm][1] for norm, fqn in norms.items() if norm in values}
        shapes = {info.fqn: values[node][0] for node, info in layers.items() if node in values}
        return cls(batch, direct, folded, shapes)

    def measure(self, gm: torch.fx.GraphModule) -> dict[str, float]:
        """Relative error of every layer node of the compressed `gm` that has a dense counterpart."""
        candidates = {
            node: info
            for node, info in _layer_infos(gm).items()
            if info.fqn in self.direct and _shape(node) in (None, self.shapes[info.fqn])
        }
        values = _run(gm, self.batch, set(candidates))
        drift = {}
        for node, info in candidates.items():
            shape, value = values.get(node, (None, None))
            if shape != self.shapes[info.fqn]:
                continue
            absorbed = info.fqn in self.folded and _sole_norm(node) is None
            reference = self.folded[info.fqn] if absorbed else self.direct[info.fqn]
            scale = reference.norm().item()
            error = (value - reference).norm().item()
            drift[node.name] = error / scale if scale > 0 else error
        return drift


def _layer_infos(gm: torch.fx.GraphModule) -> dict[torch.fx.Node, meta.LayerInfo]:
    return {
        node: info
        for node in gm.graph.nodes
        if node.op == "call_function" and (info := meta.get(node, meta.LayerInfo)) is not None
    }


def _unique_layers(gm: torch.fx.GraphModule) -> dict[torch.fx.Node, meta.LayerInfo]:
    infos = _layer_infos(gm)
    counts: dict[str, int] = {}
    for info in infos.values():
        counts[info.fqn] = counts.get(info.fqn, 0) + 1
    return {node: info for node, info in infos.items() if counts[info.fqn] == 1}


def _sole_norm(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].target in _NORMS else None


def _shape(node: torch.fx.Node) -> tuple | None:
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor) or not all(isinstance(d, int) for d in value.shape):
        return None  # symbolic: decided on the real output
    return tuple(value.shape)


def _sample(value: torch.Tensor) -> torch.Tensor:
    flat = value.detach().float().reshape(-1)
    return flat[:: max(1, flat.numel() // SAMPLE)][:SAMPLE].clone()


def _run(gm: torch.fx.GraphModule, batch: tuple[tuple, dict], wanted: set) -> dict[torch.fx.Node, tuple]:
    """(shape, sample) of the outputs of the `wanted` nodes (tensors only) when `gm` runs on `batch`."""
    args, kwargs = batch
    spec = getattr(gm, "_in_spec", None)
    flat = tree_flatten_spec((tuple(args), dict(kwargs)), spec) if spec is not None else [*args, *kwargs.values()]
    caught: dict[torch.fx.Node, tuple] = {}

    class Catch(torch.fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if node in wanted and isinstance(value, torch.Tensor):
                caught[node] = (tuple(value.shape), _sample(value))
            return value

    with torch.no_grad():
        Catch(gm).run(*flat)
    return caught
