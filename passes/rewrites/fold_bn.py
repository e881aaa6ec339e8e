"""fold-bn: fold inference BatchNorm into the conv2d (or 2-D linear) that feeds it.

Reads: the graph only (no analysis, no calibration).
Writes: for each aten.conv2d / aten.linear whose only user is an eval-mode aten.batch_norm (or
_native_batch_norm_legit_no_training) over its output channels, scales the weight by gamma/sqrt(var+eps),
sets bias = (bias - mean)*gamma/sqrt(var+eps) + beta (adding a bias tensor where there was none), and
removes the norm; refresh_meta.
Preserves: nothing (weights change).
Options: none.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.passmgr.passbase import Pass, PassResult

aten = torch.ops.aten
_EVAL_NORMS = (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)


@dataclass(frozen=True)
class FoldBN(Pass):
    """Fold eval-mode BatchNorm into the preceding conv2d or linear layer."""

    name = "fold-bn"

    def run(self, gm: torch.fx.GraphModule, am) -> PassResult:
        folded = 0
        for layer in ir.weight_layers(gm):
            norm = _sole_eval_norm(layer.node)
            if norm is None or (layer.kind == "linear" and len(layer.node.meta["val"].shape) != 2):
                continue
            _fold(gm, layer, norm)
            folded += 1
        if folded:
            ir.remove_unused_tensors(gm)
            ir.refresh_meta(gm)
        return PassResult(folded > 0, summary=f"folded {folded} batch norms")


def _sole_eval_norm(node: torch.fx.Node) -> torch.fx.Node | None:
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    if user.op != "call_function" or user.target not in _EVAL_NORMS or user.args[0] is not node:
        return None
    if user.target == aten.batch_norm.default and user.args[5]:  # training=True
        return None
    if any(not (isinstance(a, torch.fx.Node) and a.op == "get_attr") for a in user.args[1:5]):
        return None
    return user


def _fold(gm: torch.fx.GraphModule, layer: ir.WeightLayer, norm: torch.fx.Node) -> None:
    gamma, beta, mean, var = (ir.get_tensor(gm, a.target).detach().double() for a in norm.args[1:5])
    eps = norm.args[7] if norm.target == aten.batch_norm.default else norm.args[6]
    weight = ir.get_tensor(gm, layer.weight)
    factor = gamma / torch.sqrt(var + eps)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    new_weight = (weight.double() * factor.view(shape)).to(weight.dtype)
    old_bias = ir.get_tensor(gm, layer.bias).double() if layer.bias else torch.zeros_like(mean)
    new_bias = ((old_bias - mean) * factor + beta).to(weight.dtype)
    ir.set_tensor(gm, layer.weight, new_weight)
    if layer.bias:
        ir.set_tensor(gm, layer.bias, new_bias)
    else:
        target = ir.add_tensor(gm, layer.weight.removesuffix("weight") + "bias", new_bias)
        with gm.graph.inserting_before(layer.node):
            bias_node = gm.graph.get_attr(target)
        args = list(layer.node.args) + [None] * max(0, 3 - len(layer.node.args))
        args[2] = bias_node
        layer.node.args = tuple(args)
    replacement = layer.node
    if norm.target == aten.batch_norm.default:
        norm.replace_all_uses_with(replacement)
    else:  # returns a tuple; only element 0 (the output) may be used
        for user in list(norm.users):
            if user.target is operator.getitem and user.args[1] == 0:
                user.replace_all_uses_with(replacement)
    for user in list(norm.users):
        gm.graph.erase_node(user)
    gm.graph.erase_node(norm)
    gm.recompile()
