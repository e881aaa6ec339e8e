"""The torch backend's kernels by CPU instruction-set family (codegen/torch/native/isa.py) and the AVX2 kernels
(native/avx2_weight_only.c, avx2_int8.c through native/avx2.py), on any x86-64 CPU with AVX2:

- families from /proc/cpuinfo flags, the `isa` cap, the option checked and saved with the model;
- weight-only int8 / int4 (per channel, groups of 32 / 64 / 128, with and without zero points) against the
  exact product on the dequantized weight, within float32 GEMM rounding ((K + 4) 2^-24 sum |x| |w| + |bias|),
  at 1, 2, 7, 16, 33 and 128 rows (every loop of the kernel), ragged K and N, with and without bias, on 1 and 2
  threads; inf / nan where the reference has them, finite outputs for rows near float32's max;
- W8A8 (dynamic and static) bit-exact with the reference op, its quantization bit-exact with qformat's;
- the backend: which kernel each family gets, the one-line summary, the shared W8A8 quantization, and the torch
  kernels with a clear note when no C compiler is found (monkeypatched), or OpenMP is missing.
Kernel tests skip, saying why, where the AVX2 library cannot load. Writes compiled kernels into pytest temporary
folders (the no-compiler and no-OpenMP tests); preserves everything else.
"""

from __future__ import annotations

import os
import shutil
import stat

import pytest
import torch

import fxc
from fxc.codegen.torch import fast_ops
from fxc.codegen.torch import weight_only as wo
from fxc.codegen.torch.native import avx2, isa
from fxc.codegen.torch.native import build as native_build
from fxc.ir import qformat
from tests.codegen.numpy.numpy_check import assert_close_outputs
from tests.codegen.numpy.test_fxc_ops import Int8Linear, QuantLinear

needs_avx2 = pytest.mark.skipif(
    native_build.avx2_kernel() is None, reason=f"no AVX2 kernels: {native_build.avx2_kernel_status()}"
)
ROWS = [1, 2, 7, 16, 33, 128]
SCHEMES = {  # name -> (bits, group size, symmetric)
    "w8": (8, None, True),
    "w8 zero-point": (8, None, False),
    "w8 g64": (8, 64, True),
    "w4": (4, None, True),
    "w4 zero-point": (4, None, False),
    "w4 g32": (4, 32, False),
    "w4 g64": (4, 64, False),
    "w4 g64 symmetric": (4, 64, True),
    "w4 g128": (4, 128, False),
}


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _weight(outputs: int, columns: int, scheme: str) -> qformat.QuantizedWeight:
    bits, group_size, symmetric = SCHEMES[scheme]
    return qformat.quantize_rtn(torch.randn(outputs, columns), bits, group_size, symmetric)


def _columns(scheme: str, ragged: bool) -> int:
    """Ragged: 16 k + 2 columns (tails past the blocks of 16) where the scheme allows it (per channel)."""
    bits, group_size, _ = SCHEMES[scheme]
    if group_size is not None:
        return 3 * group_size if ragged else 2 * max(group_size, 64)
    return 98 if ragged else 64


def assert_within_float32_gemm_rounding(got, x, weight, bias):
    """|got - exact| <= (K + 4) 2^-24 (|x| @ |W|^T + |bias|), exact in float64 on the dequantized weight."""
    dense = qformat.dequantize(*weight).double()
    exact = x.double() @ dense.T + (bias.double() if bias is not None else 0)
    magnitude = x.double().abs() @ dense.abs().T + (bias.double().abs() if bias is not None else 0)
    bound = (x.shape[-1] + 4) * 2.0**-24 * magnitude + 1e-30
    assert got.dtype == torch.float32 and got.shape == exact.shape
    worst = ((got.double() - exact).abs() / bound).max().item()
    assert worst <= 1, f"error {worst:.2f} times the float32 GEMM bound"


# --- families and the cap --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags,family", [
    ({"sse4_2"}, "generic"),
    ({"avx2", "fma"}, "generic"),  # no F16C
    ({"avx2", "fma", "f16c"}, "avx2"),
    ({"avx2", "fma", "f16c", "avx512f", "avx512bw"}, "avx2"),  # no AVX-512 VL
    ({"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl"}, "avx512"),
    ({"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"}, "avx512_vnni"),
    ({"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_tile", "amx_int8"}, "amx"),
    ({"avx2", "fma", "f16c", "amx_tile", "amx_int8"}, "avx2"),  # each family needs the ones below it
])
def test_family_of_cpu_flags(flags, family):
    assert isa.family_of(flags) == family
    assert isa.family_of(flags, "aarch64") == "generic"


