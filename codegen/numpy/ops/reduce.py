"""numpy kernels for ATen's reductions and scans: sum/mean/prod, max/min (values and indices),
any/all, var/std, norms, softmax/log_softmax/logsumexp, cumsum/cumprod.

Dims follow torch: an empty or absent dim list reduces everything; integer and bool sums
accumulate in int64; results get the node's dtype. Float32 sums are computed in float32 (numpy's
pairwise summation), so they differ from torch's only in rounding order. Reads nothing; writes
nothing (the table is filled at import).
"""

from __future__ import annotations

import numpy as np
import torch

from fxc.codegen.numpy.context import OpTable, as_array, lowering, out_dtype

aten = torch.ops.aten
TABLE: OpTable = {}


def _axes(dim) -> tuple[int, ...] | None:
    if dim is None:
        return None
    if isinstance(dim, int):
        return (dim,)
    return tuple(dim) or None


def _reduction(fn, float_compute: bool = False):
    """fn(x, axis, keepdims, dtype) for ops shaped like sum.dim_IntList(x, dim, keepdim, dtype)."""

    def factory(ctx, node):
        out = out_dtype(node)

        def run(x, dim=None, keepdim=False, dtype=None):
            x = x.astype(out, copy=False) if float_compute or out.kind != x.dtype.kind else x
            return as_array(fn(x, axis=_axes(dim), keepdims=keepdim, dtype=out), out)

        return run

    return factory


def _whole(fn):
    """The no-dim overloads (sum.default(x, dtype=None), max.default(x), ...)."""

    def factory(ctx, node):
        out = out_dtype(node)
        return lambda x, dtype=None: as_array(fn(x), out)

    return factory


lowering(TABLE, aten.sum.dim_IntList)(_reduction(np.sum))
lowering(TABLE, aten.mean.dim)(_reduction(np.mean, float_compute=True))
lowering(TABLE, aten.prod.dim_int)(_reduction(np.prod))
lowering(TABLE, aten.sum.default)(_whole(np.sum))
lowering(TABLE, aten.mean.default)(_whole(np.mean))
lowering(TABLE, aten.prod.default)(_whole(np.prod))
lowering(TABLE, aten.max.default)(_whole(np.max))
lowering(TABLE, aten.min.default)(_whole(np.min))
lowering(TABLE, aten.any.default)(_whole(np.any))
lowering(TABLE, aten.all.default)(_whole(np.all))


@lowering(TABLE, aten.amax.default, aten.amin.default)
def _amax(ctx, node):
    fn = np.max if node.target._opname == "amax" else np.min
    return lambda x, dim=(), keepdim=False: as_array(fn(x, axis=_axes(dim), keepdims=keepdim))


@lowering(TABLE, aten.any.dim, aten.any.dims, aten.all.dim, aten.all.dims)
def _any_all(ctx, node):
    fn = np.any if node.target._opname == "any" else np.all
    return lambda x, dim=None, keepdim=False: as_array(fn(x, axis=_axes(dim), keepdims=keepdim))


@lowering(TABLE, aten.max.dim, aten.min.dim)
def _max_dim(ctx, node):
    is_max = node.target._opname == "max"

    def run(x, dim, keepdim=False):
        indices = np.expand_dims((np.argmax if is_max else np.argmin)(x, axis=dim), dim)
        values = np.take_along_axis(x, indices, axis=dim)
        if not keepdim:
            values, indices = values.squeeze(dim), indices.squeeze(dim)
        return values, indices.astype(np.int64)

    return run


@lowering(TABLE, aten.argmax.default, aten.argmin.default)
def _argmax(ctx, node):
    fn = np.argmax if node.target._opname == "argmax" else np.argmin
    return lambda x, dim=None, keepdim=False: as_array(fn(x, axis=dim, keepdims=keepdim), np.dtype(np.int64))


@lowering(TABLE, aten.var.correction, aten.std.correction, aten.var.dim, aten.std.dim)
def _var(ctx, node):
    fn = np.var if node.target._opname == "var" else np.std
    out = out_dtype(node)
    by_correction = node.target._overloadname == "correction"

    def run(x, dim=None, unbiased_or_correction=None, keepdim=False, correction=None):
        if by_correction:
            ddof = 1 if correction is None and unbiased_or_correction is None else (
                correction if correction is not None else unbiased_or_correction)
        else:
            ddof = 1 if unbiased_or_correction in (None, True) else 0
        return as_array(fn(x, axis=_axes(dim), ddof=ddof, keepdims=keepdim), out)

    return run


@lowering(TABLE, aten.linalg_vector_norm.default)
def _vector_norm(ctx, node):
    out = out_dtype(node)

    def run(x, ord=2, dim=None, keepdim=False, dtype=None):
        a = np.abs(x.astype(out, copy=False))
        axis = _axes(dim)
        if ord == float("inf"):
            return as_array(np.max(a, axis=axis, keepdims=keepdim), out)
        if ord == 1:
            return as_array(np.sum(a, axis=axis, keepdims=keepdim), out)
        return as_array(np.sum(a**ord, axis=axis, keepdims=keepdim) ** (1 / ord), out)

    return run


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """exp(x - max) / sum, in x's dtype; a row of all -inf gives NaN, as in torch."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= np.sum(shifted, axis=axis, keepdims=True)
    return shifted


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@lowering(TABLE, aten.softmax.int, aten._softmax.default, aten.log_softmax.int, aten._log_softmax.default)
def _softmax(ctx, node):
    out = out_dtype(node)
    fn = softmax if "log" not in node.target._opname else log_softmax
    return lambda x, dim, dtype_or_half=None: fn(x.astype(out, copy=False), dim)


@lowering(TABLE, aten.logsumexp.default)
def _logsumexp(ctx, node):
    out = out_dtype(node)

    def run(x, dim, keepdim=False):
        x = x.astype(out, copy=False)
        axis = _axes(dim)
        peak = np.max(x, axis=axis, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0)
        total = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
        return total if keepdim else np.squeeze(total, axis=axis)

    return run


@lowering(TABLE, aten.cumsum.default, aten.cumprod.default)
def _scan(ctx, node):
    out = out_dtype(node)
    fn = np.cumsum if node.target._opname == "cumsum" else np.cumprod
    return lambda x, dim, dtype=None: fn(x, axis=dim, dtype=out)
