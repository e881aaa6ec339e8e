"""Shared pieces of the numpy backend's op tables: the dtype map, the lowering context and the
`kernel` / `lowering` decorators every module of ops/ registers its ops with.

An op table maps a graph target (`torch.ops.aten.add.Tensor`, `operator.getitem`, ...) to a
*factory* `factory(ctx, node) -> fn`. The lowering driver (lowering.py) calls the factory once
at compile time; `fn` is then called at run time with the node's arguments, tensors replaced by
numpy arrays, SymInts by ints and torch dtypes by numpy dtypes. A factory may read compile-time
facts (the node's output dtype, constant weights through `ctx.constant`) and raise
`Unsupported(reason)` for argument combinations it cannot reproduce exactly.

    @kernel(TABLE, aten.relu.default)                 # fn is the kernel itself
    def relu(x): return np.maximum(x, 0)

    @lowering(TABLE, aten.linear.default)             # fn is built per node
    def linear(ctx, node): ...; return run

Reads nothing from disk; writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.fx

Factory = Callable[["LoweringContext", torch.fx.Node], Callable[..., Any]]
OpTable = dict[Any, Factory]

NUMPY_DTYPES: dict[torch.dtype, np.dtype] = {
    torch.float64: np.dtype(np.float64),
    torch.float32: np.dtype(np.float32),
    torch.float16: np.dtype(np.float16),
    torch.int64: np.dtype(np.int64),
    torch.int32: np.dtype(np.int32),
    torch.int16: np.dtype(np.int16),
    torch.int8: np.dtype(np.int8),
    torch.uint8: np.dtype(np.uint8),
    torch.bool: np.dtype(np.bool_),
}


class Unsupported(Exception):
    """Raised by a factory at compile time: the node cannot be lowered exactly; the message says why."""


class NotConstant(Exception):
    """`ctx.constant(arg)` on an argument only known at run time."""


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    if dtype not in NUMPY_DTYPES:
        raise Unsupported(f"dtype {dtype} has no numpy equivalent (numpy lacks bfloat16 and complex halves)")
    return NUMPY_DTYPES[dtype]


def out_dtype(node: torch.fx.Node, index: int | None = None) -> np.dtype:
    """The numpy dtype of the node's (index-th) output, from meta['val']."""
    val = node.meta.get("val")
    if index is not None:
        val = val[index]
    if not isinstance(val, torch.Tensor):
        raise Unsupported("the node has no tensor meta['val']; run fxc.ir.refresh_meta(gm)")
    return numpy_dtype(val.dtype)


def meta_of(arg: Any) -> Any:
    """A node argument as torch's type promotion sees it: the fake tensor of a node, else the value."""
    return arg.meta.get("val") if isinstance(arg, torch.fx.Node) else arg


def result_dtype(*args: Any) -> np.dtype:
    """torch's promoted dtype of tensor/scalar operands (torch.result_type semantics: n-d tensors,
    then 0-d tensors, then Python scalars, each only raising the category: bool < int < float)."""
    values = [meta_of(a) for a in args if a is not None]
    acc = values[0]
    for value in values[1:]:
        if not isinstance(acc, torch.Tensor) and not isinstance(value, torch.Tensor):
            acc = acc + value  # two Python scalars: Python's own promotion
            continue
        dtype = torch.result_type(acc, value)
        rank = max(_rank(acc), _rank(value))
        acc = torch.empty((1,) * rank, dtype=dtype, device="meta")
    dtype = acc.dtype if isinstance(acc, torch.Tensor) else torch.tensor(acc).dtype
    return numpy_dtype(dtype)


def _rank(value: Any) -> int:
    """0 for scalars and 0-d tensors, 1 for tensors with dims (all torch's promotion looks at)."""
    return int(isinstance(value, torch.Tensor) and value.dim() > 0)


class LoweringContext:
    """What a factory may ask at compile time. `constant(arg)` returns the numpy value of a weight
    or folded node (raises NotConstant otherwise); `note(text)` records a kernel choice for the report;
    `options` is the backend's option object."""

    def __init__(self, constants: dict[torch.fx.Node, Any], options: Any):
        self._constants = constants
        self.options = options
        self.notes: list[str] = []

    def is_constant(self, arg: Any) -> bool:
        return not isinstance(arg, torch.fx.Node) or arg in self._constants

    def constant(self, arg: Any) -> Any:
        if not isinstance(arg, torch.fx.Node):
            return arg
        if arg not in self._constants:
            raise NotConstant(arg.name)
        return self._constants[arg]

    def note(self, text: str) -> None:
        self.notes.append(text)


def kernel(table: OpTable, *targets: Any) -> Callable[[Callable], Callable]:
    """Register `fn` as the run-time kernel of `targets` (no compile-time work)."""

    def register(fn: Callable) -> Callable:
        for target in targets:
            table[target] = lambda ctx, node, fn=fn: fn
        return fn

    return register


def lowering(table: OpTable, *targets: Any) -> Callable[[Factory], Factory]:
    """Register `factory(ctx, node) -> fn` for `targets`."""

    def register(factory: Factory) -> Factory:
        for target in targets:
            table[target] = factory
        return factory

    return register


def as_array(value: Any, dtype: np.dtype | None = None) -> np.ndarray:
    """numpy array of `value`; a 0-d result of a reduction stays an ndarray, not a numpy scalar."""
    array = np.asarray(value)
    return array if dtype is None or array.dtype == dtype else array.astype(dtype)


def normalize_dim(dim: int, ndim: int) -> int:
    return dim + max(ndim, 1) if dim < 0 else dim
