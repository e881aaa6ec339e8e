"""The torch backend's `native` option and the native kernel's plumbing, on any CPU: the AMX kernel is
made to look loaded and its split recorded (returning "not finite", so the reference-exact tiles
compute the output), so the choice is tested where the kernel cannot run (on an AMX CPU,
test_native_planes.py runs the kernel itself). Also: the option is saved with the model,
the fxc_native.plane_linear op dispatches to the backend's CPU kernel, the C source sits next to
build.py, and compiled kernels go to the XDG cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fxc
from fxc.codegen.torch import weight_only as wo
from fxc.codegen.torch.native import build as native_build
from tests.codegen.numpy.numpy_check import assert_close_outputs
from tests.codegen.numpy.test_fxc_ops import QuantLinear


@pytest.fixture
def pretend_native(monkeypatch):
    """The AMX kernel as if loaded; each split it is asked for is recorded and refused (None: the caller
    falls back to the dequantized tiles, as for a row holding inf or nan)."""
    calls = []
    monkeypatch.setattr(native_build, "plane_kernel", lambda: object())
    monkeypatch.setattr(native_build, "plane_kernel_status", lambda: "AMX-int8 plane kernel (pretend)")
    monkeypatch.setattr(native_build, "split_rows", lambda rows: calls.append(tuple(rows.shape)))
    return calls


def _compiled(native: bool | None):
    model = QuantLinear(torch.randn(24, 64), 8, None, True)
    x = torch.randn(2, 5, 64)
    reference = fxc.compile(model, example_inputs=(x,), backend="torch", backend_options={"fast": False})
    options = {} if native is None else {"native": native}
    return fxc.compile(reference.graph, example_inputs=(x,), backend="torch", backend_options=options), reference, x


def test_native_on_by_default_takes_the_kernel(pretend_native):
    fast, reference, x = _compiled(None)
    assert_close_outputs(fast(x), reference(x))
    assert pretend_native == [(10, 64)]
    assert "AMX-int8 plane kernel (pretend): 4 int8 planes" in fast.runner.notes[0]


def test_native_false_never_touches_the_kernel(pretend_native):
    fast, reference, x = _compiled(False)
    assert_close_outputs(fast(x), reference(x))
    assert pretend_native == []
    assert "native kernels off (option native=False)" in fast.runner.notes[0]
    [linear] = [n for n in fast.runner.graph.nodes if n.target is wo.weight_only_linear]
    assert linear.args[-1] is False


def test_native_option_is_saved_with_the_model(tmp_path, pretend_native):
    fast, _, x = _compiled(False)
    loaded = fxc.load(fxc.save(fast, tmp_path / "saved"))
    assert loaded.backend_options == {"native": False}
    loaded(x)
    assert pretend_native == []


def test_native_must_be_a_bool():
    with pytest.raises(fxc.OptionError, match="native"):
        fxc.compile(QuantLinear(torch.randn(4, 8), 8), example_inputs=(torch.randn(1, 8),), backend="torch",
                    backend_options={"native": "no"})  # fmt: skip


def test_plane_linear_op_dispatches_to_the_backends_cpu_kernel(request):
    model = QuantLinear(torch.randn(24, 64), 8, None, False)
    rows = torch.randn(3, 64)
    args = (model.qweight, model.scale, model.zero, model.bias, 8)
    want = torch.ops.fxc.quantized_linear(rows, *args)
    if native_build.plane_kernel() is None:  # not loaded here: the CPU kernel takes the tiles
        torch.testing.assert_close(torch.ops.fxc_native.plane_linear(rows, *args), want)
    calls = request.getfixturevalue("pretend_native")
    torch.testing.assert_close(torch.ops.fxc_native.plane_linear(rows, *args), want)
    assert calls == [(3, 64)]


@pytest.mark.parametrize("native", [True, False])
def test_torch_compile_emits_plane_linear_only_with_native(pretend_native, native):
    model = QuantLinear(torch.randn(24, 64), 8, None, False)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    def call(rows):
        return wo.weight_only_linear(rows, model.qweight, model.scale, model.zero, model.bias, 8, None, native)

    torch._dynamo.reset()
    try:
        x = torch.randn(7, 64)
        assert_close_outputs(torch.compile(call, backend=backend, fullgraph=True)(x), call(x))
    finally:
        torch._dynamo.reset()
    targets = {n.target for n in graphs[0].graph.nodes if n.op == "call_function"}
    plane_linear = {torch.ops.fxc_native.plane_linear.default, torch.ops.fxc_native.plane_linear}
    assert bool(targets & plane_linear) == native
    assert pretend_native == ([(7, 64)] * 2 if native else [])  # compiled (the op's CPU kernel), then eager


def test_the_c_source_sits_next_to_build_py():
    assert native_build.SOURCE == Path(native_build.__file__).with_name("amx_plane_gemm.c")
    assert native_build.SOURCE.is_file()


def test_compiled_kernels_go_to_the_xdg_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert native_build.cache_dir() == tmp_path / "fxc" / "native"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as the XDG rule says
    assert native_build.cache_dir() == Path.home() / ".cache" / "fxc" / "native"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert native_build.cache_dir() == Path.home() / ".cache" / "fxc" / "native"
