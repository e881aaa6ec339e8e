"""Bias correction: the shift of a layer's mean output that its weight rounding causes, to subtract from
its bias (Nagel et al., 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction").

    shift = output_shift(delta [N, K], input_mean [C], groups=1, taps=1)   # -> [N]; new bias = bias - shift

A layer y = W x + b quantized to W + ΔW outputs on average ΔW·E[x] more per output channel. Inputs that
are far from zero-mean (post-ReLU / ReLU6 activations, image pixels) turn even int8 rounding errors into
a systematic offset that the following layers (and a folded BatchNorm's scale) amplify. With the input
mean measured on calibration data, subtracting ΔW·E[x] from the bias removes that offset exactly for
the mean input. For a conv2d, `delta` is the flattened weight error [O, C/groups·kh·kw] and every tap of
input channel c sees the channel's mean (border padding is not modelled: the few zero-padded positions
bias the true tap means slightly toward zero). Reads and writes tensors only.
"""

from __future__ import annotations

import torch


def output_shift(delta: torch.Tensor, input_mean: torch.Tensor, groups: int = 1, taps: int = 1) -> torch.Tensor:
    """Mean output change [N] of a layer whose weight changed by `delta` [N, K] for inputs of mean
    `input_mean` [C] (float64 math). Linear: K = C. conv2d: K = C/groups·taps (taps = kh·kw), output
    channels split evenly over the groups, group g reading input channels g·C/groups ... (g+1)·C/groups - 1."""
    n, k = delta.shape
    channels = input_mean.numel()
    per_group = channels // groups if groups > 0 else 0
    if groups < 1 or channels % groups or n % groups or k != per_group * taps:
        raise ValueError(
            f"weight error [{n}, {k}] does not fit {channels} input channels in {groups} groups of {taps} taps"
        )
    summed = delta.to(torch.float64).view(groups, n // groups, per_group, taps).sum(-1)  # [G, N/G, C/G]
    mean = input_mean.to(torch.float64).view(groups, 1, per_group)
    return (summed * mean).sum(-1).reshape(n)


def corrected_bias(
    bias: torch.Tensor | None,
    weight: torch.Tensor,
    dequantized: torch.Tensor,
    input_mean: torch.Tensor,
    groups: int = 1,
) -> torch.Tensor:
    """The bias that keeps the layer's mean output: bias - output_shift(dequantized - weight). weight: the
    float weight as the layer holds it ([N, K] linear, [O, C/groups, kh, kw] conv2d); dequantized: what its
    quantized form stands for, [N, K] (flattened). bias None: zeros. Returned in the bias's (else the
    weight's) dtype."""
    n = weight.shape[0]
    taps = weight[0, 0].numel() if weight.dim() == 4 else 1
    delta = dequantized.to(torch.float64) - weight.detach().reshape(n, -1).to(torch.float64)
    shift = output_shift(delta, input_mean, groups, taps)
    old = torch.zeros(n, dtype=torch.float64) if bias is None else bias.detach().to(torch.float64)
    return (old - shift).to(weight.dtype if bias is None else bias.dtype)
