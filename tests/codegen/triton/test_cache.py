"""Templates render only with exactly their hooks; the kernel cache is keyed by the source's hash, loads
kernels whose text imports the tile helpers of kernels/tiles.py, keeps one chosen config per
(source, shapes, dtypes), and writes to the XDG cache folder unless given a directory."""

from pathlib import Path

import pytest

pytest.importorskip("triton")

from fxc.codegen.triton.cache import KernelCache  # noqa: E402
from fxc.codegen.triton.epilogue import Epilogue, Step  # noqa: E402
from fxc.codegen.triton.kernels import dequant_gemm, gemv, tiles  # noqa: E402
from fxc.codegen.triton.picker import TEMPLATES  # noqa: E402
from fxc.codegen.triton.template import KernelTemplate  # noqa: E402

W8A16 = dequant_gemm.TEMPLATES[8]
EPILOGUE = Epilogue((Step("add", operand=0), Step("silu"), Step("mul", scalar=2.0)))


def _fills(template, epilogue=EPILOGUE):
    fills = {"epilogue_params": epilogue.params(), "epilogue": epilogue.code(), "compute_dtype": "tl.float32",
             "dot_precision": '"ieee"', "load_weight": gemv.LOAD_INT4}
    return {name: text for name, text in fills.items() if name in template.hooks}


@pytest.mark.parametrize("template", TEMPLATES.values(), ids=lambda t: t.name)
def test_every_template_renders_to_valid_python_with_its_kernels(template):
    source = template.render(**_fills(template))
    assert "{{" not in source and "}}" not in source
    compile(source, template.name, "exec")
    for kernel in template.kernels:
        assert f"def {kernel}(" in source
    assert "epi0_ptr, epi0_stride_m, epi0_stride_n, epi2_value," in source
    assert "acc = acc * epi2_value" in source
    assert template.configs and all("num_warps" in c for c in (*template.configs, template.interpreter_config))


def test_render_rejects_missing_and_unknown_hooks():
    template = KernelTemplate("t", "def f(\n    {{params}}\n):\n    {{body}}\n", ("f",), ({},), {})
    with pytest.raises(ValueError, match=r"missing \['body'\]"):
        template.render(params="")
    with pytest.raises(ValueError, match=r"unknown \['bogus'\]"):
        template.render(params="", body="", bogus="")
    assert template.render(params="", body="") == "def f(\n\n):\n    pass\n"


def test_cache_is_keyed_by_source_and_writes_it(tmp_path):
    cache = KernelCache(tmp_path, interpret=True)
    source = W8A16.render(**_fills(W8A16))
    first = cache.load(source, W8A16.kernels)
    assert cache.load(source, W8A16.kernels) is first and len(cache) == 1
    assert first.path.read_text() == source == first.source
    assert first["w8a16_gemm"].fn.__globals__["swizzled_block"] is tiles.swizzled_block  # imported by name
    other = W8A16.render(**_fills(W8A16, Epilogue((Step("relu"),))))
    assert cache.load(other, W8A16.kernels).digest != first.digest and len(cache) == 2


def test_config_choice_is_cached_per_key(tmp_path):
    cache = KernelCache(tmp_path, interpret=True)
    template = W8A16
    compiled = cache.load(template.render(**_fills(template)), template.kernels)
    runs = []
    key = ("w8a16_gemm", 32, 24, 64, "torch.float32", "torch.float32")
    assert cache.choose(compiled, key, template, runs.append) == template.interpreter_config
    assert compiled.configs[key] == template.interpreter_config and runs == []  # no timing in the interpreter
    forced = dict(template.interpreter_config, BLOCK_K=16)
    assert cache.choose(compiled, key, template, runs.append, forced=forced) == forced


def test_kernel_files_go_to_the_xdg_cache_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert KernelCache().directory == tmp_path / "fxc" / "triton"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as the XDG rule says
    assert KernelCache().directory == Path.home() / ".cache" / "fxc" / "triton"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert KernelCache().directory == Path.home() / ".cache" / "fxc" / "triton"
    assert KernelCache(tmp_path / "kernels").directory == tmp_path / "kernels"  # the backend's cache_dir
