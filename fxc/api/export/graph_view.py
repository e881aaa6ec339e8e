"""What an exporter sees of a compiled model: its weight layers by module path, as stored, plus every other tensor.

    view = read_graph(compiled.graph)
    view.layers["model.layers.0.mlp.up_proj"].stored      # WeightOnly / Int8Activations / None (dense)
    view.layers["model.layers.0.mlp.up_proj"].dense()     # the effective float32 weight the layer computes with
    view.tensors["model.norm.weight"]                     # tensors outside layers, by their original dotted name

A layer is found from each weight-layer node of the graph (aten.linear / aten.conv2d with a get_attr weight, and the
fxc ops quantized_linear, quantized_conv2d, int8_linear, sparse_nm_linear) and named by its LayerInfo (the module path
the frontend recorded). Its storage is read through the op's typed argument view (fxc/ir/ops.py) and the layouts of
fxc/ir/qformat.py: a weight-only quantized layer as integers q (unpacked int8 [N, K]), scales and zero points per group;
an N:M layer with int8 values as per-channel int8 with the pruned weights as zeros; a W8A8 layer as int8 weights with
per-channel scales and its activation scheme. `dense()` is the weight the layer computes with: dequantized, pruning
zeros kept, SmoothQuant's scales already folded (the pass folds them into the weights and norms), the two halves of a
low-rank split multiplied back. A tensor that feeds no layer (embeddings, norms, buffers) is kept under its get_attr
name, which is the original module path. Anything the formats cannot be told about is kept as a problem, not guessed
at: an fxc op whose tensors are computed rather than stored, a layer without LayerInfo.

Reads the graph and its tensors; writes nothing; preserves the graph (tensors are copied out, never changed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx

from fxc import ir
from fxc.ir import meta, ops, qformat

aten = torch.ops.aten
_FXC_LAYER_OPS = {
    torch.ops.fxc.quantized_linear.default: "linear",
    torch.ops.fxc.quantized_conv2d.default: "conv2d",
    torch.ops.fxc.int8_linear.default: "linear",
    torch.ops.fxc.sparse_nm_linear.default: "linear",
}
_DENSE_LAYER_OPS = {aten.linear.default: "linear", aten.conv2d.default: "conv2d"}


@dataclass(frozen=True)
class WeightOnly:
    """Weight-only integers: W = (q - zero) * scale per row and group of `group_size` columns (fxc/ir/qformat.py)."""

    q: torch.Tensor  # int8 [N, K], unpacked (values in the signed range of `bits`)
    scale: torch.Tensor  # float32 [N, K // group_size]
    zero: torch.Tensor | None  # float32 [N, K // group_size] holding integers, None when symmetric
    bits: int

    @property
    def group_size(self) -> int:
        return self.q.shape[1] // self.scale.shape[1]

    @property
    def symmetric(self) -> bool:
        return self.zero is None


@dataclass(frozen=True)
class Int8Activations:
    """W8A8: int8 weights with a per-channel scale, activations quantized to int8 per token (input_scale None) or
    with one static scale."""

    q: torch.Tensor  # int8 [N, K]
    scale: torch.Tensor  # float32 [N]
    input_scale: torch.Tensor | None  # float32 scalar, None when dynamic per token


@dataclass
class Layer:
    """One weight layer of the original model, as the compressed graph stores it."""

    fqn: str
    kind: str  # "linear" | "conv2d"
    halves: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # low rank: (role, dense weight)
    stored: WeightOnly | Int8Activations | None = None  # None: a float weight (maybe with pruning zeros)
    weight: torch.Tensor | None = None  # the float weight when stored is None (original shape)
    bias: torch.Tensor | None = None
    weight_shape: tuple[int, ...] | None = None  # conv2d: the 4-D shape the [O, C*kh*kw] matrix stands for
    sparsity: meta.Sparsity | None = None
    quant: meta.Quantized | None = None
    nm: tuple[int, int] | None = None  # N:M of a sparse_nm_linear node

    @property
    def low_rank(self) -> bool:
        return bool(self.halves)

    @property
    def shape(self) -> tuple[int, ...]:
        """The weight's shape in the module (without dequantizing it)."""
        if self.halves:
            parts = dict(self.halves)
            return (parts["up"].shape[0] if "up" in parts else -1, parts["down"].shape[1] if "down" in parts else -1)
        if self.weight_shape:
            return self.weight_shape
        return tuple((self.stored.q if self.stored is not None else self.weight).shape)

    def dense(self) -> torch.Tensor:
        """The float32 weight the layer computes with, in the module's own shape."""
        if self.halves:
            parts = dict(self.halves)
            return (parts["up"].to(torch.float32) @ parts["down"].to(torch.float32)).contiguous()
        if isinstance(self.stored, WeightOnly):
            w = qformat.apply_group_scales(self.stored.q.to(torch.float32), self.stored.scale, self.stored.zero)
        elif isinstance(self.stored, Int8Activations):
            w = self.stored.q.to(torch.float32) * self.stored.scale.reshape(-1, 1)
        else:
            w = self.weight.to(torch.float32)
        return w.reshape(self.weight_shape) if self.weight_shape else w


