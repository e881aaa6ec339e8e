"""cm.generate against transformers' own generate on tiny random causal LMs: greedy token for token on every family
fxc captures with a KV cache (and on the numpy reference backend), left-padded batches, seeded sampling, eos and pad,
the streamer; and the compiled model called as the model was (logits equal, left padding included)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

import fxc  # noqa: E402
from tests.fxc.api.generate_models import FAMILIES, causal_lm, hf_greedy, prompt_ids  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
NEW = 24


@pytest.fixture(scope="module")
def compiled():
    """{family: (model, cm)}: each model compiled once with passes="dce" on the torch backend."""
    out = {}
    for family in FAMILIES:
        model = causal_lm(family)
        out[family] = model, fxc.compile(model, "dce", example_inputs=(prompt_ids(1, 6),), backend="torch")
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_equals_transformers_token_for_token(compiled, family):
    model, cm = compiled[family]
    assert cm.kv_cache is not None and cm.kv_cache.layers == 2
    ids = prompt_ids(1, 6)
    out = cm.generate(ids, max_new_tokens=NEW)
    assert out.shape == (1, 6 + NEW) and torch.equal(out[:, :6], ids)
    assert torch.equal(out, hf_greedy(model, ids, NEW))


def test_numpy_backend_generates_the_same_tokens():
    model = causal_lm("llama")
    cm = fxc.compile(model, "dce", example_inputs=(prompt_ids(1, 6),), backend="numpy")
    ids = prompt_ids(1, 6)
    assert torch.equal(cm.generate(ids, max_new_tokens=NEW), hf_greedy(model, ids, NEW))


def _left_padded() -> tuple[torch.Tensor, torch.Tensor]:
    ids = prompt_ids(2, 7, seed=3)
    mask = torch.ones_like(ids)
    ids[1, :3], mask[1, :3] = 0, 0  # row 1: 4 tokens, padded on the left
    return ids, mask


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_left_padded_batch_equals_each_row_alone_and_transformers(compiled, family):
    model, cm = compiled[family]
    ids, mask = _left_padded()
    out = cm.generate(ids, attention_mask=mask, max_new_tokens=12)
    assert torch.equal(out, hf_greedy(model, ids, 12, attention_mask=mask))
    first, second = cm.generate(ids[:1], max_new_tokens=12), cm.generate(ids[1:, 3:], max_new_tokens=12)
    assert torch.equal(out[0, 7:], first[0, 7:]) and torch.equal(out[1, 7:], second[0, 4:])


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_calling_the_compiled_model_returns_the_models_logits(compiled, family):
    model, cm = compiled[family]
    ids, mask = _left_padded()
    with torch.no_grad():
        for kwargs in ({}, {"attention_mask": mask}):
            torch.testing.assert_close(cm(ids, **kwargs).logits, model(ids, **kwargs).logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cm(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cm(ids)[0], model(ids)[0], rtol=1e-5, atol=1e-5)


def test_sampling_is_seeded_and_matches_transformers_sampling(compiled):
    model, cm = compiled["llama"]
    ids = prompt_ids(2, 6)
    options = dict(max_new_tokens=12, do_sample=True, temperature=0.8, top_k=20, top_p=0.9)
    first = cm.generate(ids, generator=torch.Generator().manual_seed(7), **options)
    again = cm.generate(ids, generator=torch.Generator().manual_seed(7), **options)
    assert torch.equal(first, again)
    torch.manual_seed(5)  # no generator: torch's global one, drawn as transformers draws it
    ours = cm.generate(ids, **options)
    torch.manual_seed(5)
    with torch.no_grad():
        theirs = model.generate(ids, **options)
    assert torch.equal(ours, theirs)


def test_top_k_one_sampling_is_greedy(compiled):
    _, cm = compiled["qwen2"]
    ids = prompt_ids(2, 5)
    sampled = cm.generate(ids, max_new_tokens=10, do_sample=True, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled, cm.generate(ids, max_new_tokens=10))


def test_eos_stops_each_row_and_pads_it(compiled):
    model, cm = compiled["llama"]
    ids = prompt_ids(2, 6)
    free = cm.generate(ids, max_new_tokens=12)
    eos = int(free[0, 6 + 2])  # row 0 produces it as its third new token
    pad = next(t for t in range(64) if t not in ids)  # transformers would take a pad id in the prompt for padding
    out = cm.generate(ids, max_new_tokens=12, eos_token_id=eos, pad_token_id=pad)
    assert torch.equal(out[0, : 6 + 3], free[0, : 6 + 3]) and (out[0, 6 + 3 :] == pad).all()
    with torch.no_grad():
        assert torch.equal(out, model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=eos,
                                               pad_token_id=pad))
    alone = cm.generate(ids[:1], max_new_tokens=12, eos_token_id=[eos, 62])
    assert alone.shape == (1, 6 + 3) and int(alone[0, -1]) == eos  # every row finished: it stops


def test_streamer_receives_each_step_as_it_comes(compiled):
    _, cm = compiled["gpt2"]
    ids = prompt_ids(2, 5)
    steps = []
    out = cm.generate(ids, max_new_tokens=6, streamer=lambda tokens: steps.append(tokens.clone()))
    assert len(steps) == 6 and all(t.shape == (2,) for t in steps)
    assert torch.equal(torch.stack(steps, dim=1), out[:, 5:])


@pytest.mark.parametrize("bad,match", [
    (dict(max_new_tokens=0), "max_new_tokens must be an int >= 1"),
    (dict(temperature=0.0, do_sample=True), "temperature must be a number > 0"),
    (dict(top_p=1.5, do_sample=True), r"top_p must be None or a number in \(0, 1\]"),
    (dict(top_k=0, do_sample=True), "top_k must be None or an int >= 1"),
    (dict(top_k=5), "pass do_sample=True with them"),
    (dict(eos_token_id="x"), "eos_token_id must be a token id"),
    (dict(streamer=3), "streamer must be a callable"),
])  # fmt: skip
def test_bad_arguments_name_the_argument(compiled, bad, match):
    _, cm = compiled["llama"]
    with pytest.raises(fxc.GenerateError, match=match):
        cm.generate(prompt_ids(1, 4), **bad)


def test_bad_prompts_name_the_fix(compiled):
    _, cm = compiled["llama"]
    ids = prompt_ids(2, 4)
    with pytest.raises(fxc.GenerateError, match=r"ids\[None\]"):
        cm.generate(ids[0])
    right = torch.ones_like(ids)
    right[1, -1] = 0
    with pytest.raises(fxc.GenerateError, match="row 1 .* ends in padding .*padding_side = 'left'"):
        cm.generate(ids, attention_mask=right)
    with pytest.raises(fxc.GenerateError, match="shaped like input_ids"):
        cm.generate(ids, attention_mask=torch.ones(2, 3))
