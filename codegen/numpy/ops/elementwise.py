"""numpy kernels for ATen's elementwise ops: unary math and activations, binary arithmetic with
torch's type promotion, comparisons, logical/bitwise ops, where/masked_fill/clamp, and the in-place
`op_` variant of each (written into the first argument, which numpy views alias as torch views do).

Promotion follows torch, not numpy: operands are cast to the dtype torch computes in (from the
nodes' meta['val'], `result_dtype`) and the result to the node's dtype, so `int64 + 0.5` stays
float32 and `int / int` is a float32 true division. Python scalars stay Python scalars (weak, as in
torch). Reads nothing; writes nothing (the table is filled at import).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.special
import torch

from fxc.codegen.numpy.context import OpTable, kernel, lowering, out_dtype, result_dtype

aten = torch.ops.aten
TABLE: OpTable = {}


def _cast(value, dtype: np.dtype):
    """An operand in the compute dtype; Python scalars stay scalars (torch treats them as weak)."""
    if isinstance(value, np.ndarray | np.generic):
        return value.astype(dtype, copy=False)
    return value


def compute_dtype(node) -> np.dtype:
    """torch computes in the promoted dtype when it is floating (int / int divides in the output's)."""
    promoted = result_dtype(*[a for a in node.args if isinstance(a, torch.fx.Node | int | float | bool)])
    return promoted if promoted.kind in "fc" else out_dtype(node)


# --- unary ------------------------------------------------------------------------------------------


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable:
    def factory(ctx, node):
        dtype, out = compute_dtype(node), out_dtype(node)
        return lambda x, *params, **options: fn(_cast(x, dtype), *params, **options).astype(out, copy=False)

    return factory


# erf(x) ~ x * P(x^2) / Q(x^2) on |x| <= 4 (erf(4) = 1 - 1.5e-8 is 1 in float32). Coefficients fitted
# for this backend by iteratively reweighted least squares (Lawson) against scipy.special.erf on a
# 20001-point grid of [0, 4]: max abs error 2.1e-8 in float64, 4e-7 evaluated in float32 (torch's float32
# erf: 6e-8). Used instead of scipy's erf, which has no SIMD loop; float64 inputs still use scipy's.
_ERF_P = (1.1283789765334715, 0.19624101557815907, 0.053466512039730726, 0.0040033302511129475,
          0.0002880387555875175, 1.974947523052484e-06)
_ERF_Q = (1.0, 0.5072452318809767, 0.11647321461320059, 0.015443783720200365, 0.0012162918153261623,
          3.748194446730948e-05)


def erf(x: np.ndarray) -> np.ndarray:
    """erf for float16/float32 arrays by the rational fit above (in place on temporaries), else scipy's."""
    if x.dtype not in (np.float32, np.float16):
        return scipy.special.erf(x)
    number = x.dtype.type
    z = np.clip(x, -4, 4)
    t = z * z
    num, den = t * number(_ERF_P[-1]), t * number(_ERF_Q[-1])  # Horner, in place
    num += number(_ERF_P[-2])
    den += number(_ERF_Q[-2])
    for p, q in zip(_ERF_P[-3::-1], _ERF_Q[-3::-1]):
        num *= t
        num += number(p)
        den *= t
        den += number(q)
    num *= z
    num /= den
    return np.clip(num, -1, 1, out=num)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _gelu(x, approximate="none"):
    if approximate == "tanh":
        inner = x.dtype.type(math.sqrt(2 / math.pi)) * (x + x.dtype.type(0.044715) * x * x * x)
        return 0.5 * x * (1 + np.tanh(inner))
    y = erf(x * x.dtype.type(1 / math.sqrt(2)))  # a fresh array: finished in place
    y += 1
    y *= x
    y *= 0.5
    return y


def _softplus(x, beta=1, threshold=20):
    scaled = x * beta
    return np.where(scaled > threshold, x, np.log1p(np.exp(scaled)) / beta)


def _elu(x, alpha=1.0, scale=1.0, input_scale=1.0):
    return np.where(x > 0, x * scale, np.expm1(x * input_scale) * (alpha * scale))


def _hardtanh(x, min_val=-1.0, max_val=1.0):
    return np.clip(x, min_val, max_val)


def _round(x, decimals=0):
    return np.round(x, decimals)  # half to even, like torch.round


UNARY = {
    aten.abs.default: np.abs, aten.neg.default: np.negative, aten.exp.default: np.exp,
    aten.exp2.default: np.exp2, aten.expm1.default: np.expm1, aten.log.default: np.log,
    aten.log2.default: np.log2, aten.log10.default: np.log10, aten.log1p.default: np.log1p,
    aten.sqrt.default: np.sqrt, aten.rsqrt.default: lambda x: 1 / np.sqrt(x), aten.sin.default: np.sin,
    aten.cos.default: np.cos, aten.tan.default: np.tan, aten.tanh.default: np.tanh, aten.atan.default: np.arctan,
    aten.asin.default: np.arcsin, aten.acos.default: np.arccos, aten.sinh.default: np.sinh,
    aten.cosh.default: np.cosh, aten.erf.default: erf, aten.sigmoid.default: _sigmoid,
    aten.reciprocal.default: np.reciprocal, aten.square.default: np.square, aten.sign.default: np.sign,
    aten.floor.default: np.floor, aten.ceil.default: np.ceil, aten.trunc.default: np.trunc,
    aten.round.default: _round, aten.round.decimals: _round, aten.relu.default: lambda x: np.maximum(x, 0),
    aten.gelu.default: _gelu, aten.silu.default: lambda x: x / (1 + np.exp(-x)),
    aten.hardtanh.default: _hardtanh, aten.relu6.default: lambda x: np.clip(x, 0, 6),
    aten.hardswish.default: lambda x: x * np.clip(x + 3, 0, 6) / 6,
    aten.hardsigmoid.default: lambda x: np.clip(x + 3, 0, 6) / 6,
    aten.leaky_relu.default: lambda x, slope=0.01: np.where(x > 0, x, x * slope),
    aten.elu.default: _elu, aten.softplus.default: _softplus,
    aten.mish.default: lambda x: x * np.tanh(_softplus(x)),
    aten.logit.default: lambda x, eps=None: np.log(x / (1 - x)) if eps is None else _logit_eps(x, eps),
    aten.isnan.default: np.isnan, aten.isinf.default: np.isinf, aten.isfinite.default: np.isfinite,
    aten.logical_not.default: np.logical_not, aten.bitwise_not.default: np.invert,
    aten.positive.default: lambda x: x,
}


def _logit_eps(x, eps):
    x = np.clip(x, eps, 1 - eps)
    return np.log(x / (1 - x))


for _target, _fn in UNARY.items():
    lowering(TABLE, _target)(_unary(_fn))


# --- binary -------------------------------------------------------------------------------------------


def _binary(fn: Callable, compare: bool = False) -> Callable:
    def factory(ctx, node):
        dtype = result_dtype(*node.args[:2]) if compare else compute_dtype(node)
        out = out_dtype(node)

        def run(a, b, *params, **options):
            return np.asarray(fn(_cast(a, dtype), _cast(b, dtype), *params, **options)).astype(out, copy=False)

        return run

    return factory


def _add(a, b, alpha=1):
    return a + (b if alpha == 1 else b * alpha)


def _sub(a, b, alpha=1):
    return a - (b if alpha == 1 else b * alpha)


def _div(a, b, rounding_mode=None):
    if rounding_mode is None:
        return np.true_divide(a, b)
    if rounding_mode == "floor":
        return np.floor_divide(a, b)
    if np.result_type(a, b).kind == "f":
        return np.trunc(np.true_divide(a, b))
    quotient = np.floor_divide(a, b)  # integers: round toward zero
    return quotient + ((np.remainder(a, b) != 0) & ((np.asarray(a) < 0) != (np.asarray(b) < 0)))


ARITHMETIC = {
    (aten.add.Tensor, aten.add.Scalar): _add,
    (aten.sub.Tensor, aten.sub.Scalar): _sub,
    (aten.rsub.Tensor, aten.rsub.Scalar): lambda a, b, alpha=1: _sub(b, a, alpha),
    (aten.mul.Tensor, aten.mul.Scalar): np.multiply,
    (aten.div.Tensor, aten.div.Scalar, aten.div.Tensor_mode, aten.div.Scalar_mode): _div,
    (aten.true_divide.Tensor,): np.true_divide,
    (aten.floor_divide.default, aten.floor_divide.Scalar): np.floor_divide,
    (aten.remainder.Tensor, aten.remainder.Scalar): np.remainder,
    (aten.fmod.Tensor, aten.fmod.Scalar): np.fmod,
    (aten.pow.Tensor_Tensor, aten.pow.Tensor_Scalar, aten.pow.Scalar): np.power,
    (aten.maximum.default,): np.maximum, (aten.minimum.default,): np.minimum,
    (aten.fmax.default,): np.fmax, (aten.fmin.default,): np.fmin, (aten.atan2.default,): np.arctan2,
    (aten.bitwise_and.Tensor, aten.bitwise_and.Scalar, aten.__and__.Tensor, aten.__and__.Scalar): np.bitwise_and,
    (aten.bitwise_or.Tensor, aten.bitwise_or.Scalar, aten.__or__.Tensor, aten.__or__.Scalar): np.bitwise_or,
    (aten.bitwise_xor.Tensor, aten.bitwise_xor.Scalar, aten.__xor__.Tensor, aten.__xor__.Scalar): np.bitwise_xor,
}
COMPARISONS = {
    (aten.eq.Tensor, aten.eq.Scalar): np.equal, (aten.ne.Tensor, aten.ne.Scalar): np.not_equal,
    (aten.lt.Tensor, aten.lt.Scalar): np.less, (aten.le.Tensor, aten.le.Scalar): np.less_equal,
    (aten.gt.Tensor, aten.gt.Scalar): np.greater, (aten.ge.Tensor, aten.ge.Scalar): np.greater_equal,
    (aten.logical_and.default,): np.logical_and, (aten.logical_or.default,): np.logical_or,
    (aten.logical_xor.default,): np.logical_xor,
}
for _targets, _fn in ARITHMETIC.items():
    lowering(TABLE, *_targets)(_binary(_fn))
for _targets, _fn in COMPARISONS.items():
    lowering(TABLE, *_targets)(_binary(_fn, compare=True))


# --- selection and clamping ------------------------------------------------------------------------------


@lowering(TABLE, aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def _where(ctx, node):
    out = out_dtype(node)
    return lambda cond, a, b: np.where(cond, _cast(a, out), _cast(b, out)).astype(out, copy=False)


@lowering(TABLE, aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def _masked_fill(ctx, node):
    out = out_dtype(node)
    return lambda x, mask, value: np.where(mask, np.asarray(value).astype(out), x).astype(out, copy=False)


@lowering(TABLE, aten.clamp.default, aten.clamp.Tensor, aten.clamp_min.default, aten.clamp_min.Tensor,
          aten.clamp_max.default, aten.clamp_max.Tensor)
def _clamp(ctx, node):
    out = out_dtype(node)
    name = node.target._opname

    def run(x, low=None, high=None):
        if name == "clamp_max":
            low, high = None, low
        x = _cast(x, out)
        if low is not None:
            x = np.maximum(x, _cast(low, out))
        if high is not None:
            x = np.minimum(x, _cast(high, out))
        return np.asarray(x).astype(out, copy=False)

    return run


@kernel(TABLE, aten.lerp.Scalar, aten.lerp.Tensor)
def _lerp(start, end, weight):
    return start + weight * (end - start)


# --- in-place variants: op_(x, ...) writes op(x, ...) into x and returns x ------------------------------------


def _in_place(factory: Callable) -> Callable:
    def make(ctx, node):
        fn = factory(ctx, node)

        def run(x, *args, **kwargs):
            result = fn(x, *args, **kwargs)
            if isinstance(x, np.ndarray) and x.flags.writeable:
                np.copyto(x, result, casting="unsafe")
                return x
            return result  # read-only (a weight, an expanded view): the value, without the write

        return run

    return make


def add_in_place_variants(table: OpTable) -> None:
    """Register `aten.<op>_.<overload>` for every `aten.<op>.<overload>` in `table` that has one."""
    for target, factory in list(table.items()):
        packet = getattr(aten, f"{getattr(target, '_opname', '')}_", None)
        variant = getattr(packet, getattr(target, "_overloadname", ""), None) if packet is not None else None
        if variant is not None and variant not in table:
            table[variant] = _in_place(factory)

