"""prune{pattern=head}: whole attention heads leave q/k/v/o and every head count in the graph.

The exactness tests zero the o_proj columns (and q/k/v rows) of chosen heads: such a head adds nothing
to the output, so removing exactly it (and rewriting the reshapes right) leaves the output unchanged."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from graph_snapshot import snapshot, untouched
from tiny_models import AttentionBlock, call, first_tensor, mlp, tiny_bert, tiny_llama

import fxc
from fxc import ir
from fxc.errors import NodeError, OptionError
from fxc.ir import meta
from fxc.passes.analyses.act_stats import InputStats
from fxc.passes.prune.heads import choose_heads, find_attentions, head_scores
from fxc.passes.rewrites.prune import Prune
from fxc.passes.select import select_layers
from fxc.passmgr.analysis_manager import AnalysisManager

HEAD_DIM = 8


def _weights(gm):
    return {layer.fqn: ir.get_tensor(gm, layer.weight) for layer in ir.weight_layers(gm)}


def _params(module) -> int:
    return sum(t.numel() for t in module.state_dict().values())


def _rows(head: int) -> slice:
    return slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)


def _silence(linear: nn.Linear, head: int, rows: bool) -> None:
    """Zero a head's rows (q/k/v) or columns (o) of a linear."""
    with torch.no_grad():
        if rows:
            linear.weight[_rows(head)] = 0.0
        else:
            linear.weight[:, _rows(head)] = 0.0