def test_the_cap_lowers_the_family_and_never_raises_it(monkeypatch):
    monkeypatch.setattr(isa, "machine_family", lambda: "avx512")
    assert isa.effective_family("auto") == "avx512"
    assert isa.effective_family("avx2") == "avx2"
    assert isa.effective_family("generic") == "generic"
    assert isa.effective_family("amx") == "avx512"  # above the machine: the machine's
    assert isa.describe("avx2") == "avx2 (this CPU: avx512, capped by isa=avx2)"
    with pytest.raises(ValueError, match="isa must be one of"):
        isa.effective_family("sse")


def test_the_machine_family_is_read_from_cpuinfo():
    assert isa.machine_family() in isa.FAMILIES
    if "avx2" in isa.cpu_flags() and "fma" in isa.cpu_flags() and "f16c" in isa.cpu_flags():
        assert isa.at_least(isa.machine_family(), "avx2")


def test_isa_option_is_checked_and_saved_with_the_model(tmp_path):
    model, x = QuantLinear(torch.randn(24, 64), 8), torch.randn(3, 64)
    with pytest.raises(fxc.OptionError, match="isa"):
        fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"isa": "sse4"})
    compiled = fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"isa": "avx2"})
    loaded = fxc.load(fxc.save(compiled, tmp_path / "saved"))
    assert loaded.backend_options == {"isa": "avx2"}
    assert_close_outputs(loaded(x), compiled(x))


# --- the AVX2 weight-only kernel -------------------------------------------------------------------------------


@needs_avx2
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("ragged", [False, True], ids=["even", "ragged"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
def test_weight_only_within_float32_rounding(scheme, rows, ragged, bias):
    columns, outputs = _columns(scheme, ragged), 37 if ragged else 48
    weight = _weight(outputs, columns, scheme)
    b = torch.randn(outputs) if bias else None
    x = torch.randn(rows, columns)
    x[:, 1] *= 300  # an outlier column
    got = avx2.weight_only_linear(x, weight, b)
    assert_within_float32_gemm_rounding(got, x, weight, b)
    want = torch.ops.fxc.quantized_linear(x, *weight[:3], b, weight.bits)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_avx2
@pytest.mark.parametrize("loop", ["decode", "few rows", "outer products"])
@pytest.mark.parametrize("scheme", ["w8 zero-point", "w4", "w4 g64", "w8 g64"])
@pytest.mark.parametrize("rows", [1, 3, 17, 40])
def test_every_loop_at_any_number_of_rows(monkeypatch, threads, loop, scheme, rows):
    gemv, outer = {"decode": (10**6, 10**6), "few rows": (0, 10**6), "outer products": (0, 0)}[loop]
    monkeypatch.setattr(avx2, "GEMV_ROWS", {8: gemv, 4: gemv})
    monkeypatch.setattr(avx2, "OUTER_ROWS", outer)
    columns = _columns(scheme, True)
    weight, b, x = _weight(37, columns, scheme), torch.randn(37), torch.randn(rows, columns)
    assert_within_float32_gemm_rounding(avx2.weight_only_linear(x, weight, b), x, weight, b)


@needs_avx2
@pytest.mark.parametrize("rows", [1, 5, 33])
@pytest.mark.parametrize("scheme", ["w8", "w4 g64"])
def test_inf_and_nan_where_the_reference_has_them(rows, scheme):
    weight = _weight(24, 128, scheme)
    x = torch.randn(rows, 128)
    x[0, 3] = float("inf")
    x[-1, 7] = float("nan")
    got = avx2.weight_only_linear(x, weight, None)
    want = torch.ops.fxc.quantized_linear(x, *weight[:3], None, weight.bits)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isinf(), want.isinf())
    assert torch.equal(got[want.isinf()], want[want.isinf()])
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-4, atol=1e-4)


