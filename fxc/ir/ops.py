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

Reads and writes no files. Importing it registers the ops (fxc/__init__ imports it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fxc.ir import qformat


def _check_bits(bits: int) -> None:
    if bits not in qformat.SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {qformat.SUPPORTED_BITS}, got {bits}")


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
    _check_bits(bits)
    weight = qformat.dequantize(qweight, scale, zero_point, bits).to(x.dtype)
    return F.linear(x, weight, bias)


@quantized_linear.register_fake
def _(x, qweight, scale, zero_point, bias, bits):
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
    _check_bits(bits)
    weight = qformat.dequantize(qweight, scale, zero_point, bits).to(x.dtype).view(weight_shape)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


@quantized_conv2d.register_fake
def _(x, qweight, scale, zero_point, bias, bits, weight_shape, stride, padding, dilation, groups):
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
    accumulator is scaled by input_scale[m] * weight_scale[n]; bias is added in float32."""
    rows = x.reshape(-1, x.shape[-1])
    if input_scale is None:
        qx, sx = qformat.quantize_activations_per_token(rows)
    else:
        sx = input_scale.to(torch.float32).reshape(1, 1)
        qx = qformat.quantize_activations(rows, sx)
    acc = int8_matmul_reference(qx, qweight)
    y = acc.to(torch.float32) * sx * weight_scale.to(torch.float32).reshape(1, -1)
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype).reshape(*x.shape[:-1], qweight.shape[0])


@int8_linear.register_fake
def _(x, qweight, weight_scale, bias, input_scale):
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
    return x.new_empty((*x.shape[:-1], values.shape[0]))


OPS = {
    torch.ops.fxc.quantized_linear.default: "weight-only int8/int4 linear",
    torch.ops.fxc.quantized_conv2d.default: "weight-only int8/int4 conv2d",
    torch.ops.fxc.int8_linear.default: "int8 x int8 linear with per-token or static activation scale",
    torch.ops.fxc.sparse_nm_linear.default: "N:M sparse linear",
}


def is_fxc_op(target) -> bool:
    return target in OPS
