"""numpy kernels for normalization: batch norm at inference (scale and shift folded once at compile
time when the statistics are weights), layer norm, group norm, RMS norm, and the native_* forms
that also return the statistics.

Batch norm follows torch's CPU inference formula (alpha = w / sqrt(var + eps), beta = b - mean *
alpha, y = x * alpha + beta). Training-mode batch norm updates running statistics, which an
inference backend cannot reproduce: reported at compile time. Reads nothing; writes nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from fxc.codegen.numpy.context import NotConstant, OpTable, Unsupported, lowering, out_dtype

aten = torch.ops.aten
TABLE: OpTable = {}


def batch_norm_affine(weight, bias, mean, var, eps) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) of an inference batch norm, per channel, in the statistics' dtype."""
    alpha = 1 / np.sqrt(var + var.dtype.type(eps))
    if weight is not None:
        alpha = alpha * weight
    beta = -mean * alpha
    if bias is not None:
        beta = beta + bias
    return alpha, beta


def _apply_affine(x, alpha, beta):
    shape = (-1,) + (1,) * (x.ndim - 2)
    return x * alpha.reshape(shape) + beta.reshape(shape)


@lowering(TABLE, aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)
def _batch_norm(ctx, node):
    native = node.target is not aten.batch_norm.default
    if not native and node.args[5]:
        raise Unsupported("batch_norm in training mode updates running statistics; trace in eval mode")
    eps = node.args[6] if native else node.args[7]
    if node.args[3] is None or node.args[4] is None:
        raise Unsupported("batch_norm without running statistics normalizes with batch statistics (training mode)")
    try:
        alpha, beta = batch_norm_affine(*(ctx.constant(a) for a in node.args[1:5]), eps)
    except NotConstant:
        alpha = beta = None
    out = out_dtype(node, 0) if native else out_dtype(node)

    def run(x, weight, bias, mean, var, *rest):
        a, b = (alpha, beta) if alpha is not None else batch_norm_affine(weight, bias, mean, var, eps)
        y = _apply_affine(x, a, b).astype(out, copy=False)
        return (y, np.empty(0, out), np.empty(0, out)) if native else y

    return run


def layer_norm(x, axes, weight, bias, eps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, mean, rstd) normalizing over `axes` (biased variance, as torch)."""
    mean = x.mean(axis=axes, keepdims=True, dtype=x.dtype)
    centered = x - mean
    var = np.mean(np.square(centered), axis=axes, keepdims=True, dtype=x.dtype)
    rstd = 1 / np.sqrt(var + x.dtype.type(eps))
    y = centered
    y *= rstd  # in place: centered is ours
    if weight is not None:
        y *= weight
    if bias is not None:
        y += bias
    return y, mean, rstd


@lowering(TABLE, aten.layer_norm.default, aten.native_layer_norm.default)
def _layer_norm(ctx, node):
    native = node.target is aten.native_layer_norm.default

    def run(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
        axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
        y, mean, rstd = layer_norm(x, axes, weight, bias, eps)
        return (y, mean, rstd) if native else y

    return run


@lowering(TABLE, aten.group_norm.default)
def _group_norm(ctx, node):
    def run(x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
        grouped = x.reshape(x.shape[0], num_groups, -1)
        y, _, _ = layer_norm(grouped, (2,), None, None, eps)
        y = y.reshape(x.shape)
        shape = (-1,) + (1,) * (x.ndim - 2)
        if weight is not None:
            y = y * weight.reshape(shape)
        if bias is not None:
            y = y + bias.reshape(shape)
        return y

    return run


@lowering(TABLE, aten.rms_norm.default)
def _rms_norm(ctx, node):
    out = out_dtype(node)

    def run(x, normalized_shape, weight=None, eps=None):
        axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
        eps = np.finfo(x.dtype).eps if eps is None else eps
        y = x * (1 / np.sqrt(np.mean(np.square(x), axis=axes, keepdims=True, dtype=x.dtype) + x.dtype.type(eps)))
        return (y * weight if weight is not None else y).astype(out, copy=False)

    return run
