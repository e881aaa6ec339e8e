"""The AMX-int8 plane kernel (codegen/torch/native/build.py and amx_plane_gemm.c): the split rebuilds
every row within its bound, the product is as close to the exact one as float32 itself for int8/int4,
symmetric/asymmetric, ragged shapes; rows with inf or nan get the reference's output; linears reading one
input share one split; torch.compile traces it as one custom op; the backend reports it. On a CPU without
AMX-int8 (or without a C compiler) the kernel does not load and these tests skip, saying why; the torch
kernels that run there instead are tested in test_fast_ops.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fxc
from fxc.codegen.torch import weight_only as wo
from fxc.codegen.torch.native import build as native_build
from fxc.ir import qformat
from tests.codegen.numpy.numpy_check import assert_close_outputs
from tests.codegen.numpy.test_fxc_ops import QuantLinear
from tests.codegen.torch.test_fused_planes import _exact as exact_product
from tests.codegen.torch.test_fused_planes import _weight

pytestmark = pytest.mark.skipif(
    native_build.plane_kernel() is None, reason=f"no AMX plane kernel: {native_build.plane_kernel_status()}"
)


def _unpacked_planes(split: native_build.SplitRows) -> torch.Tensor:
    """The tile-interleaved planes back as int [PLANES, M, K]: tile (p, m block, k tile) row r holds columns
    4r .. 4r+3 of its 16 rows, 4 bytes each."""
    planes, m_pad, k_pad = split.planes, split.planes.shape[1], split.planes.shape[2]
    tiles = planes.reshape(4, m_pad // 16, k_pad // 64, 16, 16, 4)  # p, m block, k tile, r, m in block, k in 4
    dense = tiles.permute(0, 1, 4, 2, 3, 5).reshape(4, m_pad, k_pad)
    return dense[:, : split.rows, : split.columns].long()


def test_split_rebuilds_rows_within_its_bound_and_fits_int8():
    rows = torch.randn(19, 100) * torch.logspace(-30, 30, 19).unsqueeze(1)
    rows[2] = 0.0
    rows[4, 0] = 127 * 2.0**10  # max|row| / 127 a power of two: the step's edge case
    rows[7] = torch.randn(100) * 1e-40  # subnormal rows: no float32 inverse step, the split's float64 path
    split = native_build.split_rows(rows)
    planes = _unpacked_planes(split)
    assert int(planes[0].abs().max()) <= 127 and int(planes[1:].abs().max()) <= 64
    assert torch.equal(torch.frexp(split.step).mantissa, torch.full_like(split.step, 0.5))  # powers of two
    powers = torch.tensor([128.0**-p for p in range(4)], dtype=torch.float64).reshape(4, 1, 1)
    rebuilt = (planes.double() * powers).sum(0) * split.step.unsqueeze(1)
    bound = rows.double().abs().amax(dim=1, keepdim=True) * 3.7e-9
    assert bool(((rebuilt - rows.double()).abs() <= bound).all())
    weights = torch.tensor([128.0 ** (3 - p) for p in range(4)], dtype=torch.float64).reshape(4, 1, 1)
    padded = torch.nn.functional.pad(planes.double(), (0, 128 - 100))  # two 64-column tiles
    tile_sums = (padded.reshape(4, 19, 2, 64).sum(-1) * weights).sum(0)  # [rows, tiles]
    assert torch.equal(split.tile_sums, tile_sums)


@pytest.mark.parametrize("bits,symmetric", [(8, True), (8, False), (4, True), (4, False)])
@pytest.mark.parametrize("shape", [(1, 64), (3, 128), (2, 9, 100), (40, 130)])
@pytest.mark.parametrize("outputs", [1, 24, 33])
def test_product_is_as_close_as_float32_itself(bits, symmetric, shape, outputs):
    columns = shape[-1]
    model = QuantLinear(torch.randn(outputs, columns), bits, None, symmetric, bias=outputs != 1)
    x = torch.randn(shape)
    x[..., 3] *= 300  # an outlier channel: the planes' error is relative to each row's largest value
    rows = x.reshape(-1, columns)
    got = wo.native_plane_linear(rows, _weight(model, bits), model.bias)
    exact = exact_product(model, rows, bits)
    float32 = rows @ qformat.dequantize(model.qweight, model.scale, model.zero, bits).T
    float32 = float32 + (model.bias if model.bias is not None else 0)
    error = (got.double() - exact).abs().max()
    assert error <= max(2 * (float32.double() - exact).abs().max(), 1e-6 * exact.abs().max())


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 40),
    columns=st.integers(1, 140).map(lambda k: 2 * k),
    outputs=st.integers(1, 40),
    bits=st.sampled_from([8, 4]),
    symmetric=st.booleans(),
)
def test_ragged_shapes_match_the_exact_product(rows, columns, outputs, bits, symmetric):
    model = QuantLinear(torch.randn(outputs, columns), bits, None, symmetric)
    x = torch.randn(rows, columns)
    got = wo.native_plane_linear(x, _weight(model, bits), model.bias)
    exact = exact_product(model, x, bits)
    weight = qformat.dequantize(model.qweight, model.scale, model.zero, bits).double()
    magnitude = x.double().abs() @ weight.abs().T + (model.bias.double().abs() if model.bias is not None else 0)
    assert bool(((got.double() - exact).abs() <= (columns + 4) * 2.0**-24 * magnitude + 1e-30).all())


def test_rows_with_inf_or_nan_get_the_reference_output():
    model = QuantLinear(torch.randn(24, 64), 8)
    x = torch.randn(3, 64)
    x[0, 5], x[2, 0] = float("inf"), float("nan")
    got = wo.native_plane_linear(x, _weight(model, 8), model.bias)
    want = wo.dequantized_tile_linear(x, _weight(model, 8), model.bias)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))


def test_backend_runs_the_kernel_and_reports_it(monkeypatch):
    model = QuantLinear(torch.randn(24, 64), 8, None, True)
    x = torch.randn(2, 17, 64)
    reference = fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"fast": False})
    fast = fxc.compile(reference.graph, example_inputs=(x,), backend="torch")
    calls = []
    gemm = native_build.plane_gemm
    monkeypatch.setattr(native_build, "plane_gemm", lambda *a: calls.append(1) or gemm(*a))
    assert_close_outputs(fast(x), reference(x))
    assert calls == [1]
    assert "AMX-int8 plane kernel: 4 int8 planes of x times the stored int8 weight" in fast.runner.notes[0]


@pytest.mark.parametrize("bits,symmetric", [(8, True), (4, False)])
@pytest.mark.parametrize("group_size,columns", [(64, 192), (128, 256), (64, 64)])
@pytest.mark.parametrize("rows", [1, 21])
def test_group_wise_scales_of_whole_tiles_run_on_the_kernel(monkeypatch, bits, symmetric, group_size, columns, rows):
    model = QuantLinear(torch.randn(40, columns), bits, group_size, symmetric)
    x = torch.randn(rows, columns)
    x[:, 5] *= 100
    calls = []
    gemm = native_build.plane_gemm
    monkeypatch.setattr(native_build, "plane_gemm", lambda *a: calls.append(1) or gemm(*a))
    got = wo.weight_only_linear(x, model.qweight, model.scale, model.zero, model.bias, bits)
    assert calls == [1]
    exact = exact_product(model, x, bits)
    float32 = x @ qformat.dequantize(model.qweight, model.scale, model.zero, bits).T + model.bias
    assert (got.double() - exact).abs().max() <= max(2 * (float32.double() - exact).abs().max(), 1e-7)


def test_group_wise_scales_of_part_tiles_keep_the_dequantized_tiles(monkeypatch):
    model = QuantLinear(torch.randn(24, 64), 4, 32, True)
    x = torch.randn(5, 64)
    calls = []
    monkeypatch.setattr(native_build, "plane_gemm", lambda *a: calls.append(1))
    fast = fxc.compile(model, example_inputs=(x,), backend="torch")
    reference = fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"fast": False})
    assert_close_outputs(fast(x), reference(x))
    assert calls == []


def test_llama_linears_reading_one_input_share_one_split(monkeypatch):
    pytest.importorskip("transformers")
    from tests import tiny_models

    model, _ = tiny_models.tiny_llama(layers=1)
    example = (torch.randint(0, 64, (1, 40)),)  # 40 rows: the AMX kernel takes any number
    reference = fxc.compile(model, passes="quantize{bits=8}", example_inputs=example, backend="torch",
                            backend_options={"fast": False})  # fmt: skip
    fast = fxc.compile(reference.graph, example_inputs=example, backend="torch")
    splits = []
    split_rows = native_build.split_rows
    monkeypatch.setattr(native_build, "split_rows", lambda rows: splits.append(rows.shape) or split_rows(rows))
    assert_close_outputs(fast(*example).logits, reference(*example).logits)
    linears = [n for n in fast.runner.graph.nodes if n.target is wo.weight_only_linear]
    assert len(linears) == 7 and len(splits) == 4  # q/k/v one split, o, gate/up one, down


def test_torch_compile_traces_one_custom_op():
    model = QuantLinear(torch.randn(24, 64), 8, None, False)
    x = torch.randn(7, 64)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    call = lambda rows: wo.weight_only_linear(rows, model.qweight, model.scale, model.zero, model.bias, 8)  # noqa: E731
    compiled = torch.compile(call, backend=backend, fullgraph=True)
    assert_close_outputs(compiled(x), call(x))
    targets = [n.target for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert torch.ops.fxc_native.plane_linear.default in targets or torch.ops.fxc_native.plane_linear in targets

