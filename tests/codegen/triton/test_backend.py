"""backend="triton" end to end in Triton's interpreter: a tiny Llama quantized int8, int4 and W8A8 (and
2:4 sparse) matches the torch backend; decode shapes take the GEMV template; what cannot be lowered
runs in torch and is reported; bad set-ups fail with errors that name the fix."""

import pytest

pytest.importorskip("triton")
pytest.importorskip("transformers")

import torch  # noqa: E402
from tiny_models import call, cnn, first_tensor, tiny_llama  # noqa: E402

import fxc  # noqa: E402
from fxc.codegen.triton import cache  # noqa: E402
from fxc.passmgr import registry  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")
PIPELINES = {
    "int8": "quantize{bits=8}",
    "int4": "quantize{bits=4,group-size=32}",
    "w8a8": "quantize{act-bits=8}",
    "sparse-2:4": "prune{pattern=2:4,lower=true}",
}
OPTIONS = {"poison_outputs": True}


@pytest.fixture(scope="module")
def llama():
    """(traced tiny Llama, example): traced once, every compile below starts from a copy of the graph."""
    torch.manual_seed(0)
    model, example = tiny_llama(layers=2, hidden=64)
    return fxc.trace(model, example), example


@pytest.fixture(scope="module")
def compiled(llama, tmp_path_factory):
    """{scheme: (torch-backend module, triton-backend module)} on the same compressed graph."""
    graph, example = llama
    out = {}
    for scheme, passes in PIPELINES.items():
        reference = fxc.compile(graph, passes=passes, example_inputs=example, backend="torch")
        options = {**OPTIONS, "cache_dir": str(tmp_path_factory.mktemp("kernels"))}
        out[scheme] = reference, fxc.compile(reference.graph, example_inputs=example, backend="triton",
                                             backend_options=options)
    return out


@pytest.mark.parametrize("scheme", sorted(PIPELINES))
def test_tiny_llama_matches_torch_backend(llama, compiled, scheme):
    _, example = llama
    reference, triton_model = compiled[scheme]
    want, got = first_tensor(call(reference, example)), first_tensor(call(triton_model, example))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    runner = triton_model.runner
    ops_in_graph = [n for n in reference.graph.graph.nodes if fxc.ir.ops.is_fxc_op(n.target)]
    assert len(runner.partition.groups) == len(ops_in_graph) == 14  # 7 linears x 2 layers, lm_head dense
    assert not runner.partition.fallbacks
    fused = [group.describe() for group in runner.partition.groups]
    assert sum("silu -> mul(operand 0)" in text for text in fused) == 2  # SwiGLU: gate + silu + up multiply
    assert sum(text.endswith("+ add(operand 0)") for text in fused) == 4  # o_proj / down_proj + residual
    assert all(sum(call.launches.values()) == 1 and not call.fallbacks for call in runner.calls.values())


def test_decode_shapes_take_the_gemv_template(compiled):
    reference, triton_model = compiled["int4"]
    token = torch.randint(0, 64, (1, 1))
    torch.testing.assert_close(first_tensor(triton_model(token)), first_tensor(reference(token)), rtol=1e-4, atol=1e-4)
    templates = {name for call in triton_model.runner.calls.values() for name in call.launches}
    assert templates == {"gemv", "w4a16_gemm"}


def test_summary_source_and_report(compiled):
    _, triton_model = compiled["int8"]
    runner = triton_model.runner
    name = next(name for name, call in runner.calls.items() if "silu" in call.epilogue.describe())
    source = runner.source(name)
    assert "@triton.jit" in source and "tl.sigmoid(acc)" in source and "{{" not in source
    assert any(kernel.source == source for kernel in runner.kernels())
    notes = "\n".join(triton_model.report(show=False).notes)
    assert "14 fused kernels" in notes and "0 fxc ops in torch" in notes
    with pytest.raises(KeyError, match="fused calls"):
        runner.source("no_such_node")


def test_matches_numpy_backend_when_installed(llama, compiled):
    if "numpy" not in registry.names("fxc.backends"):
        pytest.skip("the numpy backend is not registered in this checkout")
    _, example = llama
    reference, triton_model = compiled["int8"]
    numpy_model = fxc.compile(reference.graph, example_inputs=example, backend="numpy")
    torch.testing.assert_close(first_tensor(call(triton_model, example)), first_tensor(call(numpy_model, example)),
                               rtol=1e-4, atol=1e-4)


def test_op_without_template_runs_in_torch_and_is_reported(tmp_path):
    model, example = cnn()
    reference = fxc.compile(model, passes="quantize{bits=8}", example_inputs=example, backend="torch")
    triton_model = fxc.compile(reference.graph, example_inputs=example, backend="triton",
                               backend_options={**OPTIONS, "cache_dir": str(tmp_path)})
    torch.testing.assert_close(call(triton_model, example), call(reference, example), rtol=1e-4, atol=1e-4)
    fallbacks = triton_model.runner.partition.fallbacks
    assert len(fallbacks) == 2 and all("quantized_conv2d" in f.reason for f in fallbacks)
    assert len(triton_model.runner.partition.groups) == 1  # the classifier's quantized_linear
    assert "fallback" in triton_model.runner.summary()


def test_cpu_model_without_interpreter_names_the_interpreter(monkeypatch, llama):
    model, example = llama
    monkeypatch.setattr(cache, "interpreter_active", lambda: False)
    with pytest.raises(fxc.BackendError, match="TRITON_INTERPRET=1"):
        fxc.compile(model, passes="quantize{bits=8}", example_inputs=example, backend="triton")


def test_unknown_backend_option_is_an_option_error(llama):
    model, example = llama
    with pytest.raises(fxc.OptionError, match="no option 'interpet'.*poison_outputs"):
        fxc.compile(model, example_inputs=example, backend="triton", backend_options={"interpet": True})


def test_options_are_declared_fields_checked_like_other_backends(llama):
    from fxc.codegen.triton.backend import TritonBackend
    from fxc.passmgr.options import declared

    defaults = {f.name: f.default for f in declared(TritonBackend)}
    assert defaults == {"fuse_epilogue": True, "autotune": True, "decode_max_m": 16, "block_sparse_block": 64,
                        "block_sparse_min_zero": 0.3, "cache_dir": None, "poison_outputs": False}
    assert all(f.metadata["help"] for f in declared(TritonBackend))
    model, example = llama
    for options, message in [({"block_sparse_block": 8}, r"'block-sparse-block' must be one of 16, 32, 64, 128"),
                             ({"decode_max_m": 17}, r"'decode-max-m' must be in \[0, 16\], got 17"),
                             ({"autotune": "yes"}, r"'autotune' must be bool, got str yes")]:
        with pytest.raises(fxc.OptionError, match=message):
            fxc.compile(model, example_inputs=example, backend="triton", backend_options=options)