@needs_avx2
@pytest.mark.parametrize("rows", [1, 7, 33])
@pytest.mark.parametrize("scheme", ["w8 zero-point", "w4 g64"])
def test_rows_near_float32_max_are_scaled_and_stay_finite(rows, scheme):
    weight = _weight(24, 128, scheme)._replace(scale=_weight(24, 128, scheme).scale * 1e-4)
    x = torch.randn(rows, 128) * 3e37
    x[0, :4] = torch.finfo(torch.float32).max
    x[-1] *= 1e-30  # a row of ordinary size beside them
    got = avx2.weight_only_linear(x, weight, None)
    assert bool(torch.isfinite(got).all())
    assert_within_float32_gemm_rounding(got, x, weight, None)


# --- the AVX2 W8A8 kernel -------------------------------------------------------------------------------------


@needs_avx2
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("shape", [(24, 64), (37, 1100), (5, 70)], ids=["even", "ragged", "small"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("int_mm_above", [None, 4], ids=["avx2 only", "torch._int_mm above 4 rows"])
def test_w8a8_is_bit_exact(threads, static, rows, shape, bias, int_mm_above):
    outputs, columns = shape
    qweight = torch.randint(-128, 128, (outputs, columns), dtype=torch.int8)  # -128 included
    qweight[0, :] = -128
    weight_scale = torch.rand(outputs) * 0.01 + 1e-3
    b = torch.randn(outputs) if bias else None
    input_scale = torch.tensor(0.02) if static else None
    x = torch.randn(rows, columns) * 2
    x[0, 0] = -x[0].abs().max() * 1.001  # a row's most negative value quantizes to -128
    got = fast_ops.int8_linear_avx2(x, qweight, weight_scale, b, input_scale, None, int_mm_above)
    want = torch.ops.fxc.int8_linear(x, qweight, weight_scale, b, input_scale)
    assert torch.equal(got, want)


@needs_avx2
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("rows", [1, 5])
def test_w8a8_rows_near_float32_max_are_bit_exact(static, rows):
    qweight = torch.randint(-127, 128, (24, 64), dtype=torch.int8)
    weight_scale = torch.rand(24) * 1e-3
    x = torch.randn(rows, 64) * 3e37
    x[0, :4] = torch.finfo(torch.float32).max
    args = (qweight, weight_scale, torch.randn(24), torch.tensor(1e36) if static else None)
    assert torch.equal(fast_ops.int8_linear_avx2(x, *args), torch.ops.fxc.int8_linear(x, *args))


@needs_avx2
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_w8a8_quantization_is_qformats_bit_for_bit(static):
    x = torch.randn(9, 45) * torch.logspace(-20, 20, 9).unsqueeze(1)
    x[3] = 0.0
    x[5, :] = 0.125 * (torch.arange(45) - 22 + 0.5)  # x / 0.125 halfway between integers: round half to even
    x[5, 0] = 127.5 * 0.125  # max |x| / 127.5 = 0.125: the dynamic scale is the static one
    scale = torch.tensor(0.125) if static else None
    quantized = avx2.quantize_rows(x, scale)
    if static:
        want_q, want_s = qformat.quantize_activations(x, scale.reshape(1, 1)), torch.full((9,), 0.125)
    else:
        want_q, want_s = qformat.quantize_activations_per_token(x)
    assert quantized.nonfinite == 0
    assert torch.equal(quantized.q[:, :45], want_q.to(torch.int16)) and not quantized.q[:, 45:].any()
    assert torch.equal(quantized.scale, want_s.reshape(-1))


@needs_avx2
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_w8a8_rows_with_inf_or_nan_take_the_float_path(static):
    qweight = torch.randint(-127, 128, (24, 40), dtype=torch.int8)
    weight_scale, b = torch.rand(24) * 0.01, torch.randn(24)
    x = torch.randn(4, 40)
    x[1, 5], x[3, 0] = float("inf"), float("nan")
    args = (qweight, weight_scale, b, torch.tensor(0.03) if static else None)
    assert avx2.quantize_rows(x, args[3]).nonfinite == 2
    got, want = fast_ops.int8_linear_avx2(x, *args), torch.ops.fxc.int8_linear(x, *args)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))


# --- the backend ------------------------------------------------------------------------------------------------


def _compiled(model, x, **options):
    reference = fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"fast": False})
    return fxc.compile(reference.graph, example_inputs=(x,), backend="torch", backend_options=options), reference


