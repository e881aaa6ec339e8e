"""fxc.save / fxc.load: same outputs after a round trip (graphs holding fxc ops, Hugging Face output
structures, tied weights), no pickle anywhere, damaged or foreign files rejected clearly, and the
backend options saved with the model (JSON values only) and used by default on load."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file
from tiny_models import call, first_tensor, mlp, tiny_bert

import fxc
from fxc.api.backend import Backend
from fxc.api.manifest import MANIFEST, WEIGHTS
from fxc.api.manifest import body_sha256 as _body_sha256
from fxc.ir import ops


@pytest.mark.parametrize(
    "passes", ["quantize{bits=4}", "quantize{bits=8,act-bits=8}", "prune{pattern=2:4,lower=true}"]
)
def test_round_trip_keeps_fxc_ops_outputs_and_report(tmp_path, passes):
    model, (x,) = mlp()
    compiled = fxc.compile(model, passes, example_inputs=(x,), calibration=[(x,)])
    fxc.save(compiled, tmp_path)
    loaded = fxc.load(tmp_path)
    targets = lambda cm: [str(n.target) for n in cm.graph.graph.nodes]  # noqa: E731
    assert targets(loaded) == targets(compiled)
    assert any(ops.is_fxc_op(n.target) for n in loaded.graph.graph.nodes)
    for batch in (x, torch.randn(9, 16)):  # the traced size and another one
        assert torch.equal(loaded(batch), compiled(batch))
    assert str(loaded.report(show=False)) == str(compiled.report(show=False))
    assert loaded.drift == compiled.drift and loaded.drift  # calibration ran, drift survives
    assert str(loaded.pipeline) == passes


def test_round_trip_of_hand_built_quantized_graph(tmp_path):
    """A graph written directly with fxc.ir.qformat and torch.ops.fxc (no pass involved)."""
    model, (x,) = mlp()
    gm = fxc.trace(model, (x,))
    layer = fxc.ir.weight_layers(gm)[0]
    q = fxc.ir.qformat.quantize_rtn(fxc.ir.get_tensor(gm, layer.weight), bits=4, group_size=8)
    names = [fxc.ir.add_tensor(gm, f"q.{n}", t) for n, t in (("qweight", q.qweight), ("scale", q.scale))]
    with gm.graph.inserting_before(layer.node):
        qweight, scale = (gm.graph.get_attr(n) for n in names)
        bias = layer.node.args[2]
        node = gm.graph.call_function(torch.ops.fxc.quantized_linear.default, (layer.node.args[0], qweight, scale,
                                                                               None, bias, 4))
    layer.node.replace_all_uses_with(node)
    gm.graph.erase_node(layer.node)
    fxc.ir.remove_unused_tensors(gm)
    fxc.ir.refresh_meta(gm)
    compiled = fxc.compile(gm, None, example_inputs=(x,))
    fxc.save(compiled, tmp_path)
    assert torch.equal(fxc.load(tmp_path)(x), compiled(x))


def test_round_trip_hugging_face_keyword_inputs_and_output_structure(tmp_path):
    model, example = tiny_bert()
    compiled = fxc.compile(model, "quantize{bits=8}", example_inputs=example)
    fxc.save(compiled, tmp_path)
    loaded = fxc.load(tmp_path)
    out, expected = call(loaded, example), call(compiled, example)
    assert type(out) is type(expected)
    assert torch.equal(out.last_hidden_state, expected.last_hidden_state)
    assert torch.equal(out.pooler_output, expected.pooler_output)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_tied_weights_stored_once_and_still_tied(tmp_path):
    x = torch.randn(3, 8)
    gm = fxc.trace(Tied().eval(), (x,))  # export keeps one name for the tied weight: give it a second one
    first = fxc.ir.weight_layers(gm)[0].node
    gm.a.register_parameter("weight", gm.b.weight)
    with gm.graph.inserting_before(first):
        alias = gm.graph.get_attr("a.weight")
    alias.meta["val"] = first.args[1].meta.get("val")
    first.args = (first.args[0], alias, *first.args[2:])
    gm.recompile()
    compiled = fxc.compile(gm, None, example_inputs=(x,))
    assert {n.target for n in compiled.graph.graph.nodes if n.op == "get_attr"} >= {"a.weight", "b.weight"}
    fxc.save(compiled, tmp_path)
    assert len(load_file(str(tmp_path / WEIGHTS))) == 3  # one weight, two biases
    loaded = fxc.load(tmp_path)
    assert torch.equal(loaded(x), compiled(x))
    assert loaded.graph.a.weight is loaded.graph.b.weight


def test_nothing_is_pickled(tmp_path):
    model, (x,) = mlp()
    fxc.save(fxc.compile(model, "quantize{bits=8}", example_inputs=(x,)), tmp_path)
    json.loads((tmp_path / MANIFEST).read_text())  # plain JSON
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "report.txt", WEIGHTS]
    assert b"\x80\x04" not in (tmp_path / WEIGHTS).read_bytes()[:64]  # safetensors header, not a pickle


@pytest.fixture
def saved(tmp_path):
    model, (x,) = mlp()
    fxc.save(fxc.compile(model, "quantize{bits=8}", example_inputs=(x,)), tmp_path)
    return tmp_path


def rewrite_manifest(folder, edit, keep_checksum_valid: bool):
    manifest = json.loads((folder / MANIFEST).read_text())
    edit(manifest)
    if keep_checksum_valid:
        manifest["manifest_sha256"] = _body_sha256({k: v for k, v in manifest.items() if k != "manifest_sha256"})
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_truncated_weights_rejected(saved):
    data = (saved / WEIGHTS).read_bytes()
    (saved / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(fxc.FormatError, match="truncated or was modified"):
        fxc.load(saved)


def test_tampered_weights_rejected(saved):
    data = bytearray((saved / WEIGHTS).read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside a tensor
    (saved / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(fxc.FormatError, match="SHA-256 mismatch"):
        fxc.load(saved)


def test_truncated_manifest_rejected(saved):
    text = (saved / MANIFEST).read_text()
    (saved / MANIFEST).write_text(text[: len(text) // 2])
    with pytest.raises(fxc.FormatError, match="not valid JSON"):
        fxc.load(saved)


def test_tampered_manifest_rejected(saved):
    rewrite_manifest(saved, lambda m: m.update(pipeline="quantize{bits=4}"), keep_checksum_valid=False)
    with pytest.raises(fxc.FormatError, match="modified after saving"):
        fxc.load(saved)


def test_incompatible_version_rejected(saved):
    rewrite_manifest(saved, lambda m: m.update(format_version=99, fxc_version="9.0"), keep_checksum_valid=True)
    with pytest.raises(fxc.FormatError, match=r"version 99, written by fxc 9.0; this fxc reads format version 1"):
        fxc.load(saved)


def test_manifest_cannot_name_arbitrary_code(saved):
    def to_os_system(manifest):
        node = next(n for n in manifest["graph"]["nodes"] if n["op"] == "call_function")
        node["target"] = "os.system"

    rewrite_manifest(saved, to_os_system, keep_checksum_valid=True)
    with pytest.raises(fxc.FormatError, match="'os.system' is not in fxc's op set"):
        fxc.load(saved)


def test_save_needs_a_compiled_module(tmp_path):
    model, _ = mlp()
    with pytest.raises(TypeError, match="CompiledModule"):
        fxc.save(model, tmp_path)


def test_loaded_model_runs_other_batch_sizes(saved):
    loaded = fxc.load(saved)
    assert first_tensor(loaded(torch.randn(11, 16))).shape == (11, 8)


class Recording(Backend):
    """A backend that runs the graph as is and records the options it was built with."""

    name = "recording"
    built: list = []

    def __init__(self, **options):
        Recording.built.append(options)

    def compile(self, gm, example_inputs):
        return gm


@pytest.fixture
def recording():
    fxc.register("fxc.backends", "recording", Recording)
    Recording.built.clear()
    yield Recording.built
    fxc.passmgr.registry.unregister("fxc.backends", "recording")


def test_backend_options_saved_and_used_on_load(tmp_path, recording):
    model, (x,) = mlp()
    options = {"tile": 32, "mode": "fast", "scale": 0.5, "flags": [True, None], "nested": {"k": 1}}
    compiled = fxc.compile(model, "quantize{bits=8}", example_inputs=(x,), backend="recording", backend_options=options)
    fxc.save(compiled, tmp_path)
    assert json.loads((tmp_path / MANIFEST).read_text())["backend_options"] == options
    recording.clear()
    loaded = fxc.load(tmp_path)
    assert recording == [options] and loaded.backend == "recording" and loaded.backend_options == options
    assert torch.equal(loaded(x), compiled(x))
    fxc.save(loaded, tmp_path / "again")  # a loaded model saves its options again
    assert json.loads((tmp_path / "again" / MANIFEST).read_text())["backend_options"] == options


def test_explicit_load_arguments_override_the_saved_options(tmp_path, recording):
    model, (x,) = mlp()
    fxc.save(fxc.compile(model, None, example_inputs=(x,), backend="recording", backend_options={"tile": 32}), tmp_path)
    recording.clear()
    assert fxc.load(tmp_path, backend_options={"tile": 64}).backend_options == {"tile": 64}
    assert fxc.load(tmp_path, backend="recording").backend_options == {"tile": 32}  # same backend: saved ones
    assert recording == [{"tile": 64}, {"tile": 32}]
    other = fxc.load(tmp_path, backend="torch")  # another backend does not get the recording backend's options
    assert other.backend == "torch" and other.backend_options == {}
    assert torch.equal(other(x), model(x))


@pytest.mark.parametrize(
    "value, message",
    [(Path("/tmp/kernels"), r"'cache_dir' of backend 'recording' is a PosixPath .* pass str\(path\)"),
     ((1, 2), r"'cache_dir' of backend 'recording' is a tuple .* pass a list"),
     (float("nan"), r"'cache_dir' of backend 'recording' is nan, which JSON cannot hold"),
     ({1: "a"}, r"has the key 1; fxc.save stores dicts with str keys only"),
     ([torch.ones(1)], r"backend option 'cache_dir' of backend 'recording'\[0\] is a Tensor")],
)
def test_option_that_cannot_be_stored_is_a_clear_error(tmp_path, recording, value, message):
    model, (x,) = mlp()
    compiled = fxc.compile(model, None, example_inputs=(x,), backend="recording", backend_options={"cache_dir": value})
    with pytest.raises(fxc.OptionError, match=message):
        fxc.save(compiled, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_manifest_from_before_backend_options_still_loads(saved):
    x = torch.randn(5, 16)
    expected = fxc.load(saved)(x)
    rewrite_manifest(saved, lambda m: m.pop("backend_options"), keep_checksum_valid=True)
    manifest = json.loads((saved / MANIFEST).read_text())
    assert "backend_options" not in manifest and manifest["format_version"] == 1
    loaded = fxc.load(saved)
    assert loaded.backend_options == {} and loaded.backend == manifest["backend"]
    assert torch.equal(loaded(x), expected)