@dataclass
class GraphView:
    layers: dict[str, Layer]  # by module path, in graph order
    tensors: dict[str, torch.Tensor]  # every get_attr tensor that is not part of a layer, by its dotted name
    problems: list[str]  # what could not be read as a layer (named), for every exporter to refuse


def read_graph(gm: torch.fx.GraphModule) -> GraphView:
    layers: dict[str, Layer] = {}
    used: set[str] = set()
    layer_nodes: set[torch.fx.Node] = set()
    problems: list[str] = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        kind = _FXC_LAYER_OPS.get(node.target) or _DENSE_LAYER_OPS.get(node.target)
        if kind is None:
            continue
        weight_arg = ops.op_arguments(node)[1] if node.target in _FXC_LAYER_OPS else node.args[1]
        if not _is_attr(weight_arg):
            if node.target in _FXC_LAYER_OPS:
                problems.append(f"node {node.name} ({node.target}) takes a computed weight, not a stored one")
            continue  # an aten.linear of two activations (attention) is no weight layer
        info = meta.get(node, meta.LayerInfo)
        if info is None:
            problems.append(f"node {node.name} ({node.target}) has no LayerInfo (the module path of its weight)")
            continue
        try:
            layer, names = _read_layer(gm, node, kind, info.fqn)
        except ValueError as error:
            problems.append(f"layer {info.fqn}: {error}")
            continue
        used |= names
        layer_nodes.add(node)
        lr = meta.get(node, meta.LowRank)
        if lr is not None:
            whole = layers.setdefault(info.fqn, Layer(info.fqn, kind, sparsity=layer.sparsity, quant=layer.quant))
            whole.halves.append((lr.role, layer.dense()))
            if lr.role == "up":
                whole.bias = layer.bias
            continue
        if info.fqn in layers:
            problems.append(f"layer {info.fqn} appears twice in the graph (node {node.name})")
            continue
        layers[info.fqn] = layer
    for fqn, layer in layers.items():
        if layer.halves and sorted(role for role, _ in layer.halves) != ["down", "up"]:
            problems.append(f"layer {fqn}: a low-rank split without both halves")
    tensors = {}
    for node in gm.graph.nodes:  # a layer's tensor that something else reads too (a tied embedding) is kept as well
        if node.op == "get_attr" and node.target not in tensors and (
                node.target not in used or any(user not in layer_nodes for user in node.users)):
            tensors[node.target] = ir.get_tensor(gm, node.target).detach()
    return GraphView(layers, tensors, problems)


def _is_attr(arg) -> bool:
    return isinstance(arg, torch.fx.Node) and arg.op == "get_attr"


def _read_layer(gm: torch.fx.GraphModule, node: torch.fx.Node, kind: str, fqn: str) -> tuple[Layer, set[str]]:
    """The layer a node computes and the get_attr names it consumes."""
    names: set[str] = set()

    def tensor(arg, what: str) -> torch.Tensor | None:
        if arg is None:
            return None
        if not _is_attr(arg):
            raise ValueError(f"its {what} is computed in the graph, not stored")
        names.add(arg.target)
        return ir.get_tensor(gm, arg.target).detach()

    layer = Layer(fqn, kind, sparsity=meta.get(node, meta.Sparsity), quant=meta.get(node, meta.Quantized))
    if node.target in (aten.linear.default, aten.conv2d.default):
        layer.weight = tensor(node.args[1], "weight")
        layer.bias = tensor(node.args[2] if len(node.args) > 2 else node.kwargs.get("bias"), "bias")
        return layer, names
    args = ops.op_arguments(node)
    layer.bias = tensor(args.bias, "bias")
    if node.target in (torch.ops.fxc.quantized_linear.default, torch.ops.fxc.quantized_conv2d.default):
        q = qformat.unpack(tensor(args.qweight, "qweight"), args.bits)
        zero = tensor(args.zero_point, "zero point")
        layer.stored = WeightOnly(q.to(torch.int8), tensor(args.scale, "scale").to(torch.float32),
                                  None if zero is None else zero.to(torch.float32), int(args.bits))
        if kind == "conv2d":
            layer.weight_shape = tuple(int(d) for d in args.weight_shape)
    elif node.target == torch.ops.fxc.int8_linear.default:
        scale = tensor(args.weight_scale, "weight scale").to(torch.float32).reshape(-1)
        layer.stored = Int8Activations(tensor(args.qweight, "qweight"), scale, tensor(args.input_scale, "input scale"))
    else:  # sparse_nm_linear
        n, m = int(args.n), int(args.m)
        layer.nm = (n, m)
        values, indices = tensor(args.values, "values"), tensor(args.indices, "indices")
        scale = tensor(args.scale, "scale")
        if scale is None:
            layer.weight = ops.densify_nm(values, indices, n, m)
        else:  # int8 values with a per-row scale: int8 per channel whose pruned weights are the integer 0
            q = ops.densify_nm(values, indices, n, m)
            layer.stored = WeightOnly(q.to(torch.int8), scale.to(torch.float32).reshape(-1, 1), None, 8)
    return layer, names
