"""The torch backend's fast CPU path: each fxc op swapped for a fast kernel computes what the
reference op computes (int8 x int8 through torch._int_mm bit-exact), the choice is reported, and
the compiled module's graph stays the canonical IR."""

from __future__ import annotations

import threading

import pytest
import torch

import fxc
from fxc.codegen.torch import fast_ops, weight_only
from fxc.ir import qformat
from tests.codegen.numpy.numpy_check import assert_close_outputs
from tests.codegen.numpy.test_fxc_ops import Int8Linear, QuantLinear, SparseLinear

fxc_ops = torch.ops.fxc
pytestmark = pytest.mark.usefixtures("torch_int8_kernels")  # native kernels: test_native_planes.py, test_cpu_isa.py


def compile_fast_and_reference(model, x, **options):
    reference = fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"fast": False})
    fast = fxc.compile(reference.graph, example_inputs=(x,), backend="torch", backend_options=options)
    return fast, reference


@pytest.mark.parametrize("rows", [1, 16, 17, 40])
@pytest.mark.parametrize("static", [False, True])
def test_int8_linear_through_int_mm_is_bit_exact(rows, static):
    model = Int8Linear(torch.randn(24, 1100), torch.tensor(0.03) if static else None)
    x = torch.randn(rows, 1100)
    fast, reference = compile_fast_and_reference(model, x)
    assert torch.equal(fast(x), reference(x))
    assert [note.split(": ", 1)[1] for note in fast.runner.notes] == [
        "int8_linear -> torch._int_mm (int8 x int8 -> int32, exact)"
    ]


def test_int8_matmul_falls_back_to_the_exact_float_gemm_where_int_mm_cannot_run(monkeypatch):
    monkeypatch.setattr(fast_ops, "int_mm_supported", lambda *args: False)
    monkeypatch.setattr(torch, "_int_mm", None)  # must not be called
    qx = torch.randint(-127, 128, (3, 40), dtype=torch.int8)
    qw = torch.randint(-128, 128, (5, 40), dtype=torch.int8)
    assert torch.equal(fast_ops.int8_matmul(qx, qw), (qx.double() @ qw.double().T).int())


def test_int_mm_constraints_on_cuda_are_checked_before_use():
    cuda = torch.device("cuda")
    assert fast_ops.int_mm_supported(3, 64, 32, cuda)  # rows <= 16 are padded
    assert not fast_ops.int_mm_supported(32, 60, 32, cuda)  # K not a multiple of 8
    assert not fast_ops.int_mm_supported(32, 64, 30, cuda)
    assert fast_ops.int_mm_supported(3, 5, 7, torch.device("cpu"))


@pytest.mark.parametrize("bits,group_size,symmetric", [(8, None, True), (4, 16, False)])
@pytest.mark.parametrize("tiled", [False, True])
def test_weight_only_linear_whole_or_tiled_matches_reference(monkeypatch, bits, group_size, symmetric, tiled):
    if tiled:
        monkeypatch.setattr(weight_only, "TILE_BYTES", 4 * 48 * 7)  # 7 rows a tile: 3 ragged tiles
    model = QuantLinear(torch.randn(20, 48), bits, group_size, symmetric)
    x = torch.randn(2, 9, 48)  # 18 rows: past PLANE_ROWS, so the dequantized tiles
    fast, reference = compile_fast_and_reference(model, x)
    assert_close_outputs(fast(x), reference(x))
    assert ("tiles of" in fast.runner.notes[0]) == tiled


def _reference_and_planes_counted(monkeypatch, model, x):
    """fast(x), reference(x), how many calls the int8-plane kernel answered, and the backend's notes."""
    fast, reference = compile_fast_and_reference(model, x)
    answered = []
    planes_kernel = weight_only.int8_plane_linear

    def counted(*args):
        y = planes_kernel(*args)
        answered.append(y is not None)
        return y

    monkeypatch.setattr(weight_only, "int8_plane_linear", counted)
    return fast(x), reference(x), sum(answered), fast.runner.notes


