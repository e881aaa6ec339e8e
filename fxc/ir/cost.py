"""Cost of each weight layer in the IR: parameters, bytes and FLOPs, read off the graph itself.

`layer_nodes(gm)` are the nodes that hold weights: aten.linear / conv2d / embedding with get_attr
weights, and every op of the op set. `layer_cost(gm, node)` counts the node's own tensors (storage
bytes as they really are in memory: packed int4 counts half a byte per weight) and its FLOPs for
the shapes in meta["val"] (dynamic dims at their traced example size). `model_bytes(gm)` is every
tensor of the module, counted once. Reads the graph; writes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.ir import ops

aten = torch.ops.aten


@dataclass(frozen=True)
class LayerCost:
    params: int  # weights the layer stands for (dense count) plus bias
    bytes: int  # storage bytes of the layer's own tensors
    flops: int  # multiply-adds x 2 for the traced input shape


def layer_nodes(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    dense = {layer.node for layer in ir.weight_layers(gm, kinds=("linear", "conv2d", "embedding"))}
    return [n for n in gm.graph.nodes if n in dense or (n.op == "call_function" and ops.is_fxc_op(n.target))]


def weight_shape(gm: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[int, ...]:
    """The logical (dense, unpacked) weight shape of a layer node."""
    t = node.target
    if t == aten.embedding.default:
        return tuple(ir.get_tensor(gm, node.args[0].target).shape)
    if t in (aten.linear.default, aten.conv2d.default):
        return tuple(ir.get_tensor(gm, node.args[1].target).shape)
    if t == torch.ops.fxc.quantized_conv2d.default:
        return tuple(node.args[6])
    stored = (
        ir.get_tensor(gm, node.args[1].target) if node.args[1].op == "get_attr" else node.args[1].meta["val"]
    )
    if t == torch.ops.fxc.quantized_linear.default:
        return (stored.shape[0], ops.unpacked_columns(stored, node.args[5]))
    if t == torch.ops.fxc.sparse_nm_linear.default:
        n, m = node.args[5], node.args[6]
        return (stored.shape[0], stored.shape[1] * m // n)
    return tuple(stored.shape)  # int8_linear


def layer_cost(gm: torch.fx.GraphModule, node: torch.fx.Node) -> LayerCost:
    shape = weight_shape(gm, node)
    tensors = {
        a.target: ir.get_tensor(gm, a.target)
        for a in node.args
        if isinstance(a, torch.fx.Node) and a.op == "get_attr"
    }
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    bias = _bias_numel(gm, node)
    params = math.prod(shape) + bias
    if node.target == aten.embedding.default:
        return LayerCost(params, nbytes, 0)
    out = node.meta.get("val")
    out_numel = _concrete_numel(out) if isinstance(out, torch.Tensor) else 0
    reduction = math.prod(shape[1:])  # K for linear, C/g*kh*kw for conv
    if node.target == torch.ops.fxc.sparse_nm_linear.default:
        reduction = reduction * node.args[5] // node.args[6]
    return LayerCost(params, nbytes, 2 * out_numel * reduction)


def model_bytes(gm: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer, shared tensors counted once."""
    seen, total = set(), 0
    for t in list(gm.parameters()) + list(gm.buffers()):
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def _bias_numel(gm: torch.fx.GraphModule, node: torch.fx.Node) -> int:
    bias_index = {aten.linear.default: 2, aten.conv2d.default: 2}.get(node.target, 4)
    if node.target == aten.embedding.default or len(node.args) <= bias_index:
        return 0
    if node.target == torch.ops.fxc.int8_linear.default:
        bias_index = 3
    bias = node.args[bias_index]
    return (
        ir.get_tensor(gm, bias.target).numel()
        if isinstance(bias, torch.fx.Node) and bias.op == "get_attr"
        else 0
    )


def _concrete_numel(value: torch.Tensor) -> int:
    total = 1
    for d in value.shape:
        if isinstance(d, torch.SymInt):
            hint = d.node.hint
            d = hint if hint is not None else 1
        total *= int(d)
    return total
