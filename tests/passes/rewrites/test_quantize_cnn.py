"""int8 on CNNs: fold-bn then quantize on a tiny seeded network with the structures of EfficientNet-Lite /
MobileNet (expand, depthwise, project with a residual), ResNet (two 3x3 convs and a residual) and a stem
whose BatchNorm has dead channels (running_var = 0, as EfficientNet-Lite0's has). Its depthwise filters'
taps nearly cancel (edge detectors) and its inputs are smooth images, so the sum of a row's rounding errors
times the local input level dominates round-to-nearest's output error; balanced rounding plus bias
correction must bring W8 within a tolerance that plain round-to-nearest misses, and the numpy backend must
run the result as the torch backend does."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from quant_helpers import quantized_nodes

import fxc
from fxc.errors import CalibrationError, OptionError
from fxc.passes import Quantize
from fxc.passmgr.calibration import Calibration

DEAD = [1, 5, 11]  # stem channels whose conv weights are zero: BatchNorm running_var 0 there


class MobileBlock(nn.Module):
    def __init__(self, channels: int, expand: int):
        super().__init__()
        wide = channels * expand
        self.expand, self.bn0 = nn.Conv2d(channels, wide, 1, bias=False), nn.BatchNorm2d(wide)
        self.depthwise, self.bn1 = nn.Conv2d(wide, wide, 3, padding=1, groups=wide, bias=False), nn.BatchNorm2d(wide)
        self.project, self.bn2 = nn.Conv2d(wide, channels, 1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x):
        y = F.relu6(self.bn0(self.expand(x)))
        y = F.relu6(self.bn1(self.depthwise(y)))
        return x + self.bn2(self.project(y))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.stem_dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)  # fed by the dead channels
        self.stem_dw_bn = nn.BatchNorm2d(16)
        self.mobile = MobileBlock(16, 4)
        self.residual = ResidualBlock(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu6(self.bn(self.stem(x)))
        x = F.relu6(self.stem_dw_bn(self.stem_dw(x)))
        return self.fc(self.residual(self.mobile(x)).mean((2, 3)))


def images(n: int, seed: int) -> torch.Tensor:
    """Smooth random images in about [-1, 1] (bicubic upsampling of 4x4 noise, a little fine noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(32, 32), mode="bicubic", align_corners=False)
    return coarse * 2 - 1 + 0.05 * torch.randn(n, 3, 32, 32, generator=g)


def tiny_net() -> TinyNet:
    """Seeded weights; BatchNorm statistics measured on images (as training leaves them), dead stem channels."""
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d) and module.groups > 1:
                module.weight.sub_(module.weight.mean((2, 3), keepdim=True))  # taps that nearly cancel
        net.stem.weight[DEAD] = 0
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average: the exact statistics of the batches below
    net.train()
    with torch.no_grad():
        for seed in range(4):
            net(images(16, 100 + seed))
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.5, 1.0)
        net.bn.weight[DEAD], net.bn.bias[DEAD] = 1.7, -3.0  # gamma / sqrt(eps) folds to a large scale
    net.eval()
    assert (net.bn.running_var[DEAD] == 0).all() and (net.stem_dw_bn.running_var[DEAD] == 0).all()
    return net


@pytest.fixture(scope="module")
def setup():
    net = tiny_net()
    calibration = [images(8, seed) for seed in (1, 2)]
    evaluation = images(32, 7)
    with torch.no_grad():
        reference = net(evaluation)
    return fxc.trace(net, (calibration[0],)), calibration, evaluation, reference


def _compressed(setup, pipeline: str):
    base, calibration, evaluation, reference = setup
    gm = copy.deepcopy(base)
    result = fxc.Pipeline.parse(pipeline).run(gm, fxc.AnalysisManager(gm, Calibration.of(calibration)))
    with torch.no_grad():
        error = ((gm(evaluation) - reference).norm() / reference.norm()).item()
    return gm, error, result


def test_fold_bn_is_exact_with_dead_channels(setup):
    _, error, _ = _compressed(setup, "fold-bn")
    assert error < 1e-5


