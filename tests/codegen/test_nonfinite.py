"""Non-finite and huge activations through every backend's quantized linears (issue #19): the compiled model
follows the float model, x @ dequantized(W)^T + b in float32 on the weights the quantized graph stores.

- nan / inf in an input row: that row's outputs are nan, inf and -inf exactly where the float model's are (W8A8
  cannot quantize inf or nan: fxc.ir.ops.int8_linear sends such rows through its float path, and every backend
  does the same); the other rows are what they are without the non-finite values, and finite.
- inputs near float32's max (~3e37 and the largest finite float32): outputs finite wherever the float model's
  are, and as close to it as the scheme allows (weight-only: float32 rounding; W8A8 dynamic: activation
  quantization; W8A8 static saturates at the calibrated scale, so only finiteness is checked).

Parametrized over backends (numpy; torch fast path, with the native kernel off, and the reference ops; triton
in its interpreter on the CPU, skipped when triton is not installed), schemes (W8A8 dynamic and static;
weight-only int8 / int4 with groups of 32, and per channel, where the torch backend's few-rows kernel splits x
into int8 planes) and rows (1, 4, 16: the GEMV / few-rows kernels; 33: the GEMM kernels, two M blocks in the
interpreter). The model is a stack of two nn.Linear that returns both outputs, so the first layer's
inf / -inf / nan mix is compared as well as the second's.
Reads nothing from disk; writes the Triton kernel files into a pytest temporary folder; preserves the models
(fxc.compile works on a traced copy).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn as nn
from quant_helpers import dequantized_weight, quantized_nodes

import fxc

FLOAT32_MAX = torch.finfo(torch.float32).max
HAS_TRITON = importlib.util.find_spec("triton") is not None
BACKENDS = {  # name -> (backend, backend_options)
    "numpy": ("numpy", {}),
    "torch": ("torch", {}),
    "torch-native-off": ("torch", {"native": False}),
    "torch-reference": ("torch", {"fast": False}),
    "torch-compile": ("torch", {"torch_compile": True}),  # W8A8 only (COMPILED_SCHEMES)
    "triton": ("triton", {"poison_outputs": True}),
}
SCHEMES = {
    "w8a8-dynamic": "quantize{act-bits=8}",
    "w8a8-static": "quantize{act-bits=8,static=true}",
    "w8-group32": "quantize{bits=8,group-size=32}",
    "w4-group32": "quantize{bits=4,group-size=32}",
    "w8-channel": "quantize{bits=8}",
    "w4-channel-asymmetric": "quantize{bits=4,symmetric=false}",
}
RELATIVE_ERROR = {  # normwise, against the float model, for inputs near float32's max
    "w8a8-dynamic": 0.05,  # int8 activations
    "w8a8-static": None,  # the calibrated scale saturates: finiteness only
}
WEIGHT_ONLY_RELATIVE_ERROR = 1e-5
# under torch.compile the weight-only kernel gives a row holding inf nan everywhere (codegen/torch/weight_only.py,
# fused_plane_linear: no data-dependent fallback in the graph), so only W8A8 is checked there
COMPILED_SCHEMES = ("w8a8-dynamic", "w8a8-static")
ROWS = [1, 4, 16, 33]
cases = [
    pytest.param(name, scheme, marks=pytest.mark.skipif(name == "triton" and not HAS_TRITON, reason="no triton"))
    for name in BACKENDS
    for scheme in SCHEMES
    if name != "torch-compile" or scheme in COMPILED_SCHEMES
]
pytestmark = [
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),  # inf * 0 in numpy's matmul
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


class TwoLinears(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(64, 64), nn.Linear(64, 40)
        with torch.no_grad():  # |w| <= 0.0125: a row of +-float32 max still has a finite float output
            self.first.weight.mul_(0.1)
            self.second.weight.mul_(0.1)

    def forward(self, x):
        hidden = self.first(x)
        return hidden, self.second(hidden)


_compiled: dict[tuple[str, str], tuple] = {}


@pytest.fixture
def compiled(tmp_path_factory):
    """(backend name, scheme) -> (compiled module, float model on its dequantized weights), built once each."""

    def get(backend_name: str, scheme: str):
        key = (backend_name, scheme)
        if key not in _compiled:
            torch.manual_seed(0)
            model = TwoLinears().eval()
            backend, options = BACKENDS[backend_name]
            if backend == "triton":
                options = {**options, "cache_dir": str(tmp_path_factory.mktemp("kernels"))}
            calibration = [torch.randn(8, 64) for _ in range(2)]
            cm = fxc.compile(model, passes=SCHEMES[scheme], example_inputs=(torch.randn(4, 64),),
                             calibration=calibration, backend=backend, backend_options=options)
            nodes = quantized_nodes(cm.graph)
            assert len(nodes) == 2
            float_model = TwoLinears().eval()
            float_model.load_state_dict(model.state_dict())
            with torch.no_grad():
                for layer, node in zip((float_model.first, float_model.second), nodes):
                    layer.weight.copy_(dequantized_weight(cm.graph, node))
            _compiled[key] = cm, float_model
        return _compiled[key]

    return get


def run(module, x):
    with torch.no_grad():
        return module(x)


def assert_no_triton_fallback(backend_name: str, cm) -> None:
    if backend_name == "triton":
        calls = cm.runner.calls.values()
        assert calls and all(call.launches and not call.fallbacks for call in calls), cm.runner.summary()


def nonfinite_rows(rows: int) -> dict[int, tuple[int, float]]:
    """row -> (column, value): nan in the last row; +inf in row 0 and -inf in row 1 when there are more rows."""
    poison = {rows - 1: (3, float("nan"))}
    if rows >= 2:
        poison[0] = (5, float("inf"))
    if rows >= 3:
        poison[1] = (7, float("-inf"))
    return poison


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("backend_name,scheme", cases)
def test_nan_and_inf_rows_follow_the_float_model(compiled, backend_name, scheme, rows):
    cm, float_model = compiled(backend_name, scheme)
    clean = torch.randn(rows, 64)
    x = clean.clone()
    poison = nonfinite_rows(rows)
    for row, (column, value) in poison.items():
        x[row, column] = value
    others = [row for row in range(rows) if row not in poison]
    for got, want, without in zip(run(cm, x), run(float_model, x), run(cm, clean)):
        bad = sorted(poison)
        assert torch.equal(got.isnan(), want.isnan()), "nan where the float model has none, or none where it has"
        assert torch.equal(got.isinf(), want.isinf()) and torch.equal(got[want.isinf()], want[want.isinf()])
        assert not bool(torch.isfinite(got[bad]).any())  # a non-finite input spreads over its whole row
        assert bool(torch.isfinite(got[others]).all())
        torch.testing.assert_close(got[others], without[others], rtol=1e-5, atol=1e-5)
    assert_no_triton_fallback(backend_name, cm)


def near_float32_max(rows: int) -> torch.Tensor:
    """Rows of normal values times 3e37; row 0 with four elements at +-float32 max, row 1 (if any) all at it."""
    x = torch.randn(rows, 64) * 3e37
    x[0, :4] = torch.sign(torch.randn(4)) * FLOAT32_MAX
    if rows >= 2:
        x[1] = torch.sign(torch.randn(64)) * FLOAT32_MAX
    return x


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("backend_name,scheme", cases)
def test_inputs_near_float32_max_stay_finite_where_the_float_model_does(compiled, backend_name, scheme, rows):
    cm, float_model = compiled(backend_name, scheme)
    x = near_float32_max(rows)
    tolerance = RELATIVE_ERROR.get(scheme, WEIGHT_ONLY_RELATIVE_ERROR)
    for got, want in zip(run(cm, x), run(float_model, x)):
        finite = torch.isfinite(want)
        assert bool(finite.all()), "the test's inputs should keep the float model finite"
        assert bool(torch.isfinite(got).all()), f"{int((~torch.isfinite(got)).sum())} outputs overflowed"
        if tolerance is not None:
            error = ((got.double() - want.double()).norm() / want.double().norm()).item()
            assert error < tolerance
    assert_no_triton_fallback(backend_name, cm)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
@pytest.mark.parametrize("static", [False, True])
def test_w8a8_kernel_takes_the_float_path_in_the_blocks_holding_a_nonfinite_row(tmp_path, static):
    """Small blocks (16 x 16 x 16) over ragged M, N, K: blocks of M without a marked row keep the int8 result, the
    others compute their marked rows' float path over every K tile (the ragged last one included)."""
    from fxc.codegen.triton.cache import KernelCache
    from fxc.codegen.triton.epilogue import Epilogue
    from fxc.codegen.triton.picker import FusedLinear
    from fxc.ir import qformat

    small = {"w8a8": dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_warps=1, num_stages=1)}
    op = torch.ops.fxc.int8_linear.default
    fused = FusedLinear(op, Epilogue(()), KernelCache(tmp_path, interpret=True), poison_outputs=True, configs=small)
    weight = qformat.quantize_rtn(torch.randn(37, 70), 8, full_range=False)
    weight_scale = weight.scale.reshape(-1)
    args = (weight.qweight, weight_scale, torch.randn(37), torch.tensor(0.03) if static else None)
    x = torch.randn(40, 70)
    x[3, 69], x[5, 0], x[37, 33] = float("nan"), float("inf"), float("-inf")  # M blocks 0 and 2; block 1 finite
    got, want = fused(x, *args), op(x, *args)
    float_model = x @ (weight.qweight.float() * weight_scale.reshape(-1, 1)).T + args[2]
    for expected in (want, float_model):
        assert torch.equal(got.isnan(), expected.isnan()) and torch.equal(got.isinf(), expected.isinf())
        assert torch.equal(got[expected.isinf()], expected[expected.isinf()])
    finite = [row for row in range(40) if row not in (3, 5, 37)]
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-5, atol=1e-5)
    assert fused.launches["w8a8"] == 1 and not fused.fallbacks
