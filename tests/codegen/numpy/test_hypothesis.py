"""Hypothesis-generated shapes (ragged sizes, size-1 dims, strides, dilations, groups) for the
numpy lowerings of linear, matmul, conv2d and the quantized / int8 linears, against torch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fxc.codegen.numpy import quant
from fxc.codegen.numpy.ops.conv import conv2d
from fxc.codegen.numpy.ops.nn import _matmul, linear
from fxc.ir import qformat
from fxc.ir.ops import int8_matmul_reference
from tests.codegen.numpy.numpy_check import FP32_RTOL, relative_error

SETTINGS = settings(max_examples=20, deadline=None)
size = st.integers(1, 9)


def _close(got: np.ndarray, want: torch.Tensor) -> None:
    got = torch.from_numpy(np.require(got, requirements="C"))
    assert got.shape == want.shape and got.dtype == want.dtype
    assert relative_error(got, want) <= FP32_RTOL


@SETTINGS
@given(lead=st.lists(size, min_size=0, max_size=3), k=size, n=size, bias=st.booleans())
def test_linear_any_leading_shape(lead, k, n, bias):
    x, w = torch.randn(*lead, k), torch.randn(n, k)
    b = torch.randn(n) if bias else None
    _close(linear(x.numpy(), w.numpy().T, None if b is None else b.numpy()), F.linear(x, w, b))


@SETTINGS
@given(batch=st.lists(size, max_size=3), data=st.data(), m=size, k=size, n=size, vector_a=st.booleans(),
       vector_b=st.booleans())
def test_matmul_broadcasting_and_vectors(batch, data, m, k, n, vector_a, vector_b):
    dropped = data.draw(st.integers(0, len(batch)))  # b has fewer batch dims, some of size 1
    ones = data.draw(st.lists(st.booleans(), min_size=len(batch), max_size=len(batch)))
    batch_b = [1 if one else s for s, one in zip(batch, ones)][dropped:]
    a = torch.randn(k) if vector_a else torch.randn(*batch, m, k)
    b = torch.randn(k) if vector_b else torch.randn(*batch_b, k, n)
    _close(_matmul(a.numpy(), b.numpy()), torch.matmul(a, b))


@SETTINGS
@given(n=st.integers(1, 2), groups=st.integers(1, 3), cin=st.integers(1, 3), cout=st.integers(1, 3),
       kh=st.integers(1, 4), kw=st.integers(1, 4), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)), pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       h=st.integers(1, 9), w=st.integers(1, 9), depthwise=st.booleans(), bias=st.booleans())
def test_conv2d_strides_dilations_groups(n, groups, cin, cout, kh, kw, stride, dilation, pad, h, w, depthwise, bias):
    if depthwise:
        cin, cout = 1, 1  # per group: one input channel, one output channel
    channels, outputs = groups * cin, groups * cout
    h = max(h, dilation[0] * (kh - 1) + 1 - 2 * pad[0])
    w = max(w, dilation[1] * (kw - 1) + 1 - 2 * pad[1])
    x, weight = torch.randn(n, channels, h, w), torch.randn(outputs, cin, kh, kw)
    b = torch.randn(outputs) if bias else None
    want = F.conv2d(x, weight, b, stride, pad, dilation, groups)
    got = conv2d(x.numpy(), weight.numpy(), None if b is None else b.numpy(), list(stride), list(pad),
                 list(dilation), groups)
    _close(got, want)


@SETTINGS
@given(rows=size, n=size, half_k=st.integers(1, 12), bits=st.sampled_from([4, 8]), grouped=st.booleans(),
       symmetric=st.booleans())
def test_quantized_linear_ragged_shapes(rows, n, half_k, bits, grouped, symmetric):
    k = 2 * half_k
    group_size = 2 if grouped else None
    q = qformat.quantize_rtn(torch.randn(n, k), bits, group_size, symmetric)
    x = torch.randn(rows, k)
    want = torch.ops.fxc.quantized_linear(x, q.qweight, q.scale, q.zero_point, None, bits)
    zero = None if q.zero_point is None else q.zero_point.numpy()

    def weight_rows(n0, n1):
        z = None if zero is None else zero[n0:n1]
        return quant.dequantize_rows(q.qweight.numpy()[n0:n1], q.scale.numpy()[n0:n1], z, bits)

    got = torch.from_numpy(quant.tiled_linear(x.numpy(), n, weight_rows, np.dtype(np.float32)))
    # random data can cancel to an output near 0, where a norm-relative error says nothing about the kernel:
    # bound each element by the size of its summands, |x| @ |W|ᵀ (float32 summation error is relative to it)
    weight = qformat.dequantize(q.qweight, q.scale, q.zero_point, bits).view(n, k)
    bound = x.abs() @ weight.abs().T
    assert got.shape == want.shape and got.dtype == want.dtype
    assert ((got - want).abs() <= FP32_RTOL * bound + 1e-30).all()


@SETTINGS
@given(rows=size, n=size, k=st.integers(1, 2500), tile=st.integers(1, 4))
def test_int8_matmul_exact_any_shape(rows, n, k, tile):
    qx = torch.randint(-127, 128, (rows, k), dtype=torch.int8)
    qw = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    got = quant.int8_matmul_exact(qx.numpy(), qw.numpy(), tile_rows=tile)
    assert np.array_equal(got, int8_matmul_reference(qx, qw).numpy())