@pytest.mark.parametrize("bits,symmetric", [(8, True), (8, False), (4, True), (4, False)])
@pytest.mark.parametrize("shape", [(1, 1, 66), (3, 66), (2, 5, 66), (16, 67)])
@pytest.mark.parametrize("bias", [True, False])
def test_int8_shared_planes_match_reference_per_channel(monkeypatch, bits, symmetric, shape, bias):
    columns = shape[-1] + (shape[-1] % 2 if bits == 4 else 0)  # int4 packs two columns a byte
    shape = (*shape[:-1], columns)
    model = QuantLinear(torch.randn(24, columns), bits, None, symmetric, bias=bias)
    x = torch.randn(shape)
    x[..., 3] *= 300  # an outlier channel: the planes' error is relative to each row's largest value
    got, want, plane_calls, notes = _reference_and_planes_counted(monkeypatch, model, x)
    assert plane_calls == 1
    assert_close_outputs(got, want)
    exact = x.double() @ qformat.dequantize(model.qweight, model.scale, model.zero, bits).double().T
    exact = exact + (model.bias.double() if bias else 0)
    assert ((got.double() - exact).norm() / exact.norm()).item() < 2e-7  # as close as fp32 itself
    zero = "" if symmetric else " zero-point"
    assert notes == [f"quantized_linear: quantized_linear w{bits}{zero} per-channel -> rows <= 16: 4 int8 planes "
                     "of x times the int8 weight (torch._int_mm); else dequantized in scratch (whole weight) + addmm "
                     "(no AMX kernel: disabled by the test)"]


@pytest.mark.parametrize("bits,group_size,symmetric", [(8, 16, True), (4, 16, False), (4, 32, True)])
def test_group_wise_falls_back_to_dequantized_tiles_and_matches(monkeypatch, bits, group_size, symmetric):
    model = QuantLinear(torch.randn(24, 64), bits, group_size, symmetric)
    x = torch.randn(2, 64)
    got, want, plane_calls, notes = _reference_and_planes_counted(monkeypatch, model, x)
    assert plane_calls == 0
    assert_close_outputs(got, want)
    assert f"group-wise ({group_size} columns) -> dequantized in scratch (whole weight) + addmm" in notes[0]


def test_many_rows_and_non_finite_rows_take_the_dequantized_path(monkeypatch):
    model = QuantLinear(torch.randn(24, 40), 8)
    for x in (torch.randn(17, 40), torch.tensor([[float("inf")] + [1.0] * 39, [float("nan")] * 40])):
        got, want, plane_calls, _ = _reference_and_planes_counted(monkeypatch, model, x)
        assert plane_calls == 0
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isinf(), want.isinf())
        assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))  # the same dequantized weight and addmm


def test_int8_planes_reconstruct_rows_and_fit_int8():
    rows = torch.randn(5, 33) * torch.logspace(-6, 6, 5).unsqueeze(1)
    rows[2] = 0.0
    planes, steps = weight_only.split_into_int8_planes(rows)
    assert planes.dtype == torch.int8 and planes.shape == (4 * 5, 33) and int(planes.abs().max()) <= 127
    step = rows.double().abs().amax(dim=1, keepdim=True) * (1 / 127) + torch.finfo(torch.float64).tiny
    powers = torch.tensor([254.0**-p for p in range(4)], dtype=torch.float64).reshape(4, 1, 1)
    assert torch.allclose(steps, powers * step, rtol=1e-12, atol=0)
    rebuilt = (planes.view(4, 5, 33).double() * powers).sum(0) * step
    bound = rows.abs().amax(dim=1, keepdim=True).double() * 2.5e-10
    assert bool(((rebuilt - rows.double()).abs() <= bound).all())
    assert weight_only.split_into_int8_planes(torch.tensor([[1.0, float("nan")]])) is None


def test_scratch_tiles_work_in_and_out_of_inference_mode():
    q = qformat.quantize_rtn(torch.randn(24, 40), 8, 8)
    x = torch.randn(20, 40)
    want = torch.ops.fxc.quantized_linear(x, q.qweight, q.scale, None, None, 8)
    results = []

    def fresh_thread():  # a new thread: its scratch is created inside inference mode, then written outside
        with torch.inference_mode():
            results.append(weight_only.weight_only_linear(x, q.qweight, q.scale, None, None, 8))
        results.append(weight_only.weight_only_linear(x, q.qweight, q.scale, None, None, 8))

    thread = threading.Thread(target=fresh_thread)
    thread.start()
    thread.join()
    assert len(results) == 2 and all(torch.equal(y, want) for y in results)


@pytest.mark.parametrize("rows", [2, 20])  # the plane kernel's rows and the tiles' rows
def test_gradients_flow_through_the_fast_path(rows):
    q, other = qformat.quantize_rtn(torch.randn(24, 40), 8), qformat.quantize_rtn(torch.randn(24, 40), 8)
    leaf = torch.randn(rows, 40, requires_grad=True)
    first = weight_only.weight_only_linear(leaf, q.qweight, q.scale, None, None, 8)
    weight_only.weight_only_linear(leaf, other.qweight, other.scale, None, None, 8)  # no reuse of its tile
    first.sum().backward()
    assert torch.allclose(leaf.grad, qformat.dequantize(q.qweight, q.scale, None, 8).sum(0).expand(rows, 40))


