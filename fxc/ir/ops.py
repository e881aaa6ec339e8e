"""The op set: compressed layers as `torch.library` custom ops in the `fxc` namespace.

This is the contract between passes and backends. A rewrite pass writes these ops into the graph;
a backend lowers them. Each op has a schema, a reference implementation in torch (the semantics,
written for clarity, not speed) and a fake implementation (so a graph holding it still exports and
compiles). Storage layouts are described in fxc/ir/qformat.py.

    torch.ops.fxc.quantized_linear   weight-only int8 / int4 linear, per-channel or per-group scales
    torch.ops.fxc.quantized_conv2d   the same for conv2d (weight flattened to [O, C/g*kh*kw])
    torch.ops.fxc.int8_linear        int8 x int8 -> int32 linear, per-token (dynamic) or static
                                     activation scale, per-channel weight scale
    torch.ops.fxc.sparse_nm_linear   N:M sparse linear: kept values plus their in-group indices

Each op has a typed view of its arguments, a NamedTuple built from the op's schema (one field per
argument, same name, same order), so code that reads an op node names them instead of counting
positions (keyword arguments are read too):

    args = QuantizedLinearArgs.of(node)      # args.qweight, args.scale, args.bits, ...
    args = op_arguments(node)                # the view that fits node.target (OP_ARGUMENTS)
    QuantizedLinearArgs(*values)             # the same view over run-time values in schema order

Backend-internal op (never written by a pass, not in OPS, not part of the IR contract):

    torch.ops.fxc_native.plane_linear   rows [M, K] times a weight-only quantized weight, as
                                        quantized_linear on 2-D rows. The torch backend emits it under
                                        torch.compile so that Inductor keeps its native CPU kernel (the
                                        AMX plane kernel, registered for "cpu" by
                                        codegen/torch/weight_only.py) as one opaque call; the reference
                                        here (dequantize, then linear) runs wherever no kernel is
                                        registered. Its own namespace keeps it apart from the contract.

Reads and writes no files. Importing it registers the ops (fxc/__init__ imports it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.fx
import torch.nn.functional as F

from fxc.errors import NodeError
from fxc.ir import qformat


def _check_bits(bits: int) -> None:
    if bits not in qformat.SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {qformat.SUPPORTED_BITS}, got {bits}")


def _dequantized(qweight, scale, zero_point, bits: int, dtype: torch.dtype) -> torch.Tensor:
    """The float weight, in `dtype`, of a stored weight-only quantized one (bits checked)."""
    _check_bits(bits)
    return qformat.dequantize(qweight, scale, zero_point, bits).to(dtype)


def unpacked_columns(qweight: torch.Tensor, bits: int) -> int:
    """K, the number of weight columns a stored qweight holds."""
    return qweight.shape[1] * (2 if bits == 4 else 1)


# --- weight-only quantized linear -----------------------------------------------------------------


@torch.library.custom_op("fxc::quantized_linear", mutates_args=())
def quantized_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    bias: torch.Tensor | None,
    bits: int,
) -> torch.Tensor:
    """y = x @ dequantize(qweight, scale, zero_point)^T + bias, computed in x's dtype."""
    return F.linear(x, _dequantized(qweight, scale, zero_point, bits, x.dtype), bias)


def _require(condition, message: str) -> None:
    """A shape / dtype contract of an op's arguments, checked by its fake implementation (so a graph that
    breaks it fails when meta["val"] is computed, e.g. on fxc.load, not inside a backend)."""
    torch._check(condition, lambda: message)


def _check_weight(name: str, x, qweight, scale, zero_point, bias, bits: int) -> None:
    _require(bits in qformat.SUPPORTED_BITS, f"{name}: bits must be one of {qformat.SUPPORTED_BITS}, got {bits}")
    _require(qweight.dim() == 2 and qweight.dtype in (torch.int8, torch.uint8), f"{name}: qweight must be 2-D int8")
    n, k = qweight.shape[0], unpacked_columns(qweight, bits)
    _require(x.dim() >= 1 and x.shape[-1] == k, f"{name}: x has {x.shape[-1] if x.dim() else 0} features, weight {k}")
    _require(scale.dim() in (1, 2) and scale.shape[0] == n, f"{name}: scale must have {n} rows")
    _require(zero_point is None or tuple(zero_point.shape) == tuple(scale.shape), f"{name}: zero_point shape != scale")
    _require(bias is None or (bias.dim() == 1 and bias.shape[0] == n), f"{name}: bias must be [{n}]")


@quantized_linear.register_fake
def _(x, qweight, scale, zero_point, bias, bits):
    _check_weight("quantized_linear", x, qweight, scale, zero_point, bias, bits)
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


# --- weight-only quantized conv2d -------------------------------------------------------------------


