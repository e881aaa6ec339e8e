"""Bias correction: the mean output shift ΔW·E[x] of linear, conv2d and grouped/depthwise conv2d layers,
checked against the layers run with the changed weight, and the corrected bias that keeps the mean output."""

import pytest
import torch
import torch.nn.functional as F

from fxc.passes.algorithms.bias_correction import corrected_bias, output_shift


def test_linear_shift_is_the_mean_output_change():
    torch.manual_seed(0)
    x = torch.randn(500, 12, dtype=torch.float64) + torch.linspace(-2, 3, 12, dtype=torch.float64)
    delta = torch.randn(5, 12, dtype=torch.float64) * 1e-2
    expected = (x @ delta.T).mean(0)
    assert torch.allclose(output_shift(delta, x.mean(0)), expected, atol=1e-12)


@pytest.mark.parametrize("groups,out_channels", [(1, 6), (2, 6), (4, 4)])  # 4 / 4: depthwise
def test_conv_shift_is_the_mean_output_change(groups, out_channels):
    torch.manual_seed(0)
    # per-channel constant inputs: every tap sees the channel's mean exactly (no border effect, no padding)
    x = (torch.randn(3, 4, 1, 1, dtype=torch.float64) + 2).expand(3, 4, 7, 7)
    delta = torch.randn(out_channels, 4 // groups, 3, 3, dtype=torch.float64) * 1e-2
    expected = F.conv2d(x, delta, groups=groups).mean((0, 2, 3))
    mean = x.mean((0, 2, 3))
    shift = output_shift(delta.reshape(out_channels, -1), mean, groups=groups, taps=9)
    assert torch.allclose(shift, expected, atol=1e-12)


def test_corrected_bias_keeps_the_mean_output():
    torch.manual_seed(0)
    weight = torch.randn(8, 2, 3, 3)
    bias = torch.randn(8)
    dequantized = (weight + 0.05 * torch.randn_like(weight)).reshape(8, -1)
    x = (torch.rand(2, 4, 6, 6) * 6).clone()
    x[:] = x.mean((2, 3), keepdim=True)  # constant per channel, as above
    new = corrected_bias(bias, weight, dequantized, x.mean((0, 2, 3)), groups=2)
    before = F.conv2d(x, weight, bias, groups=2).mean((0, 2, 3))
    after = F.conv2d(x, dequantized.view_as(weight), new, groups=2).mean((0, 2, 3))
    assert torch.allclose(after, before, atol=1e-5)
    assert new.dtype == bias.dtype
    assert corrected_bias(None, weight.half(), dequantized, x.mean((0, 2, 3)), groups=2).dtype == torch.float16


def test_shapes_that_do_not_fit_are_rejected():
    with pytest.raises(ValueError, match="does not fit 4 input channels in 3 groups"):
        output_shift(torch.zeros(6, 9), torch.zeros(4), groups=3, taps=9)
