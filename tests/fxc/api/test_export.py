"""fxc.export on a tiny random Llama made here with transformers: the dense "hf" folder gives the compressed model's
logits; compressed-tensors folders (W4 g32, W8, W8A8, asymmetric W4, 2:4) load in transformers with the same or
close logits and the scheme in config.json; GGUF Q8_0 / Q4_0 / Q4_1 read back by transformers' GGUF loader give
close logits and the same 8 greedy tokens; plans a format cannot hold are refused before anything is written,
naming the layer; requantizing for GGUF needs the flag and reports its error; the config survives fxc.save."""

import json
from functools import cache

import pytest
import torch

import fxc
from fxc.api.manifest import check_hf_config

transformers = pytest.importorskip("transformers")
CALIBRATION = [{"input_ids": torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(i))}
               for i in range(4)]
IDS = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(7))


def tiny_llama(tie: bool = False):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                                      max_position_embeddings=128, tie_word_embeddings=tie)
    return transformers.LlamaForCausalLM(config).eval()


@cache
def compiled(passes: str, tie: bool = False):
    """One compile per pipeline for the whole module (tracing is the slow part)."""
    return fxc.compile(tiny_llama(tie), passes, example_inputs={"input_ids": IDS}, calibration=CALIBRATION,
                       backend="torch")


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def greedy(cm, steps: int = 8) -> list[int]:
    ids = IDS
    for _ in range(steps):
        ids = torch.cat([ids, logits(cm, ids)[:, -1:].argmax(-1)], dim=1)
    return ids[0, IDS.shape[1]:].tolist()


@pytest.mark.parametrize("passes, tie", [
    ("prune{pattern=2:4},quantize{bits=4,group-size=32}", False),
    ("smooth-quant{alpha=0.5},quantize{bits=8}", False),
    ("low-rank{method=svd,ratio=0.5}", False),
    ("quantize{bits=8,skip=[]}", True),  # a quantized LM head that was tied to the embedding: written untied
])
def test_hf_export_loads_in_transformers_with_the_compressed_logits(tmp_path, passes, tie):
    cm = compiled(passes, tie)
    result = fxc.export(cm, tmp_path / "dense", format="hf")
    assert result.files[:2] == ["config.json", "model.safetensors"]
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dense").eval()
    torch.testing.assert_close(logits(model), logits(cm), rtol=1e-5, atol=1e-5)
    if "2:4" in passes:  # pruning zeros kept: half of every group of four
        assert (model.model.layers[0].mlp.up_proj.weight == 0).float().mean() >= 0.5
    if tie:
        assert json.loads((tmp_path / "dense" / "config.json").read_text())["tie_word_embeddings"] is False


@pytest.mark.parametrize("passes, weights, inputs, tolerance", [
    ("quantize{bits=4,group-size=32}", {"num_bits": 4, "group_size": 32, "strategy": "group"}, None, 1e-5),
    ("quantize{bits=8}", {"num_bits": 8, "strategy": "channel"}, None, 1e-5),
    ("quantize{bits=8,act-bits=8}", {"num_bits": 8, "strategy": "channel"}, {"strategy": "token", "dynamic": True},
     1e-2),  # vLLM / compressed-tensors scale activations by max|x| / 127, fxc by max|x| / 127.5
])
def test_compressed_tensors_export_loads_in_transformers(tmp_path, passes, weights, inputs, tolerance):
    pytest.importorskip("compressed_tensors")
    cm = compiled(passes)
    fxc.export(cm, tmp_path / "ct", format="compressed-tensors")
    config = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["ignore"] == ["lm_head"]
    (group,) = config["config_groups"].values()
    assert weights.items() <= group["weights"].items() and len(group["targets"]) == 14
    assert (group["input_activations"] is None) == (inputs is None)
    if inputs:
        assert inputs.items() <= group["input_activations"].items() and config["format"] == "int-quantized"
    else:
        assert config["format"] == "pack-quantized"
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ct").eval()
    torch.testing.assert_close(logits(model), logits(cm), rtol=tolerance, atol=tolerance)


