"""numpy backend vs torch backend on whole models: MLP, CNN (BatchNorm, pooling, depthwise), an
attention block, Hugging Face BertModel and LlamaForCausalLM from tiny random configs, each also
run at shapes other than the traced ones (exported graphs have dynamic dims)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests import tiny_models
from tests.codegen.numpy.numpy_check import check_model


def test_mlp_matches_torch_at_traced_and_other_batch_sizes():
    model, example = tiny_models.mlp()
    check_model(model, example, other_inputs=[(torch.randn(7, 16),), (torch.randn(1, 16),)])


def test_cnn_with_batchnorm_pooling_and_depthwise_conv_matches_torch():
    model, example = tiny_models.cnn()
    check_model(model, example, other_inputs=[(torch.randn(3, 3, 10, 12),)])


def test_attention_block_matches_torch():
    model, example = tiny_models.attention_block()
    check_model(model, example, other_inputs=[(torch.randn(1, 9, 16),)])


def test_bert_with_padding_mask_matches_torch():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 64, (2, 10))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    example["attention_mask"][1, 6:] = 0
    ids = torch.randint(0, 64, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    check_model(model, example, other_inputs=[{"input_ids": ids, "attention_mask": mask}])


def test_llama_for_causal_lm_matches_torch():
    pytest.importorskip("transformers")
    model, example = tiny_models.tiny_llama(layers=1)
    check_model(model, example, other_inputs=[(torch.randint(0, 64, (1, 5)),)])


class ConvZoo(nn.Module):
    """Every conv/pool/norm variant a CNN frontend emits, in one model."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.depthwise = nn.Conv2d(8, 16, 5, stride=2, padding=2, groups=8)  # channel multiplier 2
        self.pointwise = nn.Conv2d(16, 8, 1, stride=2)
        self.same = nn.Conv2d(8, 8, 4, padding="same", bias=False)
        self.norm = nn.GroupNorm(4, 8)
        self.conv1d = nn.Conv1d(8, 4, 3, padding=1)

    def forward(self, x):
        x = F.hardswish(self.stem(F.pad(x, (1, 2, 0, 1), mode="reflect")))
        x = F.hardsigmoid(self.grouped(x)) * torch.sigmoid(x)
        x = F.relu6(self.depthwise(x))
        x = F.avg_pool2d(self.norm(self.same(F.silu(self.pointwise(x)))), 3, 2, 1, ceil_mode=True,
                         count_include_pad=False)
        y = F.avg_pool2d(x, 2, ceil_mode=True) + F.max_pool2d(x, 3, 1, 1, ceil_mode=True)[..., ::2, ::2]
        z = F.adaptive_avg_pool2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), (3, 5))
        w = self.conv1d(x.flatten(2))
        return y.flatten(1), z, F.max_pool1d(w, 2), F.avg_pool1d(w, 3, 2, 1)


def test_conv_pool_norm_variants_match_torch():
    check_model(ConvZoo().eval(), (torch.randn(2, 3, 17, 15),), other_inputs=[(torch.randn(1, 3, 23, 20),)])


class SdpaVariants(nn.Module):
    def forward(self, q, k, v, bias):
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        masked = F.scaled_dot_product_attention(q, k, v, attn_mask=bias > 0)
        additive = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.3)
        grouped = F.scaled_dot_product_attention(q, k[:, :1], v[:, :1], enable_gqa=True)
        return causal, masked, additive, grouped


def test_attention_masks_scales_and_grouped_queries_match_torch():
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    bias = torch.randn(2, 1, 6, 6)
    bias[0, 0, 2] = -1.0  # a query that may attend to nothing: torch gives zeros there
    check_model(SdpaVariants(), (q, k, v, bias))
