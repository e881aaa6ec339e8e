"""numpy backend vs torch reference for every op of fxc's op set: quantized_linear (int8/int4,
per channel/group, symmetric/asymmetric), quantized_conv2d, int8_linear (dynamic per-token and
static scales; int32 accumulators bit-exact for K past the float32-exact 1024), sparse_nm_linear
(CSR and dense choices, float and int8 values)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import fxc
from fxc.codegen.numpy import quant
from fxc.ir import qformat
from fxc.ir.ops import int8_matmul_reference
from tests.codegen.numpy.numpy_check import assert_close_outputs, relative_error, torch_calls

fxc_ops = torch.ops.fxc


class QuantLinear(nn.Module):
    def __init__(self, weight, bits, group_size=None, symmetric=True, bias=True):
        super().__init__()
        q = qformat.quantize_rtn(weight, bits, group_size, symmetric)
        self.register_buffer("qweight", q.qweight)
        self.register_buffer("scale", q.scale)
        self.register_buffer("zero", q.zero_point)
        self.register_buffer("bias", torch.randn(weight.shape[0]) if bias else None)
        self.bits = bits

    def forward(self, x):
        return fxc_ops.quantized_linear(x, self.qweight, self.scale, self.zero, self.bias, self.bits)


class Int8Linear(nn.Module):
    def __init__(self, weight, input_scale=None):
        super().__init__()
        q = qformat.quantize_rtn(weight, 8)
        self.register_buffer("qweight", q.qweight)
        self.register_buffer("scale", q.scale.reshape(-1))
        self.register_buffer("bias", torch.randn(weight.shape[0]))
        self.register_buffer("input_scale", input_scale)

    def forward(self, x):
        return fxc_ops.int8_linear(x, self.qweight, self.scale, self.bias, self.input_scale)


def pack_nm(weight: torch.Tensor, n: int, m: int):
    """Keep the n largest of every m columns: (values, uint8 in-group indices) in column order."""
    rows, cols = weight.shape
    groups = weight.reshape(rows, cols // m, m)
    keep = groups.abs().topk(n, dim=-1).indices.sort(dim=-1).values
    return groups.gather(-1, keep).reshape(rows, -1), keep.to(torch.uint8).reshape(rows, -1)


class SparseLinear(nn.Module):
    def __init__(self, weight, n, m, int8_values=False):
        super().__init__()
        values, indices = pack_nm(weight, n, m)
        scale = None
        if int8_values:
            q = qformat.quantize_rtn(values, 8)
            values, scale = q.qweight, q.scale
        self.register_buffer("values", values)
        self.register_buffer("indices", indices)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", torch.randn(weight.shape[0]))
        self.n, self.m = n, m

    def forward(self, x):
        return fxc_ops.sparse_nm_linear(x, self.values, self.indices, self.scale, self.bias, self.n, self.m)


def run_both(model, x, **numpy_options):
    reference = fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"fast": False})
    numpy_module = fxc.compile(reference.graph, example_inputs=(x,), backend="numpy", backend_options=numpy_options)
    return numpy_module(x), reference(x), numpy_module


@pytest.mark.parametrize(
    "bits,group_size,symmetric", [(8, None, True), (8, 16, False), (4, None, True), (4, 16, False)]
)
def test_quantized_linear_matches_reference(bits, group_size, symmetric):
    model = QuantLinear(torch.randn(24, 48), bits, group_size, symmetric)
    got, want, _ = run_both(model, torch.randn(2, 3, 48))
    assert_close_outputs(got, want)


def test_quantized_linear_tiles_large_weights_without_changing_the_result(monkeypatch):
    monkeypatch.setattr(quant, "TILE_BYTES", 4 * 48 * 5)  # tiles of 5 rows: 24 rows -> 5 tiles
    got, want, _ = run_both(QuantLinear(torch.randn(24, 48), 4, 16, False), torch.randn(7, 48))
    assert_close_outputs(got, want)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_linear_runs_without_calling_torch(bits):
    _, _, numpy_module = run_both(QuantLinear(torch.randn(24, 48), bits, 16, False), torch.randn(3, 48))
    x = np.random.default_rng(0).standard_normal((3, 48), dtype=np.float32)
    calls, outputs = torch_calls(lambda: numpy_module.runner.run_numpy(x))
    assert calls == [] and isinstance(outputs[0], np.ndarray) and outputs[0].shape == (3, 24)


def test_dequantized_rows_are_bit_identical_to_the_reference():
    for bits, group_size, symmetric in [(8, None, True), (4, 8, False)]:
        q = qformat.quantize_rtn(torch.randn(6, 32), bits, group_size, symmetric)
        zero = None if q.zero_point is None else q.zero_point.numpy()
        got = quant.dequantize_rows(q.qweight.numpy(), q.scale.numpy(), zero, bits)
        assert np.array_equal(got, qformat.dequantize(*q).numpy())


def test_quantized_conv2d_matches_reference():
    weight = torch.randn(8, 2, 3, 3)
    q = qformat.quantize_rtn(weight.reshape(8, -1), 4, None, False)

    class QuantConv(nn.Module):
        def forward(self, x):
            return fxc_ops.quantized_conv2d(x, q.qweight, q.scale, q.zero_point, None, 4, [8, 2, 3, 3], [2, 2],
                                            [1, 1], [1, 1], 2)

    got, want, _ = run_both(QuantConv(), torch.randn(2, 4, 9, 9))
    assert_close_outputs(got, want)


@pytest.mark.parametrize("columns", [1, 5, 1024, 1025, 3000])
def test_int8_accumulators_are_bit_exact_at_the_extremes(columns):
    qx = torch.randint(-127, 128, (9, columns), dtype=torch.int8)
    qx[0] = 127
    qx[1] = -127
    qw = torch.randint(-128, 128, (7, columns), dtype=torch.int8)
    qw[0] = -128  # row 0 x weight 0: every product is -127 * -128, the largest partial sums there are
    got = quant.int8_matmul_exact(qx.numpy(), qw.numpy(), tile_rows=3)
    assert got.dtype == np.int32
    assert np.array_equal(got, int8_matmul_reference(qx, qw).numpy())


@pytest.mark.parametrize("static", [False, True])
def test_int8_linear_is_bit_exact_with_the_reference(static):
    columns = 1100  # two K chunks
    model = Int8Linear(torch.randn(12, columns), torch.tensor(0.02) if static else None)
    x = torch.randn(3, 4, columns)
    x[0, 0] = 0.0  # an all-zero token: scale 1, as in the reference
    got, want, compiled = run_both(model, x)
    assert torch.equal(got, want)
    assert any("2 K chunk" in note for note in compiled.runner.notes)


def test_activation_quantization_rounds_half_to_even_like_torch():
    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, -2.5, 127.0, 200.0, -300.0]])
    scale = torch.tensor([[1.0]])
    got = quant.quantize_activations(x.numpy(), scale.numpy())
    assert np.array_equal(got, qformat.quantize_activations(x, scale).numpy())
    assert got.tolist() == [[0, 2, 2, 0, -2, 127, 127, -128]]


@pytest.mark.parametrize("crossover,int8_values", [(1.0, False), (0.0, False), (1.0, True), (0.0, True)])
def test_sparse_nm_linear_matches_reference_with_csr_and_dense_kernels(crossover, int8_values):
    model = SparseLinear(torch.randn(16, 32), 2, 4, int8_values)
    got, want, compiled = run_both(model, torch.randn(2, 5, 32), sparse_crossover=crossover)
    assert_close_outputs(got, want)
    kernel = "scipy CSR" if crossover == 1.0 else "dense BLAS"
    assert any(n.split("-> ")[1].startswith(kernel) for n in compiled.runner.notes)


def test_sparse_choice_follows_the_measured_crossover():
    very_sparse = SparseLinear(torch.randn(8, 64), 1, 16)  # density 1/16: CSR at 128 rows
    _, _, compiled = run_both(very_sparse, torch.randn(128, 64))
    assert "-> scipy CSR" in compiled.runner.notes[0]
    half = SparseLinear(torch.randn(8, 64), 2, 4)  # density 1/2: dense BLAS at 128 rows
    got, want, compiled = run_both(half, torch.randn(128, 64))
    assert "-> dense BLAS" in compiled.runner.notes[0]
    assert relative_error(got, want) <= 1e-5