W8_TOLERANCE = 2.5e-3  # relative output error; plain round-to-nearest leaves about 2.4x this


def test_w8_after_fold_bn_matches_the_float_model(setup):
    gm, error, result = _compressed(setup, "fold-bn,quantize{bits=8,rounding=balanced,bias-correction=true}")
    assert "balanced rounding, bias corrected" in str(result)
    convs = [n for n in quantized_nodes(gm) if n.target == torch.ops.fxc.quantized_conv2d.default]
    assert len(convs) == 7 and any(n.args[-1] == 64 for n in convs)  # every conv, the depthwise ones too
    assert all(n.args[4] is not None for n in convs)  # the bias-less convs got a corrected bias
    assert error < W8_TOLERANCE
    _, nearest, _ = _compressed(setup, "fold-bn,quantize{bits=8}")
    assert nearest > 2 * W8_TOLERANCE  # what this fixes: round-to-nearest misses the tolerance


@pytest.mark.parametrize("pipeline", ["quantize{bits=8,rounding=balanced}", "quantize{bits=8,bias-correction=true}"])
def test_each_half_of_the_fix_helps_alone(setup, pipeline):
    _, nearest, _ = _compressed(setup, "fold-bn,quantize{bits=8}")
    _, error, _ = _compressed(setup, "fold-bn," + pipeline)
    assert error < 0.65 * nearest


def test_w8a8_after_fold_bn(setup):
    gm, error, _ = _compressed(setup, "fold-bn,quantize{act-bits=8,rounding=balanced,bias-correction=true}")
    assert [n.target for n in quantized_nodes(gm)].count(torch.ops.fxc.int8_linear.default) == 1  # the classifier
    _, nearest, _ = _compressed(setup, "fold-bn,quantize{act-bits=8}")
    assert error < 0.8 * nearest and error < 6e-3  # the classifier's int8 inputs add their own error


def test_numpy_backend_runs_the_quantized_cnn_as_torch_does(setup):
    gm, _, _ = _compressed(setup, "fold-bn,quantize{bits=8,rounding=balanced,bias-correction=true}")
    _, calibration, evaluation, _ = setup
    example = (calibration[0],)
    reference = fxc.compile(gm, example_inputs=example, backend="torch", backend_options={"fast": False})
    numpy_module = fxc.compile(reference.graph, example_inputs=example, backend="numpy")
    expected = reference(evaluation)
    assert ((numpy_module(evaluation) - expected).abs().max() / expected.abs().max()).item() < 1e-5


def test_bias_correction_keeps_each_layers_mean_output():
    torch.manual_seed(0)
    layer = nn.Linear(32, 8)
    calibration = [torch.rand(64, 32) * 6 for _ in range(2)]  # post-ReLU6-like: far from zero-mean
    x = torch.cat(calibration)
    shifts = {}
    for option in ("false", "true"):
        gm = fxc.trace(layer, (calibration[0],))
        pipeline = fxc.Pipeline.parse(f"quantize{{bits=8,bias-correction={option},skip=[]}}")
        pipeline.run(gm, fxc.AnalysisManager(gm, Calibration.of(calibration)))
        with torch.no_grad():
            shifts[option] = (gm(x) - layer(x)).mean(0).abs().max().item()
    assert shifts["true"] < 1e-5 < shifts["false"] / 100


def test_option_errors():
    with pytest.raises(OptionError, match="rounding"):
        Quantize(method="gptq", rounding="balanced")
    gm = fxc.trace(nn.Linear(4, 4), (torch.randn(2, 4),))
    with pytest.raises(CalibrationError, match="bias-correction"):
        fxc.Pipeline.parse("quantize{bias-correction=true,skip=[]}").run(gm, fxc.AnalysisManager(gm))


def test_bias_correction_after_gptq(setup):
    _, plain, _ = _compressed(setup, "fold-bn,quantize{method=gptq,bits=8}")
    _, corrected, result = _compressed(setup, "fold-bn,quantize{method=gptq,bits=8,bias-correction=true}")
    assert "bias corrected" in str(result)
    assert corrected < 0.8 * plain  # the depthwise convs GPTQ rounds to nearest gain most
