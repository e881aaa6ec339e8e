"""numpy kernels for fxc's op set (fxc/ir/ops.py): the reference semantics of every compressed layer.

    fxc.quantized_linear   weights stay packed; dequantized one tile of output rows at a time
    fxc.quantized_conv2d   weight dequantized (conv weights are small), then numpy conv2d
    fxc.int8_linear        activations quantized per token (or static), exact int32 GEMM through
                           float32 BLAS (codegen/numpy/quant.py, int8_matmul_exact), scaled like the reference
                           ((acc * weight scale) * activation scale); rows holding inf or nan take the
                           reference's float path, x_row @ (qweight * weight scale)^T
    fxc.sparse_nm_linear   scipy CSR past the crossover density (codegen/common/nm_sparse.py), else densified once

A node's arguments are read through the op's typed view (fxc/ir/ops.py: QuantizedLinearArgs, ...).
Constant scales are converted once at compile time; weights are read, never copied, except where
the choice says so (densified N:M weights). Each choice is recorded with `ctx.note` for the report.
Reads the graph and its constants at compile time; writes nothing but TABLE (filled at import) and the arrays
the kernels return; preserves its arguments (the kernels never write into an input).
"""

from __future__ import annotations

import numpy as np
import torch

from fxc.codegen.common import nm_sparse
from fxc.codegen.numpy import quant as qf
from fxc.codegen.numpy.context import NotConstant, OpTable, Unsupported, lowering, out_dtype
from fxc.codegen.numpy.ops.conv import conv2d
from fxc.ir.ops import Int8LinearArgs, QuantizedLinearArgs, SparseNMLinearArgs

fxc_ops = torch.ops.fxc
TABLE: OpTable = {}


def _shape(ctx, arg: torch.fx.Node) -> tuple:
    """Shape of a weight argument: the constant's, else the node's meta['val']."""
    if ctx.is_constant(arg):
        return np.shape(ctx.constant(arg))
    return tuple(arg.meta["val"].shape)


def _float32_or_none(ctx, arg, shape=None):
    try:
        value = ctx.constant(arg)
    except NotConstant:
        return None
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float32)
    return value.reshape(shape) if shape is not None else value


@lowering(TABLE, fxc_ops.quantized_linear.default)
def _quantized_linear(ctx, node):
    out = out_dtype(node)
    bits = QuantizedLinearArgs.of(node).bits
    if bits not in (4, 8):
        raise Unsupported(f"quantized_linear with bits={bits}; fxc stores 4 or 8 bits")
    ctx.note(f"{node.name}: quantized_linear w{bits} -> dequantize tiles of {qf.TILE_BYTES >> 20} MiB + float BLAS")

    def run(x, qweight, scale, zero_point, bias, bits):
        rows = x.reshape(-1, x.shape[-1])
        outputs = qweight.shape[0]

        def weight_rows(n0, n1):
            zero = zero_point[n0:n1] if zero_point is not None else None
            return qf.dequantize_rows(qweight[n0:n1], scale[n0:n1], zero, bits)

        y = qf.tiled_linear(rows, outputs, weight_rows, out)
        if bias is not None:
            y += bias.astype(out, copy=False)
        return y.reshape(*x.shape[:-1], outputs)

    return run


@lowering(TABLE, fxc_ops.quantized_conv2d.default)
def _quantized_conv2d(ctx, node):
    out = out_dtype(node)

    def run(x, qweight, scale, zero_point, bias, bits, weight_shape, stride, padding, dilation, groups):
        weight = qf.dequantize_rows(qweight, scale, zero_point, bits).astype(out, copy=False).reshape(weight_shape)
        return conv2d(x, weight, bias, stride, padding, dilation, groups)

    return run


