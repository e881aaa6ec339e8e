"""The weight-only kernel traced under torch.compile (codegen/torch/weight_only.py, fused_plane_linear): exact
float32 planes, results as close to the reference as float32 itself, nan rows for non-finite input, one graph
with no break, and the backend saying which kernel it traced."""

from __future__ import annotations

import pytest
import torch

import fxc
from fxc.codegen.torch import weight_only as wo
from fxc.ir import qformat
from tests.codegen.numpy.test_fxc_ops import QuantLinear

pytestmark = pytest.mark.usefixtures("torch_int8_kernels")  # native kernels: test_native_planes.py, test_cpu_isa.py


def _weight(model: QuantLinear, bits: int) -> qformat.QuantizedWeight:
    return qformat.QuantizedWeight(model.qweight, model.scale, model.zero, bits)


def _exact(model: QuantLinear, x: torch.Tensor, bits: int) -> torch.Tensor:
    weight = qformat.dequantize(model.qweight, model.scale, model.zero, bits).double()
    return x.double() @ weight.T + (model.bias.double() if model.bias is not None else 0)


def test_fused_planes_rebuild_rows_exactly_enough_and_fit_int8():
    rows = torch.randn(6, 33) * torch.logspace(-20, 20, 6).unsqueeze(1)
    rows[2] = 0.0
    rows[4, 0] = 127 * 2.0**10  # max|row| / 127 a power of two: the step's edge case
    planes, step, _ = wo.split_into_fused_planes(rows)
    assert planes.dtype == torch.int8 and planes.shape == (4 * 6, 33)
    assert int(planes.abs().max()) <= 127 and int(planes.view(4, 6, 33)[1:].abs().max()) <= 64
    assert torch.equal(torch.frexp(step).mantissa, torch.full_like(step, 0.5))  # powers of two
    powers = torch.tensor([128.0**-p for p in range(4)], dtype=torch.float64).reshape(4, 1, 1)
    rebuilt = (planes.view(4, 6, 33).double() * powers).sum(0) * step.double()
    bound = rows.abs().amax(dim=1, keepdim=True).double() * 3.7e-9
    assert bool(((rebuilt - rows.double()).abs() <= bound).all())


@pytest.mark.parametrize("bits,symmetric", [(8, True), (8, False), (4, True), (4, False)])
@pytest.mark.parametrize("rows", [1, 37])
def test_fused_plane_linear_is_as_close_as_float32(bits, symmetric, rows):
    model = QuantLinear(torch.randn(24, 66), bits, None, symmetric)
    x = torch.randn(rows, 66)
    x[:, 3] *= 300  # an outlier channel
    got = wo.fused_plane_linear(x, _weight(model, bits), model.bias)
    exact = _exact(model, x, bits)
    assert ((got.double() - exact).norm() / exact.norm()).item() < 2e-7


def test_non_finite_rows_give_nan_rows_and_leave_the_others_alone():
    model = QuantLinear(torch.randn(24, 40), 8)
    x = torch.randn(4, 40)
    x[1, 5], x[3, 0] = float("inf"), float("nan")
    got = wo.fused_plane_linear(x, _weight(model, 8), model.bias)
    assert bool(got[[1, 3]].isnan().all()) and bool(torch.isfinite(got[[0, 2]]).all())
    exact = _exact(model, x[[0, 2]], 8)
    assert ((got[[0, 2]].double() - exact).norm() / exact.norm()).item() < 2e-7


def test_traced_by_torch_compile_in_one_graph_and_reported():
    model = QuantLinear(torch.randn(24, 64), 8, None, False)
    x = torch.randn(2, 5, 64)
    traced = torch.compile(wo.weight_only_linear, backend="aot_eager", fullgraph=True, dynamic=True)
    args = (model.qweight, model.scale, model.zero, model.bias, 8)
    with torch.no_grad():
        got = traced(x, *args)
        fused = wo.fused_plane_linear(x.reshape(-1, 64), _weight(model, 8), model.bias).reshape(2, 5, 24)
        eager = wo.weight_only_linear(x, *args)  # eager: the int8 planes of the few-rows kernel
    assert torch.equal(got, fused)
    assert ((got.double() - eager.double()).norm() / eager.double().norm()).item() < 2e-7
    compiled = fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"torch_compile": True})
    assert any("torch.compile: 4 int8 planes fused by inductor" in n for n in compiled.runner.report_notes())