@torch.library.custom_op("fxc::quantized_conv2d", mutates_args=())
def quantized_conv2d(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    bias: torch.Tensor | None,
    bits: int,
    weight_shape: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """conv2d with a weight stored as a quantized [O, C/g*kh*kw] matrix of the given weight_shape."""
    weight = _dequantized(qweight, scale, zero_point, bits, x.dtype).view(weight_shape)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


@quantized_conv2d.register_fake
def _(x, qweight, scale, zero_point, bias, bits, weight_shape, stride, padding, dilation, groups):
    _require(len(weight_shape) == 4 and weight_shape[0] == qweight.shape[0] and qweight.dim() == 2
             and weight_shape[1] * weight_shape[2] * weight_shape[3] == unpacked_columns(qweight, bits),
             "quantized_conv2d: weight_shape does not match qweight")
    _require(scale.shape[0] == qweight.shape[0] and (bias is None or bias.shape == (qweight.shape[0],)),
             "quantized_conv2d: scale / bias do not match qweight")
    weight = x.new_empty(weight_shape)
    return torch.ops.aten.conv2d.default(x, weight, None, stride, padding, dilation, groups)


# --- int8 activations x int8 weights ----------------------------------------------------------------


def int8_matmul_reference(qx: torch.Tensor, qweight: torch.Tensor) -> torch.Tensor:
    """Exact int32 accumulators of int8 [M, K] @ int8 [N, K]^T (through float64, exact for any K)."""
    return (qx.to(torch.float64) @ qweight.to(torch.float64).T).to(torch.int32)


@torch.library.custom_op("fxc::int8_linear", mutates_args=())
def int8_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    input_scale: torch.Tensor | None,
) -> torch.Tensor:
    """W8A8 linear. Activations are quantized symmetric int8 ([-128, 127], max |x| / 127.5): per token
    from each row's max |x| when input_scale is None (dynamic), else with the given per-tensor scale (static). The int32
    accumulator is scaled in float32 by weight_scale[n] first, then by the activation scale ((acc * ws) * sx: acc * ws
    is bounded by 128 * K * max|W| whatever x's magnitude, so a finite result never overflows on the way; acc * sx
    would overflow for activations near float32's max); bias is added in float32.

    Non-finite activations: int8 cannot hold inf or nan, so a row of x holding any (dynamic or static scale) takes
    the float path instead, x_row @ (qweight * weight_scale)^T (+ bias) in float32: the inf / -inf / nan a float
    model on the dequantized weight gives there. Every backend follows this rule; finite rows are unaffected."""
    rows = x.reshape(-1, x.shape[-1])
    if input_scale is None:
        qx, sx = qformat.quantize_activations_per_token(rows)
    else:
        sx = input_scale.to(torch.float32).reshape(1, 1)
        qx = qformat.quantize_activations(rows, sx)
    acc = int8_matmul_reference(qx, qweight)
    ws = weight_scale.to(torch.float32).reshape(1, -1)
    y = acc.to(torch.float32) * ws * sx
    nonfinite = ~torch.isfinite(rows).all(dim=-1)
    if nonfinite.any():  # the float path for those rows (docstring)
        dequantized = qweight.to(torch.float32) * ws.reshape(-1, 1)
        y[nonfinite] = rows[nonfinite].to(torch.float32) @ dequantized.T
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype).reshape(*x.shape[:-1], qweight.shape[0])


@int8_linear.register_fake
def _(x, qweight, weight_scale, bias, input_scale):
    _require(qweight.dim() == 2 and qweight.dtype == torch.int8, "int8_linear: qweight must be 2-D int8")
    n = qweight.shape[0]
    _require(x.dim() >= 1 and x.shape[-1] == qweight.shape[1], "int8_linear: x features != qweight columns")
    _require(weight_scale.numel() == n, f"int8_linear: weight_scale must hold {n} values")
    _require(bias is None or (bias.dim() == 1 and bias.shape[0] == n), f"int8_linear: bias must be [{n}]")
    _require(input_scale is None or input_scale.numel() == 1, "int8_linear: input_scale must be one value")
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


# --- N:M sparse linear --------------------------------------------------------------------------------