@lowering(TABLE, fxc_ops.int8_linear.default)
def _int8_linear(ctx, node):
    out = out_dtype(node)
    args = Int8LinearArgs.of(node)
    weight_scale = _float32_or_none(ctx, args.weight_scale, (1, -1))
    columns = _shape(ctx, args.qweight)[1]
    chunks = len(qf.k_chunks(int(columns)))
    ctx.note(f"{node.name}: int8_linear -> exact int32 GEMM in float32 BLAS ({chunks} K chunk(s) of <= 1024)")

    def run(x, qweight, scale, bias=None, input_scale=None):
        rows = x.reshape(-1, x.shape[-1])
        nonfinite = qf.nonfinite_rows(rows)
        quantized = rows if nonfinite is None else np.where(nonfinite[:, None], 0, rows).astype(rows.dtype, copy=False)
        if input_scale is None:
            qx, sx = qf.quantize_activations_per_token(quantized)
        else:
            sx = np.asarray(input_scale, dtype=np.float32).reshape(1, 1)
            qx = qf.quantize_activations(quantized, sx)
        acc = qf.int8_matmul_exact(qx, qweight)
        ws = weight_scale if weight_scale is not None else np.asarray(scale, np.float32).reshape(1, -1)
        y = acc.astype(np.float32) * ws * sx  # weight scale first: no overflow for x near float32's max (the reference)
        if nonfinite is not None:  # rows holding inf or nan: the reference's float path
            y[nonfinite] = qf.int8_float_path(rows[nonfinite], qweight, ws)
        if bias is not None:
            y = y + bias.astype(np.float32, copy=False)
        return y.astype(out, copy=False).reshape(*x.shape[:-1], qweight.shape[0])

    return run


def nm_weight(values: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """The kept weights in float32 (int8 values times their per-row scale)."""
    weight = values.astype(np.float32)
    if scale is not None:
        weight = weight * np.asarray(scale, np.float32).reshape(-1, 1)
    return weight


@lowering(TABLE, fxc_ops.sparse_nm_linear.default)
def _sparse_nm_linear(ctx, node):
    out = out_dtype(node)
    args = SparseNMLinearArgs.of(node)
    n, m = args.n, args.m
    if not 0 < n < m:
        raise Unsupported(f"N:M sparsity needs 0 < N < M, got {n}:{m}")
    crossover = getattr(ctx.options, "crossover", nm_sparse.NUMPY_CROSSOVER)
    choice = nm_sparse.choose(n / m, nm_sparse.example_rows(args.x), crossover)
    ctx.note(f"{node.name}: sparse_nm_linear {n}:{m} -> {choice.describe('scipy CSR')}")
    try:
        values, indices, scale = (ctx.constant(a) for a in (args.values, args.indices, args.scale))
    except NotConstant:
        values = None
    if values is None:  # weights computed at run time: densify per call
        def run_dynamic(x, values, indices, scale, bias, n, m):
            weight = nm_sparse.densify_nm(nm_weight(values, scale), indices, n, m).astype(out, copy=False)
            return _finish(x.reshape(-1, x.shape[-1]) @ weight.T, x, bias, out)

        return run_dynamic
    weight = nm_weight(values, scale)
    if choice.use_sparse:
        csr = nm_sparse.nm_to_csr(weight.astype(out, copy=False), indices, n, m)

        def run_csr(x, *_weights, **named):  # the op's arguments; the weights are folded into `csr`
            bias = SparseNMLinearArgs(x, *_weights, **named).bias
            return _finish((csr @ x.reshape(-1, x.shape[-1]).T).T, x, bias, out)

        return run_csr
    dense_t = nm_sparse.densify_nm(weight, indices, n, m).astype(out, copy=False).T

    def run_dense(x, *_weights, **named):  # the op's arguments; the weights are folded into `dense_t`
        bias = SparseNMLinearArgs(x, *_weights, **named).bias
        return _finish(x.reshape(-1, x.shape[-1]) @ dense_t, x, bias, out)

    return run_dense


def _finish(y2d: np.ndarray, x: np.ndarray, bias, out: np.dtype) -> np.ndarray:
    y = np.asarray(y2d, dtype=out)
    if bias is not None:
        y = y + bias.astype(out, copy=False)
    return y.reshape(*x.shape[:-1], y.shape[-1])