def test_compressed_tensors_asymmetric_and_two_four(tmp_path):
    pytest.importorskip("compressed_tensors")
    cm = compiled("quantize{bits=4,group-size=32,symmetric=false}")
    fxc.export(cm, tmp_path / "asym", format="compressed-tensors")
    # transformers' packed path expects unpacked zero points (vllm-project/llm-compressor#1618): dequantize on load
    quantization = transformers.CompressedTensorsConfig(dequantize=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "asym", quantization_config=quantization)
    torch.testing.assert_close(logits(model.eval()), logits(cm), rtol=1e-5, atol=1e-5)

    cm = compiled("prune{pattern=2:4,lower=true},quantize{bits=8}")
    fxc.export(cm, tmp_path / "sparse", format="compressed-tensors")
    sparsity = json.loads((tmp_path / "sparse" / "config.json").read_text())["quantization_config"]["sparsity_config"]
    assert sparsity["format"] == "dense" and sparsity["sparsity_structure"] == "2:4" and len(sparsity["targets"]) == 14
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "sparse").eval()
    torch.testing.assert_close(logits(model), logits(cm), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("passes, block", [
    ("quantize{bits=8,group-size=32}", "Q8_0"),
    ("quantize{bits=4,group-size=32}", "Q4_0"),
    ("quantize{bits=4,group-size=64,symmetric=false}", "Q4_1"),  # a group of 64 is two blocks with one scale
])
def test_gguf_export_reads_back_in_transformers(tmp_path, passes, block):
    gguf = pytest.importorskip("gguf")
    pytest.importorskip("accelerate", reason="transformers' GGUF loader needs accelerate")
    cm = compiled(passes)
    result = fxc.export(cm, tmp_path / "g", format="gguf")
    assert result.files == ["model.gguf"] and not result.requantized
    assert len(result.errors) == 14 and max(result.errors.values()) < 2e-3  # float16 block scales only
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "g" / "model.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == types["blk.1.ffn_down.weight"] == block
    assert types["blk.0.attn_norm.weight"] == types["output.weight"] == "F32"
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "g", gguf_file="model.gguf").eval()
    torch.testing.assert_close(logits(model), logits(cm), rtol=0, atol=3e-3)
    generated = model.generate(IDS, max_new_tokens=8, min_new_tokens=8, do_sample=False, eos_token_id=None,
                               pad_token_id=0)
    assert generated[0, IDS.shape[1]:].tolist() == greedy(cm)


def test_gguf_requantizes_only_when_allowed_and_reports_the_error(tmp_path):
    pytest.importorskip("gguf")
    cm = compiled("quantize{bits=8,symmetric=false}")  # int8 with zero points: no GGUF block type holds it
    with pytest.raises(fxc.ExportError, match=r"layer model\.layers\.0\.self_attn\.q_proj \(w8 per channel with zero "
                                              r"points\) has no exact GGUF block type.*allow_requantize=True"):
        fxc.export(cm, tmp_path / "g", format="gguf")
    assert not (tmp_path / "g").exists()
    result = fxc.export(cm, tmp_path / "g", format="gguf", allow_requantize=True)
    assert len(result.requantized) == 14 and 1e-4 < max(result.errors.values()) < 0.05
    assert "requantization: max" in str(result) and "model.layers.1.mlp.down_proj:" in str(result)
    pytest.importorskip("accelerate", reason="transformers' GGUF loader needs accelerate")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "g", gguf_file="model.gguf").eval()
    torch.testing.assert_close(logits(model), logits(cm), rtol=0, atol=2e-2)


@pytest.mark.parametrize("passes, format, message", [
    ("low-rank{method=svd,ratio=0.5}", "compressed-tensors", r"layer model\.layers\.0\.self_attn\.q_proj is split "
                                                             r"into two low-rank factors"),
    ("low-rank{method=svd,ratio=0.5}", "gguf", r"model\.layers\.0\.self_attn\.q_proj is split into two low-rank"),
    ("quantize{bits=8,act-bits=8}", "gguf", r"layer model\.layers\.0\.self_attn\.q_proj is W8A8.*GGUF has no "
                                            r"int8-activation scheme"),
    ("prune{pattern=channel,sparsity=0.5}", "hf", r"layer model\.layers\.0\.mlp\.gate_proj: its weight is \[64, 64\] "
                                                  r"but LlamaForCausalLM .* has \[128, 64\]"),
])
def test_a_plan_the_format_cannot_hold_is_refused_before_writing(tmp_path, passes, format, message):
    if format == "compressed-tensors":
        pytest.importorskip("compressed_tensors")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("{}")  # an earlier export stays as it was
    with pytest.raises(fxc.ExportError, match=message):
        fxc.export(compiled(passes), tmp_path / "out", format=format)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["config.json"]
    assert (tmp_path / "out" / "config.json").read_text() == "{}"


def test_the_config_survives_save_and_a_saved_folder_exports(tmp_path):
    cm = compiled("quantize{bits=4,group-size=32}")
    fxc.save(cm, tmp_path / "saved")
    manifest = json.loads((tmp_path / "saved" / "manifest.json").read_text())
    assert manifest["hf_config"]["architectures"] == ["LlamaForCausalLM"]
    assert fxc.load(tmp_path / "saved").graph.meta["fxc.hf_config"] == manifest["hf_config"]
    fxc.export(tmp_path / "saved", tmp_path / "dense", format="hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dense").eval()
    torch.testing.assert_close(logits(model), logits(cm), rtol=1e-5, atol=1e-5)


def test_a_model_without_hugging_face_config_names_the_fix(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(32, 32))
    cm = fxc.compile(model, "quantize{bits=8}", example_inputs=(torch.randn(2, 32),))
    with pytest.raises(fxc.ExportError, match="hf_folder="):
        fxc.export(cm, tmp_path / "x", format="hf")
    with pytest.raises(fxc.ExportError, match="unknown export format 'onnx'"):
        fxc.export(cm, tmp_path / "x", format="onnx")


def test_manifest_hf_config_is_checked():
    assert check_hf_config({"a": [1, 2.5, None, {"b": "c"}]}) is None
    assert check_hf_config([1]) == "is not a dict"
    assert "not a string" in check_hf_config({"a": {1: 2}})
    assert "nests deeper" in check_hf_config({"a": json.loads("[" * 40 + "]" * 40)})
    assert "not a JSON value" in check_hf_config({"a": float("nan")})
