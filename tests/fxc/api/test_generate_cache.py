"""The KV-cache capture and what is built on it: compressed models decode as re-running their own graph on the whole
prefix does; the cache limit; fxc.save / fxc.load keep the step record (a tampered one is refused); kv_cache=False
and non-LMs; head pruning that would change the cache is refused; the Triton backend runs the step graph; passes
that measure the model's output see its logits; perplexity is unchanged; fxc.export still works."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from tiny_models import mlp  # noqa: E402

import fxc  # noqa: E402
from fxc.api.manifest import MANIFEST, body_sha256  # noqa: E402
from fxc.eval.quality import perplexity  # noqa: E402
from tests.fxc.api.generate_models import POSITIONS, causal_lm, prompt_ids  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def calibration(count: int = 4, length: int = 16) -> list[torch.Tensor]:
    return [prompt_ids(1, length, seed=10 + i) for i in range(count)]


def rerun_greedy(cm, ids: torch.Tensor, new: int) -> torch.Tensor:
    """Greedy decoding without the cache: the compiled graph re-run on the whole prefix (empty past) each step."""
    for _ in range(new):
        with torch.no_grad():
            ids = torch.cat([ids, cm(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("passes,backend", [
    ("quantize{bits=4,group-size=32,method=gptq}", "torch"),
    ("prune{method=wanda,sparsity=0.5},quantize{bits=8}", "torch"),
    ("prune{method=magnitude,pattern=head,sparsity=0.5},quantize{bits=8}", "numpy"),
])  # fmt: skip
def test_compressed_greedy_equals_rerunning_the_prefix(passes, backend):
    model = causal_lm("llama")
    cm = fxc.compile(model, passes, calibration=calibration(), backend=backend)
    assert any(fxc.ir.ops.is_fxc_op(n.target) for n in cm.graph.graph.nodes)
    ids = prompt_ids(2, 6)
    assert torch.equal(cm.generate(ids, max_new_tokens=20), rerun_greedy(cm, ids, 20))


def test_w8a8_cached_steps_give_the_logits_of_the_full_rerun():
    """int8 activations (per token) round the step's own float noise (~1e-7: attention over a cache vs over the
    prefix) to a whole quantization step now and then, so a near tie may decode differently; the logits of each
    cached step must still be the re-run's, to the quantization's accuracy."""
    from fxc.api.generate.cache import KVBuffers
    from fxc.frontend.kv_inputs import positions_from_mask

    cm = fxc.compile(causal_lm("llama"), "quantize{bits=8,act-bits=8}", calibration=calibration())
    tokens = cm.generate(prompt_ids(2, 6), max_new_tokens=12)
    buffers, length, steps = KVBuffers(cm.kv_cache, 2, tokens.shape[1]), 0, []
    for end in range(6, tokens.shape[1]):
        new = tokens[:, length:end]
        mask = torch.ones(2, end, dtype=torch.long)
        logits, present = cm.runner(new, mask, positions_from_mask(mask)[:, length:], buffers.views(length))
        length = buffers.write(length, present)
        steps.append(logits)
    with torch.no_grad():
        full = cm(tokens[:, :-1]).logits
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=0.05 * float(full.abs().max()))


def test_the_cache_limit_names_both_numbers_and_the_fix():
    cm = fxc.compile(causal_lm("gpt2"), "dce", example_inputs=(prompt_ids(1, 4),))
    assert cm.kv_cache.max_positions == POSITIONS
    with pytest.raises(fxc.GenerateError, match=rf"prompt \(10 tokens.*max_new_tokens \(60\) need 70 .* "
                                                rf"model's {POSITIONS} .*max_position_embeddings.*at most 54"):
        cm.generate(prompt_ids(1, 10), max_new_tokens=60)
    assert cm.generate(prompt_ids(1, 10), max_new_tokens=54).shape == (1, POSITIONS)  # exactly the limit fits


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = causal_lm("qwen2")
    cm = fxc.compile(model, "quantize{bits=8}", example_inputs=(prompt_ids(1, 6),))
    return cm, fxc.save(cm, tmp_path_factory.mktemp("kv") / "model")


def test_save_load_generate_gives_the_same_tokens(saved):
    cm, folder = saved
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["kv_cache"]["layers"] == 2 and manifest["kv_cache"]["inputs"][-1] == "past"
    ids = prompt_ids(2, 5)
    expected = cm.generate(ids, max_new_tokens=16)
    for loaded in (fxc.load(folder), fxc.load(folder, backend="numpy")):
        assert loaded.kv_cache == cm.kv_cache
        assert torch.equal(loaded.generate(ids, max_new_tokens=16), expected)


def _tampered(folder, tmp_path, edit):
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in folder.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    manifest = json.loads((copy / MANIFEST).read_text())
    edit(manifest["kv_cache"])
    manifest["manifest_sha256"] = body_sha256({k: v for k, v in manifest.items() if k != "manifest_sha256"})
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("edit,match", [
    (lambda kv: kv.update(layers=3), "field kv_cache does not fit the saved graph: the graph has 7 inputs"),
    (lambda kv: kv.update(kv_heads=4), r"kv_cache does not fit the saved graph: input past\[0\]\[0\]"),
    (lambda kv: kv.update(kv_heads="2"), r"kv_cache.kv_heads is not an int from 1 to"),
    (lambda kv: kv.update(layers=True), r"kv_cache.layers is not an int"),
    (lambda kv: kv.update(dtype="int64"), r"kv_cache.dtype 'int64' is not a floating dtype"),
    (lambda kv: kv.update(eos_token_ids=[-1]), r"kv_cache.eos_token_ids is not a list of at most"),
    (lambda kv: kv.update(inputs=["past", "input_ids", "attention_mask", "position_ids"]), r"kv_cache.inputs is not"),
    (lambda kv: kv.update(positional=["__import__"]), r"kv_cache.positional is not a list of parameter names"),
    (lambda kv: kv.update(positions="eval"), r"kv_cache.positions 'eval' is not one of"),
    (lambda kv: kv.update(code="print(1)"), r"kv_cache has the unknown field 'code'"),
])  # fmt: skip
def test_a_tampered_kv_cache_record_is_refused(saved, tmp_path, edit, match):
    _, folder = saved
    with pytest.raises(fxc.FormatError, match=match):
        fxc.load(_tampered(folder, tmp_path, edit))


def test_kv_cache_false_gives_the_old_graph_and_generate_says_why():
    model, ids = causal_lm("llama"), prompt_ids(2, 6)
    old = fxc.compile(model, "dce", example_inputs=(ids,), kv_cache=False)
    new = fxc.compile(model, "dce", example_inputs=(ids,))
    assert old.kv_cache is None and new.kv_cache is not None
    assert [n.target for n in old.graph.graph.nodes if n.op == "placeholder"] == ["input_ids"]
    assert len([n for n in new.graph.graph.nodes if n.op == "placeholder"]) == 3 + 2 * 2
    with torch.no_grad():
        torch.testing.assert_close(old(ids).logits, new(ids).logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(fxc.GenerateError, match="compiled without a KV-cache step graph .*kv_cache=True"):
        old.generate(ids)
    small, (x,) = mlp()
    with pytest.raises(fxc.GenerateError, match="not a transformers causal LM"):
        fxc.compile(small, "dce", example_inputs=(x,)).generate(x.long())


def test_kv_cache_option_is_checked():
    small, (x,) = mlp()
    with pytest.raises(fxc.OptionError, match="kv_cache=True, but MLP is not a transformers PreTrainedModel"):
        fxc.compile(small, "dce", example_inputs=(x,), kv_cache=True)
    with pytest.raises(fxc.OptionError, match="kv_cache must be None"):
        fxc.compile(small, "dce", example_inputs=(x,), kv_cache="yes")
    ids = prompt_ids(2, 6)
    with pytest.raises(fxc.OptionError, match="kv_cache=True, but the example inputs .* 'labels'"):
        fxc.compile(causal_lm("llama"), "dce", example_inputs={"input_ids": ids, "labels": ids}, kv_cache=True)
    with pytest.raises(fxc.OptionError, match="dynamic=False fixes them"):
        fxc.compile(causal_lm("llama"), "dce", example_inputs=(ids,), kv_cache=True, dynamic=False)


def test_a_failed_capture_warns_and_falls_back_in_auto_mode_only(monkeypatch):
    from fxc.api import compiler

    def fail(model, example):
        raise fxc.TraceError("no step for you")

    monkeypatch.setattr(compiler, "capture_kv_cache", fail)
    model, ids = causal_lm("llama"), prompt_ids(2, 6)
    with pytest.warns(fxc.KVCacheWarning, match="(?s)without a KV cache .*no step for you.*kv_cache=False"):
        cm = fxc.compile(model, "dce", example_inputs=(ids,))
    assert cm.kv_cache is None and cm(ids).logits.shape == (2, 6, 64)
    with pytest.raises(fxc.TraceError, match="no step for you"):
        fxc.compile(model, "dce", example_inputs=(ids,), kv_cache=True)


def test_pruning_kv_heads_of_a_cache_is_refused_with_the_fix():
    model = causal_lm("llama", num_key_value_heads=4)  # multi-head attention: k/v heads would be removed
    with pytest.raises(fxc.FxcError, match=r"KV cache \(the graph input %past_0_0\) .*compile the model with "
                                           "kv_cache=False"):
        fxc.compile(model, "prune{method=magnitude,pattern=head,sparsity=0.5}", example_inputs=(prompt_ids(1, 6),))


def test_a_call_with_other_inputs_names_them():
    cm = fxc.compile(causal_lm("llama"), "dce", example_inputs=(prompt_ids(1, 6),))
    ids = prompt_ids(2, 6)
    with pytest.raises(fxc.InputError, match="takes input_ids, attention_mask, position_ids; got 'labels'.*"
                                             "kv_cache=False"):
        cm(ids, labels=ids)
    with pytest.raises(fxc.InputError, match=r"input 0 \(input_ids\) is torch.float32"):
        cm(ids.float())


def test_triton_backend_runs_the_step_graph():
    pytest.importorskip("triton")
    reference = fxc.compile(causal_lm("llama"), "quantize{bits=8}", example_inputs=(prompt_ids(1, 6),))
    triton = fxc.compile(reference.graph, example_inputs=(prompt_ids(1, 6),), backend="triton")
    assert triton.kv_cache == reference.kv_cache
    ids = prompt_ids(1, 5)
    assert torch.equal(triton.generate(ids, max_new_tokens=4), reference.generate(ids, max_new_tokens=4))


def test_perplexity_and_measures_of_the_output_are_the_models():
    model, batches = causal_lm("llama", attn_implementation="eager"), calibration(2)  # sdpa has no double backward
    seen = []

    def loss(outputs, batch):
        args, kwargs = batch
        seen.append(len(args))
        return outputs.logits.float().logsumexp(-1).mean()

    cm = fxc.compile(model, "sensitivity{measure=hutchinson,candidates=[w8],batches=1,samples=1}",
                     calibration=batches, loss_fn=loss, instruments=[drift := fxc.NumericDrift()])
    assert seen and set(seen) == {1}  # loss_fn got the user's batch ((ids,), {}), not the step inputs
    old = fxc.compile(model, "dce", calibration=batches, kv_cache=False)
    assert perplexity(cm, batches) == pytest.approx(perplexity(old, batches), rel=1e-6)
    assert perplexity(cm, batches) == pytest.approx(perplexity(model, batches), rel=1e-6)
    assert drift.drift and drift.drift[-1][1] == 0.0  # an analysis changes nothing: logits compared, unchanged


def test_export_of_a_cache_capturing_model(tmp_path):
    from transformers import AutoModelForCausalLM

    cm = fxc.compile(causal_lm("llama"), "quantize{bits=8}", example_inputs=(prompt_ids(1, 6),))
    assert cm.kv_cache is not None
    exported = fxc.export(cm, tmp_path / "hf", format="hf")
    reloaded = AutoModelForCausalLM.from_pretrained(exported.path).eval()
    ids = prompt_ids(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, cm(ids).logits, rtol=1e-3, atol=1e-3)
