"""`fxc export` on a tiny Hugging Face folder (random Llama plus a byte-level BPE tokenizer trained here): compress
with the CLI, export to GGUF (the tokenizer written into the file reads back in transformers and encodes like the
original) and to compressed-tensors (tokenizer files copied), and a refusal as one line with exit status 2 and
nothing written."""

import importlib.util
from pathlib import Path

import pytest
import torch

from fxc.cli.main import main

transformers = pytest.importorskip("transformers")
TEXT = (Path(__file__).resolve().parents[3] / "fxc" / "cli" / "data" / "calibration.txt").read_text()[:20000]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([TEXT], trainer)
    folder = tmp_path_factory.mktemp("export_cli") / "tiny-llama"
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                                      max_position_embeddings=256, bos_token_id=0, eos_token_id=0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>").save_pretrained(folder)
    return folder


def test_compress_then_export_gguf_and_compressed_tensors(hf_folder, tmp_path, capsys):
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate", reason="transformers' GGUF loader needs accelerate")
    saved = tmp_path / "saved"
    assert main(["compress", str(hf_folder), "-p", "quantize{bits=4,group-size=32}", "-o", str(saved)]) == 0
    capsys.readouterr()
    assert main(["export", str(saved), "--format", "gguf", "-o", str(tmp_path / "g")]) == 0
    printed = capsys.readouterr().out
    assert "14 layers Q4_0 (exact integers)" in printed and "weight error of float16 block scales" in printed
    original = transformers.AutoTokenizer.from_pretrained(hf_folder)
    from_gguf = transformers.AutoTokenizer.from_pretrained(tmp_path / "g", gguf_file="model.gguf")
    text = "The quick brown fox, 12345 jumps."
    assert from_gguf(text)["input_ids"] == original(text)["input_ids"]
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "g", gguf_file="model.gguf")
    assert model.config.vocab_size == 300 and model.config.num_hidden_layers == 2

    if importlib.util.find_spec("compressed_tensors"):  # else the GGUF half above still counts
        assert main(["export", str(saved), "-f", "compressed-tensors", "-o", str(tmp_path / "ct")]) == 0
        files = {p.name for p in (tmp_path / "ct").iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files


def test_a_refused_export_is_one_line_and_writes_nothing(hf_folder, tmp_path, capsys):
    saved = tmp_path / "saved"
    assert main(["compress", str(hf_folder), "-p", "quantize{bits=8,act-bits=8}", "-o", str(saved)]) == 0
    capsys.readouterr()
    assert main(["export", str(saved), "--format", "gguf", "-o", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fxc export: error: layer model.layers.0.self_attn.q_proj is W8A8")
    assert "GGUF has no int8-activation scheme" in err[-1]
    assert not (tmp_path / "g").exists()