def densify_nm(values: torch.Tensor, indices: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The dense [N, K] weight of a packed N:M weight. values [N, K*n/m] hold the kept weights of
    each group of m columns in order; indices [N, K*n/m] (uint8) their positions inside the group."""
    rows, kept = values.shape
    groups = kept // n
    dense = values.new_zeros(rows, groups, m)
    dense.scatter_(2, indices.view(rows, groups, n).to(torch.int64), values.view(rows, groups, n))
    return dense.view(rows, groups * m)


@torch.library.custom_op("fxc::sparse_nm_linear", mutates_args=())
def sparse_nm_linear(
    x: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    n: int,
    m: int,
) -> torch.Tensor:
    """N:M sparse linear. values are float, or int8 with a per-output-channel scale [N, 1]."""
    if not 0 < n < m:
        raise ValueError(f"N:M sparsity needs 0 < N < M, got {n}:{m}")
    weight = values.to(torch.float32)
    if scale is not None:
        weight = weight * scale.to(torch.float32).reshape(-1, 1)
    return F.linear(x, densify_nm(weight, indices, n, m).to(x.dtype), bias)


@sparse_nm_linear.register_fake
def _(x, values, indices, scale, bias, n, m):
    _require(0 < n < m <= 255, f"sparse_nm_linear: needs 0 < N < M <= 255, got {n}:{m}")
    _require(values.dim() == 2 and tuple(indices.shape) == tuple(values.shape), "sparse_nm_linear: values / indices")
    _require(values.shape[1] % n == 0 and x.dim() >= 1 and x.shape[-1] == values.shape[1] // n * m,
             "sparse_nm_linear: x features do not match the packed weight")
    rows = values.shape[0]
    _require(scale is None or scale.numel() == rows, "sparse_nm_linear: scale must hold one value per row")
    _require(bias is None or (bias.dim() == 1 and bias.shape[0] == rows), "sparse_nm_linear: bias shape")
    return x.new_empty((*x.shape[:-1], values.shape[0]))


# --- backend-internal: plane_linear -------------------------------------------------------------------


@torch.library.custom_op("fxc_native::plane_linear", mutates_args=())
def plane_linear(
    rows: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    bias: torch.Tensor | None,
    bits: int,
) -> torch.Tensor:
    """rows [M, K] @ dequantize(qweight, scale, zero_point)^T + bias: quantized_linear on 2-D rows. The
    reference; a backend registers its own kernel per device (module docstring)."""
    return F.linear(rows, _dequantized(qweight, scale, zero_point, bits, rows.dtype), bias)


@plane_linear.register_fake
def _(rows, qweight, scale, zero_point, bias, bits):
    return rows.new_empty(rows.shape[0], qweight.shape[0])


# --- typed views of an op node's arguments ---------------------------------------------------------
# A field holds a torch.fx.Node (or a constant) when read from a graph, a value when built from a call.


def node_arguments(node: torch.fx.Node) -> tuple:
    """The arguments of a call_function node of an op (OpOverload) in its schema order: keyword arguments
    moved to their positions, left-out ones as their schema default."""
    schema = node.target._schema.arguments
    values = list(node.args)
    for argument in schema[len(values):]:
        if argument.name in node.kwargs:
            values.append(node.kwargs[argument.name])
        elif argument.has_default_value():
            values.append(argument.default_value)
        else:
            raise NodeError(node, f"{node.target} is missing its argument {argument.name!r}")
    return tuple(values)


def _view_of(cls, node: torch.fx.Node):
    if node.op != "call_function" or node.target != cls.OP:
        raise NodeError(node, f"{cls.__name__} reads {cls.OP} nodes, not {node.op} {node.target}")
    return cls(*node_arguments(node))


def _arguments_view(name: str, op: torch._ops.OpOverload) -> type:
    """A NamedTuple class over `op`'s arguments: one field per schema argument, named and ordered as there
    (so a view cannot drift from its op), with `OP` (the op) and `of(node)` (the view of an op node)."""
    fields = [argument.name for argument in op._schema.arguments]
    view = NamedTuple(name, [(field, Any) for field in fields])
    view.__module__ = __name__
    view.__doc__ = f"The arguments of {op._schema.name.replace('::', '.')}: {', '.join(fields)}."
    view.OP = op
    view.of = classmethod(_view_of)
    return view


QuantizedLinearArgs = _arguments_view("QuantizedLinearArgs", torch.ops.fxc.quantized_linear.default)
QuantizedConv2dArgs = _arguments_view("QuantizedConv2dArgs", torch.ops.fxc.quantized_conv2d.default)
Int8LinearArgs = _arguments_view("Int8LinearArgs", torch.ops.fxc.int8_linear.default)
SparseNMLinearArgs = _arguments_view("SparseNMLinearArgs", torch.ops.fxc.sparse_nm_linear.default)


OP_ARGUMENTS = {
    view.OP: view for view in (QuantizedLinearArgs, QuantizedConv2dArgs, Int8LinearArgs, SparseNMLinearArgs)
}


def op_arguments(node: torch.fx.Node) -> NamedTuple:
    """The typed view of an fxc op node's arguments (QuantizedLinearArgs, ...)."""
    view = OP_ARGUMENTS.get(node.target)
    if view is None:
        raise NodeError(node, f"{node.target} is not an op of fxc's op set")
    return view.of(node)


OPS = {
    torch.ops.fxc.quantized_linear.default: "weight-only int8/int4 linear",
    torch.ops.fxc.quantized_conv2d.default: "weight-only int8/int4 conv2d",
    torch.ops.fxc.int8_linear.default: "int8 x int8 linear with per-token or static activation scale",
    torch.ops.fxc.sparse_nm_linear.default: "N:M sparse linear",
}


def is_fxc_op(target) -> bool:
    return target in OPS
