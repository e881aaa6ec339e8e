"""numpy kernels for the dense layers: linear / matmul / mm / bmm / addmm / baddbmm / einsum,
embedding, scaled-dot-product attention, and dropout (identity at inference).

Every float GEMM goes through numpy's matmul (BLAS sgemm/dgemm); a linear over [..., K] inputs is
one [rows, K] @ [K, N] call, not a loop over the batch. Attention is the math formulation (scale q,
q @ k^T, boolean or additive mask, causal mask, softmax, @ v), the same function torch's math
path computes. Dropout with p > 0 in training mode cannot be reproduced (it is random): reported at
compile time. Reads nothing; writes nothing (the table is filled at import).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fxc.codegen.numpy.context import OpTable, Unsupported, kernel, lowering, out_dtype

aten = torch.ops.aten
TABLE: OpTable = {}


def linear(x: np.ndarray, weight_t: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """x [..., K] @ weight_t [K, N] (+ bias) as one 2-D GEMM over all leading dims."""
    rows = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
    y = rows @ weight_t
    if bias is not None:
        y += bias
    return y.reshape(*x.shape[:-1], weight_t.shape[-1]) if x.ndim != 2 else y


@kernel(TABLE, aten.linear.default)
def _linear(x, weight, bias=None):
    return linear(x, weight.T, bias)


@kernel(TABLE, aten.matmul.default, aten.mm.default, aten.bmm.default)
def _matmul(a, b):
    if a.ndim > 2 and b.ndim == 2:
        return linear(a, b)
    return np.matmul(a, b)


@kernel(TABLE, aten.mv.default, aten.dot.default)
def _mv(a, b):
    return np.asarray(np.matmul(a, b))


@kernel(TABLE, aten.addmm.default, aten.baddbmm.default, aten.addbmm.default)
def _addmm(bias, a, b, beta=1, alpha=1):
    product = np.matmul(a, b)
    if product.ndim == 3 and bias.ndim < 3 and a.ndim == 3 and bias.shape[-2:] != product.shape[-2:]:
        product = product.sum(axis=0)  # addbmm: sums the batch
    if alpha != 1:
        product *= alpha
    return product + (bias if beta == 1 else bias * beta)


@kernel(TABLE, aten.einsum.default)
def _einsum(equation, tensors, path=None):
    return np.einsum(equation, *tensors, optimize=True)


@lowering(TABLE, aten.embedding.default)
def _embedding(ctx, node):
    return lambda weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False: np.take(
        weight, indices, axis=0
    )


# --- attention -------------------------------------------------------------------------------------


def attention(q, k, v, mask=None, is_causal=False, scale=None, enable_gqa=False) -> np.ndarray:
    """softmax(q k^T * scale + mask) v over the last two dims; bool masks keep where True. A query
    that may attend to nothing gets zeros, as torch's CPU kernel gives (not NaN)."""
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        repeat = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, repeat, axis=-3), np.repeat(v, repeat, axis=-3)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = np.matmul(q * q.dtype.type(scale), np.swapaxes(k, -1, -2))  # fresh: masked in place
    if is_causal:
        np.copyto(scores, -np.inf, where=~np.tril(np.ones(scores.shape[-2:], dtype=bool)))
    if mask is not None:
        if mask.dtype == np.bool_:
            np.copyto(scores, -np.inf, where=~mask)
        else:
            scores += mask.astype(scores.dtype, copy=False)
    peak = np.max(scores, axis=-1, keepdims=True)
    dead = peak == -np.inf
    if dead.any():
        peak = np.where(dead, 0, peak)
    scores -= peak
    np.exp(scores, out=scores)
    scores /= np.sum(scores, axis=-1, keepdims=True)
    if dead.any():
        scores = np.where(dead, 0, scores).astype(scores.dtype, copy=False)
    return np.matmul(scores, v)


@lowering(TABLE, aten.scaled_dot_product_attention.default)
def _sdpa(ctx, node):
    dropout_p = node.kwargs.get("dropout_p", node.args[4] if len(node.args) > 4 else 0.0)
    if dropout_p:
        raise Unsupported(f"attention dropout p={dropout_p} is random; trace the model in eval mode")
    out = out_dtype(node)

    def run(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        return attention(q, k, v, attn_mask, is_causal, scale, enable_gqa).astype(out, copy=False)

    return run


# --- dropout (inference) -----------------------------------------------------------------------------


@lowering(TABLE, aten.dropout.default, aten.feature_dropout.default, aten.alpha_dropout.default,
          aten.feature_alpha_dropout.default)
def _dropout(ctx, node):
    p, train = node.args[1], node.args[2]
    if train and p:
        raise Unsupported(f"dropout p={p} in training mode is random; trace the model in eval mode")
    return lambda x, p, train: x


@lowering(TABLE, aten.native_dropout.default)
def _native_dropout(ctx, node):
    p, train = node.args[1], node.args[2]
    if train and p:
        raise Unsupported(f"dropout p={p} in training mode is random; trace the model in eval mode")
    return lambda x, p, train: (x, np.ones(x.shape, dtype=bool))
