"""numpy-side handling of the graph's symbolic and bookkeeping nodes: `aten.sym_size` and friends
(return Python ints at run time, so dynamic dims stay dynamic), arithmetic on those ints
(`operator.mul`, `torch.sym_max`, ...), `operator.getitem` on multi-output ops, `.item()`, and
export's runtime checks (`_assert_tensor_metadata`, `_assert_scalar`, range constraints), which
need no code: their factory returns None and the driver drops the node.
Reads nothing; writes nothing (the table is filled at import).
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch

from fxc.codegen.numpy.context import OpTable, kernel, lowering

aten = torch.ops.aten
TABLE: OpTable = {}


@kernel(TABLE, aten.sym_size.int)
def _sym_size(x, dim):
    return int(x.shape[dim])


@kernel(TABLE, aten.sym_numel.default)
def _sym_numel(x):
    return int(x.size)


@kernel(TABLE, aten.sym_stride.int)
def _sym_stride(x, dim):
    return int(x.strides[dim] // x.itemsize)


@kernel(TABLE, aten.sym_storage_offset.default)
def _sym_storage_offset(x):
    return 0


@kernel(TABLE, aten.item.default, aten._local_scalar_dense.default)
def _item(x):
    return np.asarray(x).item()


_CHECKS = [
    aten._assert_tensor_metadata.default, aten._assert_scalar.default, aten.sym_constrain_range.default,
    aten.sym_constrain_range_for_size.default, aten._assert_async.msg, aten._assert_async.default,
    aten._functional_sym_constrain_range_for_size.default, aten._functional_assert_async.msg,
]
for _check in _CHECKS:
    lowering(TABLE, _check)(lambda ctx, node: None)


_SCALAR_FUNCTIONS = [
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
    operator.pow, operator.neg, operator.pos, operator.abs, operator.eq, operator.ne, operator.lt,
    operator.le, operator.gt, operator.ge, operator.and_, operator.or_, operator.not_, operator.getitem,
    math.ceil, math.floor, math.sqrt, math.trunc,
]
for _fn in _SCALAR_FUNCTIONS:
    kernel(TABLE, _fn)(_fn)

_SYM_FUNCTIONS = {
    "sym_float": float, "sym_int": int, "sym_max": max, "sym_min": min, "sym_not": operator.not_,
    "sym_sqrt": math.sqrt, "sym_ite": lambda cond, a, b: a if cond else b,
}
for _name, _fn in _SYM_FUNCTIONS.items():
    if hasattr(torch, _name):
        kernel(TABLE, getattr(torch, _name))(_fn)
