"""smooth-quant: migrate activation outliers into the weights before W8A8 (Xiao et al., 2023, "SmoothQuant").

    smooth-quant{alpha=0.5},quantize{act-bits=8}

Reads: the `act-stats` analysis (per-channel max |x| of each layer's input; it needs calibration).
Writes: for each group of selected linear layers that read one input (q/k/v, gate/up, or a single layer)
a per-input-channel factor s_j = max|X_j|^alpha / max|W_j|^(1-alpha) (max |W_j| over the group's
weights), multiplies column j of every weight in the group by s_j, and divides channel j of the input
by s_j *inside the layer that produces it*, so the model computes the same function exactly (up to
float rounding) while the input has flatter channels and int8 per-token activations lose less.
No nodes are added or removed: only weight values change.
Preserves: nothing (weights change; act-stats change with them).
Options: alpha (migration strength, 0 = none, 1 = all onto weights), layers, skip.

Foldable producers (looking back through dtype casts / clones):
  - a norm's elementwise weight: aten.mul by a 1-D get_attr of K values (RMSNorm), aten.layer_norm's
    weight and bias;
  - a linear layer (its output rows and bias), directly or as one operand of an elementwise product
    (SwiGLU's silu(gate)·up, folded into up).
The input (and every cast on the way) must be used by the group's layers only, and the producer's
tensors by nothing else; otherwise the scale would leak into another path (a residual, an attention
output behind a reshape), and the group is left alone. The summary names the layers skipped for
lack of a foldable producer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.passes.aten_groups import COPIES
from fxc.passes.select import DEFAULT_SKIP, select_layers
from fxc.passmgr.options import option
from fxc.passmgr.passbase import Pass, PassResult

aten = torch.ops.aten
_TRANSPARENT = COPIES | {aten._to_copy.default, aten.contiguous.default}


@dataclass(frozen=True)
class SmoothQuant(Pass):
    """Fold per-channel scales between linear layers and their producers so activations have fewer outliers."""

    name = "smooth-quant"
    alpha: float = option(0.5, "migration strength: 0 keeps activations, 1 moves all range onto weights", low=0, high=1)
    layers: tuple[str, ...] = option((), "module-path patterns of layers to smooth (empty: all linear layers)")
    skip: tuple[str, ...] = option(DEFAULT_SKIP, "module-path patterns of layers to leave alone")

    def run(self, gm: torch.fx.GraphModule, am) -> PassResult:
        chosen = select_layers(gm, self.layers, self.skip, kinds=("linear",))
        groups: dict[torch.fx.Node, list[ir.WeightLayer]] = {}
        for layer in chosen:
            groups.setdefault(layer.node.args[0], []).append(layer)
        plans, unfoldable = [], []
        for source, group in groups.items():
            k = ir.get_tensor(gm, group[0].weight).shape[1]
            fold = _foldable_producer(gm, source, {layer.node for layer in group}, k)
            if fold is None:
                unfoldable.extend(layer.fqn for layer in group)
            else:
                plans.append((group, fold))
        if not plans:
            return PassResult(False, summary=_summary(0, unfoldable))
        stats = am.get("act-stats")
        smoothed = 0
        for group, fold in plans:
            if group[0].node.name not in stats:  # never reached by calibration
                unfoldable.extend(layer.fqn for layer in group)
                continue
            scales = self._scales(gm, group, stats[group[0].node.name].absmax)
            for layer in group:
                weight = ir.get_tensor(gm, layer.weight)
                ir.set_tensor(gm, layer.weight, (weight.double() * scales).to(weight.dtype))
            fold(scales)
            smoothed += len(group)
        return PassResult(smoothed > 0, summary=_summary(smoothed, unfoldable))

    def _scales(self, gm, group: list[ir.WeightLayer], act_max: torch.Tensor) -> torch.Tensor:
        w_max = torch.stack([ir.get_tensor(gm, layer.weight).detach().abs().amax(0) for layer in group]).amax(0)
        act, w = act_max.double(), w_max.double()
        scales = act.clamp(min=1e-5) ** self.alpha / w.clamp(min=1e-5) ** (1 - self.alpha)
        return torch.where((act > 0) & (w > 0), scales.clamp(1e-5, 1e5), torch.ones_like(scales))


def _summary(smoothed: int, unfoldable: list[str]) -> str:
    text = f"smoothed {smoothed} layers"
    if unfoldable:
        shown = ", ".join(unfoldable[:6]) + (f", ... ({len(unfoldable)} in all)" if len(unfoldable) > 6 else "")
        text += f"; left alone, no foldable producer: {shown}"
    return text


# --- where the inverse scale can go ----------------------------------------------------------------------


def _foldable_producer(gm, source: torch.fx.Node, group: set[torch.fx.Node], k: int):
    """A function applying 1/s to the K channels of the producer of `source`, or None when there is no
    safe place."""
    if set(source.users) - group:
        return None
    node = source
    while node.op == "call_function" and node.target in _TRANSPARENT and len(node.users) == 1:
        node = node.args[0]
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return None
    if node is not source and len(node.users) != 1:
        return None
    if node.target == aten.layer_norm.default:
        tensors = [a for a in node.args[2:4] if a is not None]
        if tensors and all(_private_tensor(gm, a, 1, k) for a in tensors):
            return lambda s: [_divide(gm, a.target, s, dim=0) for a in tensors]
        return None
    if node.target == aten.linear.default:
        return _linear_fold(gm, node, k)
    if node.target == aten.mul.Tensor:
        a, b = node.args[:2]
        for vector in (a, b):
            if _private_tensor(gm, vector, 1, k):
                return lambda s: _divide(gm, vector.target, s, dim=0)
        for operand in (a, b):
            linear = _through_transparent(operand)
            if linear is not None and linear.target == aten.linear.default and len(linear.users) == 1:
                fold = _linear_fold(gm, linear, k)
                if fold is not None:
                    return fold
    return None


def _through_transparent(node) -> torch.fx.Node | None:
    while isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target in _TRANSPARENT:
        if len(node.users) != 1:
            return None
        node = node.args[0]
    return node if isinstance(node, torch.fx.Node) else None


def _linear_fold(gm, linear: torch.fx.Node, k: int):
    weight = linear.args[1]
    bias = linear.args[2] if len(linear.args) > 2 else None
    if not _private_tensor(gm, weight, 2, k) or (bias is not None and not _private_tensor(gm, bias, 1, k)):
        return None

    def fold(s: torch.Tensor) -> None:
        _divide(gm, weight.target, s, dim=0)
        if bias is not None:
            _divide(gm, bias.target, s, dim=0)

    return fold


def _private_tensor(gm, node, dim: int, k: int) -> bool:
    """A get_attr tensor of rank `dim` with K rows that no other node (nor another get_attr of the
    same tensor) reads."""
    if not (isinstance(node, torch.fx.Node) and node.op == "get_attr" and len(node.users) == 1):
        return False
    if sum(1 for n in gm.graph.nodes if n.op == "get_attr" and n.target == node.target) != 1:
        return False
    tensor = ir.get_tensor(gm, node.target)
    return tensor.dim() == dim and tensor.shape[0] == k


def _divide(gm, target: str, s: torch.Tensor, dim: int) -> None:
    tensor = ir.get_tensor(gm, target)
    shape = [-1 if d == dim else 1 for d in range(tensor.dim())]
    ir.set_tensor(gm, target, (tensor.double() / s.view(shape)).to(tensor.dtype))
