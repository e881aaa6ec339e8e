"""The closed op set a saved model may call: what `fxc.load` accepts as a node target, nothing else.

A manifest names each call target by a string. `resolve(name)` turns the string into the callable
only if it is in this set, so no file can make fxc call anything outside it. The set is:

- the ATen overloads of the canonical IR (exactly the ones the reference numpy backend lowers; a
  test keeps the two equal, so a graph every backend can run is a graph fxc.load accepts),
- the fxc ops of fxc/ir/ops.py (`OPS`),
- the Python functions torch.export writes for arithmetic on symbolic sizes (`PYTHON_FUNCTIONS`),
  each with its arity; their arguments are checked by fxc/ir/graph_schema.py before anything runs.

No entry reads or writes files, imports, or evaluates text. Reads and writes nothing itself.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable

import torch

from fxc.ir import ops

ATEN = frozenset(
    """
    __and__.Scalar __and__.Tensor __or__.Scalar __or__.Tensor __xor__.Scalar __xor__.Tensor
    _adaptive_avg_pool2d.default _assert_async.default _assert_async.msg _assert_scalar.default
    _assert_tensor_metadata.default _functional_assert_async.msg
    _functional_sym_constrain_range_for_size.default _local_scalar_dense.default _log_softmax.default
    _native_batch_norm_legit_no_training.default _softmax.default _to_copy.default _unsafe_view.default
    abs.default abs_.default acos.default acos_.default adaptive_avg_pool1d.default
    adaptive_avg_pool2d.default add.Scalar add.Tensor add_.Scalar add_.Tensor addbmm.default
    addbmm_.default addmm.default addmm_.default alias.default all.default all.dim all.dims
    alpha_dropout.default alpha_dropout_.default amax.default amin.default any.default any.dim any.dims
    arange.default arange.start arange.start_step argmax.default argmin.default asin.default
    asin_.default atan.default atan2.default atan2_.default atan_.default avg_pool1d.default
    avg_pool2d.default baddbmm.default baddbmm_.default batch_norm.default bitwise_and.Scalar
    bitwise_and.Tensor bitwise_and_.Scalar bitwise_and_.Tensor bitwise_not.default bitwise_not_.default
    bitwise_or.Scalar bitwise_or.Tensor bitwise_or_.Scalar bitwise_or_.Tensor bitwise_xor.Scalar
    bitwise_xor.Tensor bitwise_xor_.Scalar bitwise_xor_.Tensor bmm.default cat.default ceil.default
    ceil_.default chunk.default clamp.Tensor clamp.default clamp_.Tensor clamp_.default clamp_max.Tensor
    clamp_max.default clamp_max_.Tensor clamp_max_.default clamp_min.Tensor clamp_min.default
    clamp_min_.Tensor clamp_min_.default clone.default concat.default constant_pad_nd.default
    contiguous.default conv1d.default conv1d.padding conv2d.default conv2d.padding convolution.default
    copy.default copy_.default cos.default cos_.default cosh.default cosh_.default cumprod.default
    cumprod_.default cumsum.default cumsum_.default detach.default detach_.default diff.default
    div.Scalar div.Scalar_mode div.Tensor div.Tensor_mode div_.Scalar div_.Scalar_mode div_.Tensor
    div_.Tensor_mode dot.default dropout.default dropout_.default einsum.default elu.default
    elu_.default embedding.default empty.memory_format empty_like.default eq.Scalar eq.Tensor eq_.Scalar
    eq_.Tensor erf.default erf_.default exp.default exp2.default exp2_.default exp_.default
    expand.default expand_as.default expm1.default expm1_.default feature_alpha_dropout.default
    feature_alpha_dropout_.default feature_dropout.default feature_dropout_.default fill.Scalar
    fill.Tensor fill_.Scalar fill_.Tensor flatten.using_ints flip.default floor.default floor_.default
    floor_divide.Scalar floor_divide.default floor_divide_.Scalar fmax.default fmin.default fmod.Scalar
    fmod.Tensor fmod_.Scalar fmod_.Tensor full.default full_like.default gather.default ge.Scalar
    ge.Tensor ge_.Scalar ge_.Tensor gelu.default gelu_.default group_norm.default gt.Scalar gt.Tensor
    gt_.Scalar gt_.Tensor hardsigmoid.default hardsigmoid_.default hardswish.default hardswish_.default
    hardtanh.default hardtanh_.default index.Tensor index_put.default index_put_.default
    index_select.default isfinite.default isinf.default isnan.default item.default layer_norm.default
    le.Scalar le.Tensor le_.Scalar le_.Tensor leaky_relu.default leaky_relu_.default lerp.Scalar
    lerp.Tensor lerp_.Scalar lerp_.Tensor lift_fresh.default lift_fresh_copy.default
    linalg_vector_norm.default linear.default log.default log10.default log10_.default log1p.default
    log1p_.default log2.default log2_.default log_.default log_softmax.int logical_and.default
    logical_and_.default logical_not.default logical_not_.default logical_or.default logical_or_.default
    logical_xor.default logical_xor_.default logit.default logit_.default logsumexp.default lt.Scalar
    lt.Tensor lt_.Scalar lt_.Tensor masked_fill.Scalar masked_fill.Tensor masked_fill_.Scalar
    masked_fill_.Tensor matmul.default max.default max.dim max_pool1d.default max_pool2d.default
    maximum.default mean.default mean.dim min.default min.dim minimum.default mish.default mish_.default
    mm.default mul.Scalar mul.Tensor mul_.Scalar mul_.Tensor mv.default narrow.default
    native_dropout.default native_layer_norm.default ne.Scalar ne.Tensor ne_.Scalar ne_.Tensor
    neg.default neg_.default new_empty.default new_full.default new_ones.default new_zeros.default
    numpy_T.default ones.default ones_like.default pad.default permute.default positive.default
    pow.Scalar pow.Tensor_Scalar pow.Tensor_Tensor pow_.Scalar prod.default prod.dim_int
    reciprocal.default reciprocal_.default relu.default relu6.default relu6_.default relu_.default
    remainder.Scalar remainder.Tensor remainder_.Scalar remainder_.Tensor repeat.default
    repeat_interleave.self_Tensor repeat_interleave.self_int reshape.default rms_norm.default
    roll.default round.decimals round.default round_.decimals round_.default rsqrt.default
    rsqrt_.default rsub.Scalar rsub.Tensor scalar_tensor.default scaled_dot_product_attention.default
    scatter.src scatter.value scatter_.src scatter_.value scatter_add.default scatter_add_.default
    select.int sigmoid.default sigmoid_.default sign.default sign_.default silu.default silu_.default
    sin.default sin_.default sinh.default sinh_.default slice.Tensor softmax.int softplus.default
    split.Tensor split_with_sizes.default split_with_sizes_copy.default sqrt.default sqrt_.default
    square.default square_.default squeeze.default squeeze.dim squeeze.dims squeeze_.default
    squeeze_.dim squeeze_.dims stack.default std.correction std.dim sub.Scalar sub.Tensor sub_.Scalar
    sub_.Tensor sum.default sum.dim_IntList sym_constrain_range.default
    sym_constrain_range_for_size.default sym_numel.default sym_size.int sym_storage_offset.default
    sym_stride.int t.default t_.default tan.default tan_.default tanh.default tanh_.default to.device
    to.dtype to.dtype_layout to.other transpose.int tril.default tril_.default triu.default
    triu_.default true_divide.Tensor true_divide_.Tensor trunc.default trunc_.default type_as.default
    unbind.int unflatten.int unsqueeze.default unsqueeze_.default upsample_nearest2d.vec var.correction
    var.dim view.default view.dtype where.Scalar where.ScalarOther where.ScalarSelf where.self
    zero.default zero_.default zeros.default zeros_like.default
    """.split()
)

# name in the manifest -> (function, number of positional arguments)
PYTHON_FUNCTIONS: dict[str, tuple[Callable, int]] = {
    **{f"operator.{n}": (getattr(operator, n), 2) for n in (
        "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "eq", "ne", "lt", "le", "gt", "ge",
        "and_", "or_", "getitem")},
    **{f"operator.{n}": (getattr(operator, n), 1) for n in ("neg", "pos", "abs", "not_")},
    **{f"math.{n}": (getattr(math, n), 1) for n in ("ceil", "floor", "sqrt", "trunc")},
    **{f"torch.{n}": (getattr(torch, n), 1) for n in ("sym_float", "sym_int", "sym_not", "_sym_sqrt")},
    **{f"torch.{n}": (getattr(torch, n), 2) for n in ("sym_max", "sym_min")},
    "torch.sym_ite": (torch.sym_ite, 3),
}


def op_name(op: torch._ops.OpOverload) -> str:
    """How a manifest names a torch op: torch.ops.<namespace>.<op>.<overload>."""
    return f"torch.ops.{op.namespace}.{op._opname}.{op._overloadname}"


@functools.cache
def fxc_op_names() -> frozenset[str]:
    return frozenset(op_name(op) for op in ops.OPS)


@functools.cache
def allowed_names() -> frozenset[str]:
    """Every target name a manifest may use."""
    return frozenset(f"torch.ops.aten.{n}" for n in ATEN) | fxc_op_names() | frozenset(PYTHON_FUNCTIONS)


def python_name(target: Callable) -> str | None:
    """The manifest name of a Python function in the set, or None."""
    for name, (function, _) in PYTHON_FUNCTIONS.items():
        if function is target:
            return name
    return None


def resolve(name: str) -> Callable | None:
    """The callable `name` stands for, or None when it is not in the set (never imports anything)."""
    if name in PYTHON_FUNCTIONS:
        return PYTHON_FUNCTIONS[name][0]
    if name not in allowed_names():
        return None
    _, _, namespace, opname, overload = name.split(".")
    return getattr(getattr(getattr(torch.ops, namespace), opname), overload)
