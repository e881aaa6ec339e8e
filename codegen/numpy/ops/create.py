"""numpy kernels for ATen's creation and conversion ops: arange, full/zeros/ones/empty and their
new_*/*_like forms, scalar_tensor, to/_to_copy/type_as, clone/contiguous/detach/alias, copy.

Creation ops take their dtype from the node's meta['val'] and ignore device/layout/pin_memory (CPU
arrays only); `empty` is zero-filled (deterministic). `.to` without copy=True returns its input when
the dtype already matches, as torch does. Reads nothing; writes nothing (the table is filled at import).
"""

from __future__ import annotations

import numpy as np
import torch

from fxc.codegen.numpy.context import OpTable, kernel, lowering, out_dtype

aten = torch.ops.aten
TABLE: OpTable = {}


# --- creation -------------------------------------------------------------------------------------


@lowering(TABLE, aten.arange.default, aten.arange.start, aten.arange.start_step)
def _arange(ctx, node):
    out = out_dtype(node)
    with_start = node.target._overloadname != "default"

    def run(*args, **options):
        numbers = [a for a in args if isinstance(a, (int, float, np.number))]
        if with_start:
            start, end, step = (*numbers[:2], numbers[2] if len(numbers) > 2 else 1)
        else:
            start, end, step = 0, numbers[0], 1
        count = max(int(np.ceil((end - start) / step)), 0)
        if out.kind == "f":
            return (np.arange(count, dtype=np.float64) * step + start).astype(out)
        return np.arange(start, start + count * step, step, dtype=out)[:count]

    return run


def _filled(fill_index: int | None, value: float | None, like: bool):
    """Factories for full/zeros/ones/empty and their new_*/*_like forms."""

    def factory(ctx, node):
        out = out_dtype(node)
        shape_index = 1 if node.target._opname.startswith("new_") else 0  # new_zeros(self, size, ...)

        def run(*args, **options):
            shape = args[0].shape if like else args[shape_index]
            fill = args[fill_index] if fill_index is not None else value
            return np.full(shape, fill, dtype=out)

        return run

    return factory


for _targets, _fill_index, _value, _like in [
    ((aten.full.default,), 1, None, False), ((aten.new_full.default,), 2, None, False),
    ((aten.full_like.default,), 1, None, True),
    ((aten.zeros.default, aten.new_zeros.default, aten.empty.memory_format, aten.new_empty.default), None, 0, False),
    ((aten.ones.default, aten.new_ones.default), None, 1, False),
    ((aten.zeros_like.default, aten.empty_like.default), None, 0, True), ((aten.ones_like.default,), None, 1, True),
]:
    lowering(TABLE, *_targets)(_filled(_fill_index, _value, _like))


@lowering(TABLE, aten.fill.Scalar, aten.fill.Tensor, aten.zero.default)
def _fill(ctx, node):
    out = out_dtype(node)
    return lambda x, value=0: np.full(x.shape, value, dtype=out)


@lowering(TABLE, aten.scalar_tensor.default)
def _scalar_tensor(ctx, node):
    out = out_dtype(node)
    return lambda value, **options: np.array(value, dtype=out)


# --- conversion and copies -----------------------------------------------------------------------------

_COPY_POSITION = {"dtype": 3, "device": 4, "other": 3, "dtype_layout": None}


@lowering(TABLE, aten.to.dtype, aten.to.device, aten.to.dtype_layout, aten.to.other, aten._to_copy.default,
          aten.type_as.default)
def _to(ctx, node):
    out = out_dtype(node)
    overload = node.target._overloadname
    position = _COPY_POSITION.get(overload)
    copy = node.kwargs.get("copy", False) or node.target is aten._to_copy.default
    if position is not None and len(node.args) > position:
        copy = copy or bool(node.args[position])
    return lambda x, *args, **options: np.array(x, dtype=out, copy=True) if copy else x.astype(out, copy=False)


@kernel(TABLE, aten.clone.default, aten.lift_fresh_copy.default)
def _clone(x, memory_format=None):
    return np.array(x, copy=True)


@kernel(TABLE, aten.contiguous.default)
def _contiguous(x, memory_format=None):
    return np.ascontiguousarray(x)


@kernel(TABLE, aten.detach.default, aten.alias.default, aten.lift_fresh.default)
def _alias(x):
    return x


@lowering(TABLE, aten.copy.default)
def _copy(ctx, node):
    out = out_dtype(node)
    return lambda x, src, non_blocking=False: np.array(np.broadcast_to(src, x.shape), dtype=out, copy=True)