def _kept_heads(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Which original row blocks (heads) the pruned weight's row blocks are."""
    blocks = before.split(HEAD_DIM)
    return [next(h for h, b in enumerate(blocks) if torch.equal(b, a)) for a in after.split(HEAD_DIM)]


def test_gqa_llama_removes_query_heads_evenly_per_kv_group():
    model, example = tiny_llama()  # 4 query heads, 2 kv heads: groups {0, 1} and {2, 3}
    silent = {0: (1, 2), 1: (0, 3)}  # layer -> one query head per group with zero q rows and o_proj columns
    for layer, heads in silent.items():
        for head in heads:
            _silence(model.model.layers[layer].self_attn.q_proj, head, rows=True)
            _silence(model.model.layers[layer].self_attn.o_proj, head, rows=False)
    expected = first_tensor(call(model, example))
    before = {k.removesuffix(".weight"): v.clone() for k, v in model.state_dict().items()}
    cm = fxc.compile(model, "prune{method=magnitude,pattern=head,sparsity=0.5}", example_inputs=example)
    after = _weights(cm.graph)
    for layer, heads in silent.items():
        p = f"model.layers.{layer}.self_attn."
        assert after[p + "q_proj"].shape == (16, 32) and after[p + "o_proj"].shape == (32, 16)
        assert torch.equal(after[p + "k_proj"], before[p + "k_proj"])  # kv heads all kept
        kept = [h for h in range(4) if h not in heads]
        assert _kept_heads(before[p + "q_proj"], after[p + "q_proj"]) == kept
        assert _kept_heads(before[p + "o_proj"].T, after[p + "o_proj"].T) == kept
    # parameters drop by exactly 2 heads x (q rows + o columns) per layer
    assert _params(model) - _params(cm.graph) == 2 * 2 * (HEAD_DIM * 32 + 32 * HEAD_DIM)
    out = first_tensor(cm(*example))
    assert out.shape == expected.shape
    assert torch.equal(out, expected)
    # repeat_kv's expand now repeats each kv head once; the reshape after it says 2 heads
    expands = [
        n.args[1] for n in cm.graph.graph.nodes if n.target is torch.ops.aten.expand.default and len(n.args[1]) == 5
    ]
    assert expands and all(sizes[1:3] == [2, 1] for sizes in expands)
    reshapes = [n for n in cm.graph.graph.nodes if n.target is torch.ops.aten.reshape.default]
    merged = [n.args[1] for n in reshapes if n.args[0].target is torch.ops.aten.expand.default]
    assert len(merged) == 4 and all(sizes[1] == 2 for sizes in merged)
    sparsity = {n.name: meta.get(n, meta.Sparsity) for n in cm.graph.graph.nodes if meta.get(n, meta.Sparsity)}
    assert {s.pattern for s in sparsity.values()} == {"head"} and len(sparsity) == 4  # q_proj and o_proj, 2 layers


def test_an_attention_with_a_skipped_layer_is_left_alone():
    model, example = tiny_llama()
    skip = ("lm_head", "*embed*", "layers.0.self_attn.k_proj")
    cm = fxc.compile(model, Prune(pattern="head", sparsity=0.5, skip=skip), example_inputs=example)
    after = _weights(cm.graph)
    assert after["model.layers.0.self_attn.q_proj"].shape == (32, 32)
    assert after["model.layers.1.self_attn.q_proj"].shape == (16, 32)
    assert first_tensor(cm(*example)).shape == (2, 12, 64)


def test_bert_heads_removed_from_query_key_value_and_output():
    model, example = tiny_bert()  # 4 heads of 8, q/k/v/o with biases
    silent = {0: 1, 1: 3}
    for layer, head in silent.items():
        attention = model.encoder.layer[layer].attention
        for linear in (attention.self.query, attention.self.key, attention.self.value):
            _silence(linear, head, rows=True)
        _silence(attention.output.dense, head, rows=False)
    expected = call(model, example)
    before = {k.removesuffix(".weight"): v.clone() for k, v in model.state_dict().items()}
    cm = fxc.compile(model, "prune{method=magnitude,pattern=head,sparsity=0.25}", example_inputs=example)
    after = _weights(cm.graph)
    for layer, head in silent.items():
        p = f"encoder.layer.{layer}.attention."
        kept = [h for h in range(4) if h != head]
        for name in ("self.query", "self.key", "self.value"):
            assert _kept_heads(before[p + name], after[p + name]) == kept
            assert ir.get_tensor(cm.graph, p + name + ".bias").shape == (24,)
        assert _kept_heads(before[p + "output.dense"].T, after[p + "output.dense"].T) == kept
    # 3 x (8 rows + 8 biases) + 8 columns of o, per layer
    assert _params(model) - _params(cm.graph) == 2 * (3 * (HEAD_DIM * 32 + HEAD_DIM) + 32 * HEAD_DIM)
    out = cm(**example)
    for name in ("last_hidden_state", "pooler_output"):
        assert torch.equal(out[name] if isinstance(out, dict) else getattr(out, name), getattr(expected, name))


def test_fused_qkv_with_literal_head_counts():
    model, x = AttentionBlock().eval(), torch.randn(2, 5, 16)  # qkv fused, view(b, t, 2, 8), reshape(b, t, 16)
    for part in range(3):
        _silence(model.qkv, 2 * part + 0, rows=True)  # head 0 of q, k and v
    _silence(model.out, 0, rows=False)
    before = model.qkv.weight.detach().clone()
    cm = fxc.compile(model, "prune{pattern=head,sparsity=0.5}", example_inputs=(x,))
    assert _kept_heads(before, _weights(cm.graph)["qkv"]) == [1, 3, 5]  # head 1 of q, k and v
    sizes = [
        n.args[1]
        for n in cm.graph.graph.nodes
        if n.target in (torch.ops.aten.view.default, torch.ops.aten.reshape.default)
    ]
    assert all(s[2:] == [1, 8] for s in sizes if len(s) == 4) and [s for s in sizes if len(s) == 3][0][2] == 8
    y = torch.randn(3, 7, 16)
    assert torch.allclose(cm(y), model(y), atol=1e-6)


def test_wanda_scores_heads_by_o_proj_input_norms():
    model, x = AttentionBlock().eval(), torch.randn(2, 5, 16)
    with torch.no_grad():  # head 0 has the smaller weights ...
        model.qkv.weight[[*range(0, 8), *range(16, 24), *range(32, 40)]] *= 0.5
        model.out.weight[:, :8] *= 0.5
    gm = fxc.trace(model, (x,))
    (attention,) = find_attentions(gm, {layer.node for layer in select_layers(gm, kinds=("linear",))})
    assert len(attention.units) == 2 and all(len(g) == 1 for g in attention.groups)
    magnitude = head_scores(gm, attention, "magnitude", None)
    assert choose_heads(attention, magnitude, 0.5) == [1]
    # ... but its output channels carry 10x larger activations
    l2 = torch.cat([torch.full((8,), 10.0), torch.ones(8)])
    stats = {
        n.name: InputStats(torch.ones(16), *([torch.zeros(16)] * 3), tokens=10) for n in attention.region.producers
    }
    stats |= {n.name: InputStats(l2, *([torch.zeros(16)] * 3), tokens=10) for n in attention.region.consumers}
    assert choose_heads(attention, head_scores(gm, attention, "wanda", stats), 0.5) == [0]


def test_wanda_with_calibration_runs_on_gqa_llama():
    model, (ids,) = tiny_llama(layers=1)
    calibration = [(torch.randint(0, 64, (2, 12)),) for _ in range(2)]
    cm = fxc.compile(
        model, "prune{method=wanda,pattern=head,sparsity=0.5}", example_inputs=(ids,), calibration=calibration
    )
    assert _weights(cm.graph)["model.layers.0.self_attn.q_proj"].shape == (16, 32)
    out = first_tensor(cm(torch.randint(0, 64, (3, 9))))
    assert out.shape == (3, 9, 64) and torch.isfinite(out).all()


# -- bad input: a clear error, the model untouched -------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_graph():
    model, example = tiny_bert()
    return fxc.trace(model, example)


@pytest.mark.parametrize(
    "factory, sparsity, match",
    [
        (tiny_bert, 0.9, "would remove all 4 heads .* sparsity <= 0.75"),
        (tiny_llama, 0.8, "would remove 2 query heads of each kv group .* sparsity <= 0.5"),
    ],
)
def test_sparsity_that_removes_every_head(factory, sparsity, match):
    model, example = factory()
    gm = fxc.trace(model, example)
    before = snapshot(gm)
    with pytest.raises(OptionError, match=match):
        Prune(pattern="head", sparsity=sparsity).run(gm, AnalysisManager(gm))
    assert untouched(gm, before)


class NormedQueryAttention(nn.Module):
    """QK-norm over the whole hidden size: one LayerNorm mixes every head, so heads cannot be removed."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads, self.q, self.k, self.v, self.o = heads, *(nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, -1).transpose(1, 2)  # noqa: E731
        q = F.layer_norm(self.q(x), (d,))
        out = F.scaled_dot_product_attention(split(q), split(self.k(x)), split(self.v(x)))
        return self.o(out.transpose(1, 2).reshape(b, t, d))


def test_unmatched_attention_names_the_node_and_leaves_the_model():
    gm = fxc.trace(NormedQueryAttention().eval(), (torch.randn(2, 5, 16),))
    before = snapshot(gm)
    with pytest.raises(
        NodeError, match="cannot match the attention at %scaled_dot_product_attention.*layer_norm.*skip="
    ):
        Prune(pattern="head", sparsity=0.5).run(gm, AnalysisManager(gm))
    assert untouched(gm, before)
    # its layers left out: nothing to prune, said clearly
    with pytest.raises(OptionError, match="no attention to prune heads from"):
        Prune(pattern="head", skip=("q", "k", "v", "o")).run(gm, AnalysisManager(gm))
    assert untouched(gm, before)


def test_no_attention_and_sparse_gpt_are_refused(bert_graph):
    gm = fxc.trace(*mlp())
    with pytest.raises(OptionError, match="the model has no attention to prune heads from"):
        Prune(pattern="head").run(gm, AnalysisManager(gm))
    with pytest.raises(OptionError, match="'method'=sparse-gpt.*pattern=head"):
        Prune(method="sparse-gpt", pattern="head")
    before = snapshot(bert_graph)
    with pytest.raises(fxc.errors.CalibrationError, match="wanda"):
        Prune(method="wanda", pattern="head").run(bert_graph, AnalysisManager(bert_graph))
    assert untouched(bert_graph, before)
