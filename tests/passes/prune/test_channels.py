"""prune{pattern=channel}: coupled groups found on the graph, every coupled tensor shrinks, output shape kept."""

import pytest
import torch
from tiny_models import AttentionBlock, call, cnn, first_tensor, tiny_llama

import fxc
from fxc import ir
from fxc.errors import OptionError
from fxc.ir import meta
from fxc.passes.prune.channels import channel_groups
from fxc.passes.rewrites.prune import Prune


def _weights(gm):
    return {layer.fqn: ir.get_tensor(gm, layer.weight) for layer in ir.weight_layers(gm)}


def test_llama_mlp_channels_removed_from_every_coupled_layer():
    model, example = tiny_llama()
    gm = fxc.trace(model, example)
    groups = channel_groups(gm)
    # one group per MLP: gate and up produce the hidden channels, down consumes them; attention and
    # the residual stream (normalized over channels) are not prunable this way
    assert [sorted(layer.fqn.split(".")[-1] for layer in g.layers) for g in groups] == [
        ["down_proj", "gate_proj", "up_proj"]
    ] * 2
    cm = fxc.compile(gm, "prune{pattern=channel,sparsity=0.25}", example_inputs=example)
    after = _weights(cm.graph)
    before = {k: v.detach() for k, v in _weights(gm).items()}
    prefix = "model.layers.0.mlp."
    assert after[prefix + "gate_proj"].shape == (48, 32) and after[prefix + "down_proj"].shape == (32, 48)
    assert after["model.layers.0.self_attn.q_proj"].shape == (32, 32)
    # the pruned model equals the dense one with the removed channels' down_proj columns zeroed
    kept = [(before[prefix + "gate_proj"] == row).all(1).nonzero().item() for row in after[prefix + "gate_proj"]]
    for i in range(2):
        p = f"model.layers.{i}.mlp."
        rows = [(before[p + "up_proj"] == r).all(1).nonzero().item() for r in after[p + "up_proj"]]
        gate_rows = [(before[p + "gate_proj"] == r).all(1).nonzero().item() for r in after[p + "gate_proj"]]
        assert rows == gate_rows  # gate and up lose the same channels
        dropped = sorted(set(range(64)) - set(rows))
        with torch.no_grad():
            model.model.layers[i].mlp.down_proj.weight[:, dropped] = 0.0
    assert len(kept) == 48
    expected = first_tensor(call(model, example))
    assert torch.allclose(first_tensor(cm(*example)), expected, atol=1e-5)
    node = next(n for n in cm.graph.graph.nodes if meta.get(n, meta.Sparsity))
    assert meta.get(node, meta.Sparsity).pattern == "channel"


def test_cnn_filters_removed_through_batchnorm_pool_and_depthwise_conv():
    model, (x,) = cnn()
    cm = fxc.compile(model, "prune{method=magnitude,pattern=channel,sparsity=0.5}", example_inputs=(x,))
    weights = _weights(cm.graph)
    assert weights["conv1"].shape == (4, 3, 3, 3) and weights["conv2"].shape == (4, 1, 3, 3)
    assert weights["fc"].shape == (4, 4)
    assert ir.get_tensor(cm.graph, "bn2.running_var").shape == (4,)
    out = cm(torch.randn(3, 3, 8, 8))
    assert out.shape == (3, 4) and torch.isfinite(out).all()


def test_wanda_channel_scores_use_activations():
    model, (x,) = AttentionBlock(), (torch.randn(2, 5, 16),)
    calib = [(torch.randn(2, 5, 16),) for _ in range(2)]
    cm = fxc.compile(
        model.eval(), "prune{method=wanda,pattern=channel,sparsity=0.5}", example_inputs=(x,), calibration=calib
    )
    weights = _weights(cm.graph)
    assert weights["up"].shape == (16, 16) and weights["down"].shape == (16, 16)
    assert weights["qkv"].shape == (48, 16)  # attention heads are not channels
    assert cm(x).shape == x.shape


def test_structured_bad_input():
    with pytest.raises(OptionError, match="'method'=sparse-gpt"):
        Prune(method="sparse-gpt", pattern="channel")
    with pytest.raises(fxc.PipelineSyntaxError, match="sparse-gpt"):
        fxc.Pipeline.parse("prune{method=sparse-gpt,pattern=channel}")
    model, example = tiny_llama(layers=1)
    with pytest.raises(OptionError, match="selects no prunable channel group"):
        fxc.compile(model, "prune{pattern=channel,layers=[q_proj]}", example_inputs=example)