@needs_avx2
@pytest.mark.parametrize("scheme", ["w8", "w4 g64"])
def test_backend_capped_to_avx2_runs_the_avx2_kernel_and_says_so(monkeypatch, scheme):
    bits, group_size, symmetric = SCHEMES[scheme]
    model, x = QuantLinear(torch.randn(40, 128), bits, group_size, symmetric), torch.randn(2, 5, 128)
    fast, reference = _compiled(model, x, isa="avx2")
    calls = []
    kernel = avx2.weight_only_linear
    monkeypatch.setattr(avx2, "weight_only_linear", lambda *a: calls.append(a[0].shape) or kernel(*a))
    assert_close_outputs(fast(x), reference(x))
    assert calls == [(10, 128)]
    assert "-> AVX2 kernel (rows <= " in fast.runner.notes[0]
    summary = fast.runner.summary_note()
    assert summary.startswith("torch backend: CPU avx2 (") and "\n" not in summary
    assert "weight-only -> AVX2 kernel" in summary and "W8A8 -> AVX2 int8 kernel" in summary
    assert summary == fast.runner.summary_note() and len(fast.runner.report_notes()) == 1  # per layer, unchanged


@needs_avx2
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_backend_capped_to_avx2_runs_w8a8_on_the_avx2_kernel_bit_exact(static):
    model = Int8Linear(torch.randn(24, 1100), torch.tensor(0.03) if static else None)
    x = torch.randn(7, 1100)
    fast, reference = _compiled(model, x, isa="avx2")
    assert torch.equal(fast(x), reference(x))
    assert [n.target for n in fast.runner.graph.nodes if n.op == "call_function"] == [fast_ops.int8_linear_avx2]
    assert fast.runner.notes[0].endswith("int8_linear -> AVX2 int8 kernel (int16 madd, exact int32; float32 x, "
                                         "else torch._int_mm)")


@needs_avx2
@pytest.mark.parametrize("rows", [3, 40])
def test_on_vnni_w8a8_takes_the_avx2_kernel_for_few_rows_and_int_mm_for_many(monkeypatch, rows):
    monkeypatch.setattr(isa, "machine_family", lambda: "avx512_vnni")
    model, x = Int8Linear(torch.randn(24, 100)), torch.randn(rows, 100)
    fast, reference = _compiled(model, x)
    counted = {"avx2": 0, "int_mm": 0}
    kernel, int_mm = avx2.int8_linear, fast_ops.int8_linear_int_mm
    monkeypatch.setattr(avx2, "int8_linear", lambda *a: counted.update(avx2=1) or kernel(*a))
    monkeypatch.setattr(fast_ops, "int8_linear_int_mm", lambda *a: counted.update(int_mm=1) or int_mm(*a))
    assert torch.equal(fast(x), reference(x))
    assert counted == ({"avx2": 1, "int_mm": 0} if rows <= 16 else {"avx2": 0, "int_mm": 1})
    assert fast.runner.notes[0].endswith("rows <= 16: AVX2 int8 kernel (int16 madd, exact int32); more: "
                                         "torch._int_mm (VNNI/AMX, exact)")
    assert "W8A8 -> AVX2 int8 kernel (<= 16 rows), torch._int_mm (oneDNN VNNI/AMX) above" in fast.runner.summary_note()


@needs_avx2
def test_llama_linears_reading_one_input_share_one_avx2_quantization():
    pytest.importorskip("transformers")
    from tests import tiny_models

    model, example = tiny_models.tiny_llama(layers=1)
    reference = fxc.compile(model, passes="quantize{act-bits=8}", example_inputs=example, backend="torch",
                            backend_options={"fast": False})  # fmt: skip
    fast = fxc.compile(reference.graph, example_inputs=example, backend="torch", backend_options={"isa": "avx2"})
    shared = [n for n in fast.runner.graph.nodes if n.target is fast_ops.quantize_rows_avx2]
    assert len(shared) == 2  # q/k/v read one input, gate/up another
    assert torch.equal(fast(*example).logits, reference(*example).logits)


@pytest.mark.parametrize("family", [f for f in isa.FAMILIES if isa.at_least(isa.machine_family(), f)])
@pytest.mark.parametrize("passes", ["quantize{bits=8}", "quantize{bits=4,group-size=32}", "quantize{act-bits=8}"])
def test_every_family_this_machine_has_matches_the_reference(family, passes):
    pytest.importorskip("transformers")
    from tests import tiny_models

    model, example = tiny_models.tiny_llama(layers=1)
    reference = fxc.compile(model, passes=passes, example_inputs=example, backend="torch",
                            backend_options={"fast": False})  # fmt: skip
    fast = fxc.compile(reference.graph, example_inputs=example, backend="torch", backend_options={"isa": family})
    assert_close_outputs(fast(*example).logits, reference(*example).logits)
    assert fast.runner.summary_note().startswith(f"torch backend: CPU {family} (")