def test_int8_weight_is_the_stored_integers():
    for bits in (8, 4):
        q = qformat.quantize_rtn(torch.randn(6, 32), bits, 8, symmetric=False)
        ints = weight_only.int8_weight(q)
        assert ints.dtype == torch.int8 and torch.equal(ints, qformat.unpack(q.qweight, bits))
    assert weight_only.int8_weight(q._replace(bits=8)) is q.qweight  # int8 weights are used as stored


def test_dequantize_into_scratch_matches_qformat_and_reuses_the_buffer():
    q = qformat.quantize_rtn(torch.randn(6, 32), 4, 8, symmetric=False)
    first = weight_only.scratch_tile(6 * 32, torch.device("cpu"))
    out = weight_only.dequantize_into(first.view(6, 32), q)
    assert torch.equal(out, qformat.dequantize(q.qweight, q.scale, q.zero_point, 4))
    again = weight_only.scratch_tile(5 * 32, torch.device("cpu"))
    assert again.data_ptr() == first.data_ptr()  # one buffer per thread, reused by every layer


@pytest.mark.parametrize("crossover", [0.0, 1.0])
def test_sparse_linear_uses_csr_past_the_crossover_and_dense_below(crossover):
    model = SparseLinear(torch.randn(16, 32), 1, 4, int8_values=True)
    x = torch.randn(4, 32)
    fast, reference = compile_fast_and_reference(model, x, sparse_crossover=crossover)
    assert_close_outputs(fast(x), reference(x))
    kernel = "torch CSR" if crossover == 1.0 else "dense BLAS"
    assert f"-> {kernel}" in fast.runner.notes[0]
    swapped = [n.target for n in fast.runner.graph.nodes if n.op == "call_function"]
    assert swapped == [fast_ops.csr_linear if crossover == 1.0 else fast_ops.dense_linear]


def test_compiled_graph_stays_canonical_and_fast_false_runs_it_as_is():
    model = Int8Linear(torch.randn(8, 16))
    x = torch.randn(3, 16)
    fast, reference = compile_fast_and_reference(model, x)
    assert [n.target for n in fast.graph.graph.nodes if n.op == "call_function"] == [fxc_ops.int8_linear.default]
    assert [n.target for n in fast.runner.graph.nodes if n.op == "call_function"] == [fast_ops.int8_linear_int_mm]
    assert reference.runner is reference.graph
    assert fast.runner.qweight is fast.graph.qweight  # the fast copy shares the weights


def test_quantized_llama_runs_the_same_on_fast_torch_and_numpy():
    pytest.importorskip("transformers")
    from tests import tiny_models

    model, example = tiny_models.tiny_llama(layers=1)
    traced = fxc.trace(model, example)  # once; fxc.compile copies it for each pipeline
    for passes in ("quantize{bits=4,group-size=32}", "quantize{act-bits=8}"):
        reference = fxc.compile(traced, passes=passes, example_inputs=example, backend="torch",
                                backend_options={"fast": False})
        fast = fxc.compile(reference.graph, example_inputs=example, backend="torch")
        numpy_module = fxc.compile(reference.graph, example_inputs=example, backend="numpy")
        want = reference(*example).logits
        assert torch.equal(fast(*example).logits, want)  # same ops (whole-weight dequantization, _int_mm)
        assert_close_outputs(numpy_module(*example).logits, want)
    shared = [n for n in fast.runner.graph.nodes if n.target is fast_ops.quantize_per_token]
    assert len(shared) == 2  # q/k/v read one quantized input, gate/up another


def test_llama_linears_reading_one_input_share_its_int8_planes():
    pytest.importorskip("transformers")
    from tests import tiny_models

    model, _ = tiny_models.tiny_llama(layers=1)
    example = (torch.randint(0, 64, (1, 8)),)  # 8 rows <= PLANE_ROWS: the plane kernel runs
    reference = fxc.compile(model, passes="quantize{bits=8}", example_inputs=example, backend="torch",
                            backend_options={"fast": False})
    fast = fxc.compile(reference.graph, example_inputs=example, backend="torch")
    shared = [n for n in fast.runner.graph.nodes if n.target is weight_only.shared_planes]
    assert len(shared) == 2  # q/k/v read one input, gate/up another
    assert_close_outputs(fast(*example).logits, reference(*example).logits)


def test_torch_compile_option_wraps_the_fast_graph_and_says_so():
    model = Int8Linear(torch.randn(8, 16))
    x = torch.randn(3, 16)
    compiled = fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"torch_compile": True})
    assert isinstance(compiled.runner, torch._dynamo.eval_frame.OptimizedModule)  # compiles on its first call
    swapped = [n.target for n in compiled.runner._orig_mod.graph.nodes if n.op == "call_function"]
    assert swapped == [fast_ops.int8_linear_int_mm]
    assert compiled.runner.report_notes()[-1] == "torch backend: graph under torch.compile (inductor, dynamic shapes)"
