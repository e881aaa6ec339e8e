"""The torch backend's fast CPU path: each fxc op swapped for a fast kernel computes what the
reference op computes (int8 x int8 through torch._int_mm bit-exact), the choice is reported, and
the compiled module's graph stays the canonical IR."""

from __future__ import annotations

import pytest
import torch

import fxc
from fxc.codegen import torch_fast
from tests.codegen.numpy_check import assert_close_outputs
from tests.codegen.test_numpy_fxc_ops import Int8Linear, QuantLinear, SparseLinear

fxc_ops = torch.ops.fxc


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
    monkeypatch.setattr(torch_fast, "int_mm_supported", lambda *args: False)
    monkeypatch.setattr(torch, "_int_mm", None)  # must not be called
    qx = torch.randint(-127, 128, (3, 40), dtype=torch.int8)
    qw = torch.randint(-128, 128, (5, 40), dtype=torch.int8)
    assert torch.equal(torch_fast.int8_matmul(qx, qw), (qx.double() @ qw.double().T).int())


def test_int_mm_constraints_on_cuda_are_checked_before_use():
    cuda = torch.device("cuda")
    assert torch_fast.int_mm_supported(3, 64, 32, cuda)  # rows <= 16 are padded
    assert not torch_fast.int_mm_supported(32, 60, 32, cuda)  # K not a multiple of 8
    assert not torch_fast.int_mm_supported(32, 64, 30, cuda)
    assert torch_fast.int_mm_supported(3, 5, 7, torch.device("cpu"))


@pytest.mark.parametrize("bits,group_size,symmetric", [(8, None, True), (4, 16, False)])
@pytest.mark.parametrize("tiled", [False, True])
def test_weight_only_linear_whole_or_tiled_matches_reference(monkeypatch, bits, group_size, symmetric, tiled):
    if tiled:
        monkeypatch.setattr(torch_fast, "TILE_BYTES", 4 * 48 * 7)  # 7 rows a tile: 3 ragged tiles
    model = QuantLinear(torch.randn(20, 48), bits, group_size, symmetric)
    x = torch.randn(2, 3, 48)
    fast, reference = compile_fast_and_reference(model, x)
    assert_close_outputs(fast(x), reference(x))
    assert ("tiles of" in fast.runner.notes[0]) == tiled


@pytest.mark.parametrize("crossover", [0.0, 1.0])
def test_sparse_linear_uses_csr_past_the_crossover_and_dense_below(crossover):
    model = SparseLinear(torch.randn(16, 32), 1, 4, int8_values=True)
    x = torch.randn(4, 32)
    fast, reference = compile_fast_and_reference(model, x, sparse_crossover=crossover)
    assert_close_outputs(fast(x), reference(x))
    kernel = "torch CSR" if crossover == 1.0 else "dense BLAS"
    assert f"-> {kernel}" in fast.runner.notes[0]
    swapped = [n.target for n in fast.runner.graph.nodes if n.op == "call_function"]
    assert swapped == [torch_fast.csr_linear if crossover == 1.0 else torch_fast.dense_linear]


def test_compiled_graph_stays_canonical_and_fast_false_runs_it_as_is():
    model = Int8Linear(torch.randn(8, 16))
    x = torch.randn(3, 16)
    fast, reference = compile_fast_and_reference(model, x)
    assert [n.target for n in fast.graph.graph.nodes if n.op == "call_function"] == [fxc_ops.int8_linear.default]
    assert [n.target for n in fast.runner.graph.nodes if n.op == "call_function"] == [torch_fast.int8_linear_int_mm]
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
    shared = [n for n in fast.runner.graph.nodes if n.target is torch_fast.quantize_per_token]
    assert len(shared) == 2  # q/k/v read one quantized input, gate/up another


def test_torch_compile_option_wraps_the_fast_graph_and_says_so():
    model = Int8Linear(torch.randn(8, 16))
    x = torch.randn(3, 16)
    compiled = fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"torch_compile": True})
    assert isinstance(compiled.runner, torch._dynamo.eval_frame.OptimizedModule)  # compiles on its first call
    swapped = [n.target for n in compiled.runner._orig_mod.graph.nodes if n.op == "call_function"]
    assert swapped == [torch_fast.int8_linear_int_mm]
    assert compiled.runner.report_notes()[-1] == "torch backend: graph under torch.compile (inductor, dynamic shapes)"
