"""numpy kernels for ATen's view, layout, indexing, concatenation and padding ops
(view/reshape/permute/expand/slice/select/index/gather/cat/split/pad...); creation and conversion
ops are in create.py.

Views stay views: reshape, permute, expand (`np.broadcast_to`, read-only), slice and select return
numpy views where torch returns views, so in-place ops see the same aliasing. Creation ops take
their dtype from the node's meta['val'] and ignore device/layout/pin_memory (CPU arrays only).
Reads nothing; writes nothing (the table is filled at import).
"""

from __future__ import annotations

import numpy as np
import torch

from fxc.codegen.numpy.context import OpTable, kernel, lowering, normalize_dim, out_dtype

aten = torch.ops.aten
TABLE: OpTable = {}


# --- views ------------------------------------------------------------------------------------------


@kernel(TABLE, aten.view.default, aten.reshape.default, aten._unsafe_view.default)
def _reshape(x, shape):
    return np.reshape(x, shape)


@kernel(TABLE, aten.view.dtype)
def _view_dtype(x, dtype):
    return x.view(dtype)


@kernel(TABLE, aten.permute.default)
def _permute(x, dims):
    return np.transpose(x, dims)


@kernel(TABLE, aten.transpose.int)
def _transpose(x, dim0, dim1):
    return np.swapaxes(x, dim0, dim1)


@kernel(TABLE, aten.t.default, aten.numpy_T.default)
def _t(x):
    return x.T


@kernel(TABLE, aten.expand.default)
def _expand(x, size, implicit=False):
    lead = len(size) - x.ndim
    shape = [x.shape[i - lead] if s == -1 else s for i, s in enumerate(size)]
    return np.broadcast_to(x, shape)


@kernel(TABLE, aten.expand_as.default)
def _expand_as(x, other):
    return np.broadcast_to(x, other.shape)


@kernel(TABLE, aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims)
def _squeeze(x, dim=None):
    dims = range(x.ndim) if dim is None else [dim] if isinstance(dim, int) else dim
    axes = tuple(d for d in (normalize_dim(d, x.ndim) for d in dims) if x.ndim and x.shape[d] == 1)
    return np.squeeze(x, axis=axes) if axes else x


@kernel(TABLE, aten.unsqueeze.default)
def _unsqueeze(x, dim):
    return np.expand_dims(x, normalize_dim(dim, x.ndim + 1))


@kernel(TABLE, aten.flatten.using_ints)
def _flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return x.reshape(1)
    start, end = normalize_dim(start_dim, x.ndim), normalize_dim(end_dim, x.ndim)
    return x.reshape(*x.shape[:start], -1, *x.shape[end + 1:])


@kernel(TABLE, aten.unflatten.int)
def _unflatten(x, dim, sizes):
    dim = normalize_dim(dim, x.ndim)
    return x.reshape(*x.shape[:dim], *sizes, *x.shape[dim + 1:])


@kernel(TABLE, aten.slice.Tensor)
def _slice(x, dim=0, start=None, end=None, step=1):
    return x[(slice(None),) * normalize_dim(dim, x.ndim) + (slice(start, end, step),)]


@kernel(TABLE, aten.narrow.default)
def _narrow(x, dim, start, length):
    start = start + x.shape[dim] if start < 0 else start
    return _slice(x, dim, start, start + length)


@kernel(TABLE, aten.select.int)
def _select(x, dim, index):
    return x[(slice(None),) * normalize_dim(dim, x.ndim) + (index,)]


@kernel(TABLE, aten.split.Tensor, aten.split_with_sizes.default, aten.split_with_sizes_copy.default)
def _split(x, split_size_or_sizes, dim=0):
    size = x.shape[dim]
    if isinstance(split_size_or_sizes, int):
        step = max(split_size_or_sizes, 1)
        sizes = [min(step, size - start) for start in range(0, size, step)] or [0]
    else:
        sizes = split_size_or_sizes
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=dim))