@pytest.mark.parametrize("options", [{"isa": "generic"}, {"native": False}])
def test_generic_family_or_native_off_never_calls_the_avx2_kernels(monkeypatch, options):
    def refuse(*args):
        raise AssertionError("the AVX2 kernel ran")

    monkeypatch.setattr(avx2, "weight_only_linear", refuse)
    monkeypatch.setattr(avx2, "int8_linear", refuse)
    for model in (QuantLinear(torch.randn(24, 64), 4, 32, False), Int8Linear(torch.randn(24, 64))):
        x = torch.randn(3, 64)
        fast, reference = _compiled(model, x, **options)
        assert_close_outputs(fast(x), reference(x))
        assert "AVX2 kernel" not in fast.runner.notes[0].split("->")[1].split("(")[0]


@pytest.fixture
def fresh_avx2_build(monkeypatch, tmp_path):
    """build.py's AVX2 loader with an empty cache folder; the loaded library is forgotten again afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    native_build._load_avx2.cache_clear()
    yield
    native_build._load_avx2.cache_clear()


@pytest.mark.skipif(not isa.at_least(isa.machine_family(), "avx2"), reason="this CPU has no AVX2")
def test_without_a_c_compiler_the_torch_kernels_run_with_a_clear_note(monkeypatch, fresh_avx2_build):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert native_build.avx2_kernel() is None
    assert native_build.avx2_kernel_status() == "native kernel build failed: no C compiler (cc or gcc) on PATH"
    model, x = QuantLinear(torch.randn(24, 64), 8), torch.randn(3, 64)
    fast, reference = _compiled(model, x, isa="avx2")
    assert_close_outputs(fast(x), reference(x))
    assert fast.runner.notes[0].endswith("(int8 planes: no VNNI/AMX in avx2; no AVX2 kernel: native kernel build "
                                         "failed: no C compiler (cc or gcc) on PATH)")
    assert "weight-only -> dequantized tiles + BLAS (native kernel build failed: no C compiler" in (
        fast.runner.summary_note())
    w8a8, reference = _compiled(Int8Linear(torch.randn(24, 64)), x, isa="avx2")
    assert torch.equal(w8a8(x), reference(x))
    assert "no VNNI/AMX: scalar loop; AVX2 kernel: native kernel build failed: no C compiler" in w8a8.runner.notes[0]


@pytest.mark.skipif(not isa.at_least(isa.machine_family(), "avx2") or shutil.which("cc") is None,
                    reason="needs an AVX2 CPU and cc")  # fmt: skip
def test_a_compiler_without_openmp_builds_a_one_thread_library(monkeypatch, tmp_path, fresh_avx2_build, threads):
    wrapper = tmp_path / "cc-without-openmp"
    refuse = 'for a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done'  # fails like a compiler without OpenMP
    wrapper.write_text(f'#!/bin/sh\n{refuse}\nexec {shutil.which("cc")} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(wrapper))
    assert native_build.avx2_kernel() is not None, native_build.avx2_kernel_status()
    assert native_build.avx2_kernel_status() == "AVX2 kernels (no OpenMP: 1 thread)"
    assert len(os.listdir(tmp_path / "cache" / "fxc" / "native")) == 1
    weight, x = _weight(37, 98, "w4 zero-point"), torch.randn(33, 98)
    assert_within_float32_gemm_rounding(avx2.weight_only_linear(x, weight, None), x, weight, None)


@needs_avx2
def test_torch_compile_with_avx2_cap_uses_the_dequantized_tiles():
    model, x = QuantLinear(torch.randn(24, 64), 8, None, False), torch.randn(2, 5, 64)
    compiled = fxc.compile(model, example_inputs=(x,), backend="torch",
                           backend_options={"torch_compile": True, "isa": "avx2"})  # fmt: skip
    reference = fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"fast": False})
    assert_close_outputs(compiled(x), reference(x))
    assert "int8 planes: no VNNI/AMX in avx2; no AVX2 kernel: torch.compile" in compiled.runner.report_notes()[0]
    assert wo.has_int8_dot("avx2") is False
