"""numpy kernels for convolution and pooling: conv1d/conv2d (groups, depthwise, dilation, stride,
'same'/'valid' padding), max/avg pooling (ceil_mode, count_include_pad), adaptive average pooling,
nearest upsampling.

conv2d, by case: 1x1 kernels are one GEMM over [C, H*W]; depthwise kernels (one input channel per
group) are a multiply-add per kernel tap, with no im2col; everything else is im2col through
`sliding_window_view` then one (batched, per group) GEMM. Reads nothing; writes nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from fxc.codegen.numpy.context import OpTable, Unsupported, kernel, lowering

aten = torch.ops.aten
TABLE: OpTable = {}


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


def _same_padding(kernel_size, dilation) -> list[tuple[int, int]]:
    """torch's 'same': total d*(k-1), the odd extra on the right/bottom."""
    totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
    return [(t // 2, t - t // 2) for t in totals]


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """NCHW conv2d with an OIHW weight, torch's semantics."""
    unbatched = x.ndim == 3
    x = x[None] if unbatched else x
    out_channels, group_channels, kh, kw = weight.shape
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    if isinstance(padding, str):
        pads = _same_padding((kh, kw), (dh, dw)) if padding == "same" else [(0, 0), (0, 0)]
    else:
        pads = [(p, p) for p in _pair(padding)]
    if any(p != (0, 0) for p in pads):
        x = np.pad(x, [(0, 0), (0, 0), *pads])
    n, channels, height, width = x.shape
    out_h = (height - dh * (kh - 1) - 1) // sh + 1
    out_w = (width - dw * (kw - 1) - 1) // sw + 1
    if group_channels == 1 and out_channels == groups == channels:
        y = _depthwise(x, weight, (sh, sw), (dh, dw), out_h, out_w)
    elif kh == kw == 1:
        cols = x[:, :, : sh * (out_h - 1) + 1 : sh, : sw * (out_w - 1) + 1 : sw].reshape(n, groups, group_channels, -1)
        y = _grouped_gemm(weight.reshape(groups, -1, group_channels), cols)
    else:
        windows = sliding_window_view(x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
        windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # [N, C, out_h, out_w, kh, kw]
        cols = windows.transpose(0, 1, 4, 5, 2, 3).reshape(n, groups, group_channels * kh * kw, out_h * out_w)
        y = _grouped_gemm(weight.reshape(groups, out_channels // groups, -1), cols)
    y = y.reshape(n, out_channels, out_h, out_w)
    if bias is not None:
        y += bias.reshape(-1, 1, 1)
    return y[0] if unbatched else y


def _grouped_gemm(weight: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """weight [G, O/G, C/G*k] @ cols [N, G, C/G*k, P] -> [N, O, P]."""
    if weight.shape[0] == 1:
        return np.matmul(weight[0], cols[:, 0])
    return np.matmul(weight[None], cols).reshape(cols.shape[0], -1, cols.shape[-1])


def _depthwise(x, weight, stride, dilation, out_h, out_w) -> np.ndarray:
    """One multiply-add per kernel tap: y[n, c] = sum_ij x[n, c, i.., j..] * w[c, 0, i, j]."""
    (sh, sw), (dh, dw) = stride, dilation
    y = np.zeros((x.shape[0], x.shape[1], out_h, out_w), dtype=np.result_type(x, weight))
    product = np.empty_like(y)
    for i in range(weight.shape[2]):
        for j in range(weight.shape[3]):
            patch = x[:, :, i * dh : i * dh + sh * (out_h - 1) + 1 : sh, j * dw : j * dw + sw * (out_w - 1) + 1 : sw]
            np.multiply(patch, weight[:, 0, i, j].reshape(-1, 1, 1), out=product)
            y += product
    return y


@kernel(TABLE, aten.conv2d.default, aten.conv2d.padding)
def _conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return conv2d(x, weight, bias, stride, padding, dilation, groups)


@kernel(TABLE, aten.conv1d.default, aten.conv1d.padding)
def _conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    padding = padding if isinstance(padding, str) else [0, _pair(padding)[0]]
    stride, dilation = [1, _pair(stride)[0]], [1, _pair(dilation)[0]]
    y = conv2d(x[..., None, :], weight[..., None, :], bias, stride, padding, dilation, groups)
    return y[..., 0, :]


@lowering(TABLE, aten.convolution.default)
def _convolution(ctx, node):
    transposed = node.args[6]
    if transposed or len(node.args[3]) != 2:
        raise Unsupported("only 2-D, non-transposed aten.convolution is lowered")
    return lambda x, w, b, stride, padding, dilation, transposed, output_padding, groups: conv2d(
        x, w, b, stride, padding, dilation, groups
    )


# --- pooling ------------------------------------------------------------------------------------------


def _pool_geometry(size, kernel, stride, padding, dilation, ceil_mode) -> tuple[int, int]:
    """(output size, extra right padding that ceil_mode needs)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    extra = max((out - 1) * stride + dilation * (kernel - 1) + 1 - (size + 2 * padding), 0)
    return out, extra


def _windows(x, kernel, stride, padding, dilation, ceil_mode, fill):
    """Pooling windows [..., out_h, out_w, kh, kw] of x [..., H, W], padded with `fill`."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    out_h, extra_h = _pool_geometry(x.shape[-2], kh, sh, ph, dh, ceil_mode)
    out_w, extra_w = _pool_geometry(x.shape[-1], kw, sw, pw, dw, ceil_mode)
    widths = [(0, 0)] * (x.ndim - 2) + [(ph, ph + extra_h), (pw, pw + extra_w)]
    padded = np.pad(x, widths, constant_values=fill) if any(w != (0, 0) for w in widths) else x
    windows = sliding_window_view(padded, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(-2, -1))
    return windows[..., ::sh, ::sw, ::dh, ::dw][..., :out_h, :out_w, :, :]


@kernel(TABLE, aten.max_pool2d.default)
def _max_pool2d(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    kernel = _pair(kernel_size)
    stride = _pair(stride) if stride else kernel
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    windows = _windows(x, kernel, stride, _pair(padding), _pair(dilation), ceil_mode, fill)
    return windows.max(axis=(-2, -1))


@kernel(TABLE, aten.avg_pool2d.default)
def _avg_pool2d(x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    kernel = _pair(kernel_size)
    stride, padding = (_pair(stride) if stride else kernel), _pair(padding)
    total = _windows(x, kernel, stride, padding, (1, 1), ceil_mode, 0).sum(axis=(-2, -1), dtype=x.dtype)
    if divisor_override:
        return total / x.dtype.type(divisor_override)
    inside = np.ones(x.shape[-2:], dtype=x.dtype)
    if count_include_pad:  # padding counts, the ceil_mode overhang does not
        inside = np.pad(inside, [(padding[0], padding[0]), (padding[1], padding[1])], constant_values=1)
        padding = (0, 0)
        geometry = _windows(inside, kernel, stride, padding, (1, 1), ceil_mode, 0)
        geometry = geometry[: total.shape[-2], : total.shape[-1]]
    else:
        geometry = _windows(inside, kernel, stride, padding, (1, 1), ceil_mode, 0)
    return total / geometry.sum(axis=(-2, -1), dtype=x.dtype)


@kernel(TABLE, aten.max_pool1d.default)
def _max_pool1d(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    stride = stride or kernel_size
    return _max_pool2d(x[..., None, :], [1, kernel_size[0]], [1, stride[0]], [0, _pair(padding)[0]],
                       [1, _pair(dilation)[0]], ceil_mode)[..., 0, :]


@kernel(TABLE, aten.avg_pool1d.default)
def _avg_pool1d(x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True):
    stride = stride or kernel_size
    return _avg_pool2d(x[..., None, :], [1, kernel_size[0]], [1, stride[0]], [0, _pair(padding)[0]],
                       ceil_mode, count_include_pad)[..., 0, :]


def _adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


@kernel(TABLE, aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default)
def _adaptive_avg_pool2d(x, output_size):
    out_h, out_w = _pair(output_size)
    height, width = x.shape[-2:]
    if height % out_h == 0 and width % out_w == 0:
        blocks = x.reshape(*x.shape[:-2], out_h, height // out_h, out_w, width // out_w)
        return blocks.mean(axis=(-3, -1), dtype=x.dtype)
    rows = [x[..., a:b, :].mean(axis=-2, keepdims=True, dtype=x.dtype) for a, b in _adaptive_bounds(height, out_h)]
    x = np.concatenate(rows, axis=-2)
    cols = [x[..., a:b].mean(axis=-1, keepdims=True, dtype=x.dtype) for a, b in _adaptive_bounds(width, out_w)]
    return np.concatenate(cols, axis=-1)


@kernel(TABLE, aten.adaptive_avg_pool1d.default)
def _adaptive_avg_pool1d(x, output_size):
    return _adaptive_avg_pool2d(x[..., None, :], [1, output_size[0]])[..., 0, :]


@kernel(TABLE, aten.upsample_nearest2d.vec)
def _upsample_nearest2d(x, output_size, scale_factors):
    height, width = x.shape[-2:]
    if output_size is None:
        output_size = [math.floor(height * scale_factors[0]), math.floor(width * scale_factors[1])]
    scales = [1 / s for s in scale_factors] if scale_factors else [height / output_size[0], width / output_size[1]]
    rows = np.minimum((np.arange(output_size[0]) * scales[0]).astype(np.int64), height - 1)
    cols = np.minimum((np.arange(output_size[1]) * scales[1]).astype(np.int64), width - 1)
    return x[..., rows[:, None], cols[None, :]]