@kernel(TABLE, aten.chunk.default)
def _chunk(x, chunks, dim=0):
    return _split(x, -(-x.shape[dim] // chunks), dim)


@kernel(TABLE, aten.unbind.int)
def _unbind(x, dim=0):
    return tuple(np.moveaxis(x, dim, 0))


# --- combining, reordering, indexing ------------------------------------------------------------------


@lowering(TABLE, aten.cat.default, aten.concat.default)
def _cat(ctx, node):
    out = out_dtype(node)

    def run(tensors, dim=0):
        kept = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or list(tensors)  # torch skips 1-D empties
        return np.concatenate([t.astype(out, copy=False) for t in kept], axis=dim)

    return run


@lowering(TABLE, aten.stack.default)
def _stack(ctx, node):
    out = out_dtype(node)
    return lambda tensors, dim=0: np.stack([t.astype(out, copy=False) for t in tensors], axis=dim)


@kernel(TABLE, aten.repeat.default)
def _repeat(x, repeats):
    return np.tile(x.reshape((1,) * (len(repeats) - x.ndim) + x.shape), repeats)


@kernel(TABLE, aten.repeat_interleave.self_int, aten.repeat_interleave.self_Tensor)
def _repeat_interleave(x, repeats, dim=None, output_size=None):
    return np.repeat(x, repeats, axis=dim)


@kernel(TABLE, aten.roll.default)
def _roll(x, shifts, dims=()):
    return np.roll(x, shifts, axis=tuple(dims) or None)


@kernel(TABLE, aten.flip.default)
def _flip(x, dims):
    return np.flip(x, axis=tuple(dims))


@kernel(TABLE, aten.tril.default)
def _tril(x, diagonal=0):
    return np.tril(x, diagonal)


@kernel(TABLE, aten.triu.default)
def _triu(x, diagonal=0):
    return np.triu(x, diagonal)


@kernel(TABLE, aten.index.Tensor)
def _index(x, indices):
    return x[tuple(slice(None) if i is None else i for i in indices)]


@kernel(TABLE, aten.index_select.default)
def _index_select(x, dim, index):
    return np.take(x, index, axis=dim)


@kernel(TABLE, aten.gather.default)
def _gather(x, dim, index, sparse_grad=False):
    dim = normalize_dim(dim, x.ndim)
    x = x[tuple(slice(None) if d == dim else slice(0, s) for d, s in enumerate(index.shape))]
    return np.take_along_axis(x, index, axis=dim)


@lowering(TABLE, aten.index_put.default)
def _index_put(ctx, node):
    out = out_dtype(node)

    def run(x, indices, values, accumulate=False):
        result = np.array(x, dtype=out, copy=True)
        where = tuple(slice(None) if i is None else i for i in indices)
        if accumulate:
            np.add.at(result, where, values)
        else:
            result[where] = values
        return result

    return run


@lowering(TABLE, aten.scatter.src, aten.scatter.value, aten.scatter_add.default)
def _scatter(ctx, node):
    add = node.target is aten.scatter_add.default

    def run(x, dim, index, src):
        result = np.array(x, copy=True)
        dim = normalize_dim(dim, x.ndim)
        if not isinstance(src, np.ndarray):
            src = np.full(index.shape, src, dtype=x.dtype)
        src = src[tuple(slice(0, s) for s in index.shape)]
        grid = list(np.indices(index.shape, sparse=True))
        grid[dim] = index
        if add:
            np.add.at(result, tuple(grid), src)
        else:
            result[tuple(grid)] = src
        return result

    return run


@kernel(TABLE, aten.diff.default)
def _diff(x, n=1, dim=-1, prepend=None, append=None):
    ends = {k: v for k, v in (("prepend", prepend), ("append", append)) if v is not None}
    return np.diff(x, n=n, axis=dim, **ends) if n else x


@kernel(TABLE, aten.constant_pad_nd.default)
def _constant_pad(x, pad, value=0):
    return _pad(x, pad, "constant", value)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@kernel(TABLE, aten.pad.default)
def _pad(x, pad, mode="constant", value=None):
    """torch's pad list runs from the last dim backwards; negative amounts crop."""
    widths = [(0, 0)] * x.ndim
    crops = [slice(None)] * x.ndim
    for i in range(len(pad) // 2):
        dim = x.ndim - 1 - i
        before, after = pad[2 * i], pad[2 * i + 1]
        widths[dim] = (max(before, 0), max(after, 0))
        crops[dim] = slice(max(-before, 0), x.shape[dim] + max(before, 0) + max(after, 0) - max(-after, 0))
    options = {"constant_values": 0 if value is None else value} if mode == "constant" else {}
    padded = np.pad(x, widths, mode=_PAD_MODES[mode], **options) if any(w != (0, 0) for w in widths) else x
    return padded[tuple(crops)]
