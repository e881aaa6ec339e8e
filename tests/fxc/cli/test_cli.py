"""The `fxc` command line on tiny models: compress (module:factory and a Hugging Face folder, with
calibration from a file or from text), report, and clear errors with exit status 2."""

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import mlp

import fxc
from fxc.cli.main import main


def test_compress_module_factory_saves_a_loadable_model(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compress", "tiny_models:mlp", "--passes", "quantize{bits=8}", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"manifest.json", "weights.safetensors", "report.txt"}
    torch.manual_seed(0)  # the seed the CLI's factory call started from: same weights, same input
    model, (x,) = mlp()
    loaded = fxc.load(out)
    assert str(loaded.pipeline) == "quantize{bits=8}"
    assert torch.equal(loaded(x), fxc.compile(model, "quantize{bits=8}", example_inputs=(x,))(x))
    printed = capsys.readouterr().out
    assert "layers.0" in printed and "total" in printed and "smaller" in printed


def test_compress_with_calibration_file_then_report(tmp_path, capsys):
    calib = tmp_path / "calib.safetensors"
    save_file({f"{b}.0": torch.randn(4, 16) for b in range(3)}, str(calib))
    out = tmp_path / "pruned"
    code = main(["compress", "tiny_models:mlp", "-p", "prune{method=wanda,sparsity=0.5}", "--calib-file", str(calib),
                 "-o", str(out)])
    assert code == 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("unstructured 50%") == 3
    assert "drift" in printed and "e-" in printed  # calibration ran, so drift was measured
    assert "total" in printed


def test_bad_pipeline_is_one_clear_message(tmp_path, capsys):
    code = main(["compress", "tiny_models:mlp", "-p", "quantize{bits=3}", "-o", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "option 'bits' must be one of 4, 8, got 3" in err and "^" in err


def test_text_calibration_needs_a_tokenizer(tmp_path, capsys):
    code = main(["compress", "tiny_models:mlp", "-p", "dce", "--calib-text", "some words", "-o", str(tmp_path)])
    assert code == 2
    assert "needs the model's tokenizer" in capsys.readouterr().err


@pytest.fixture
def hf_folder(tmp_path):
    """A tiny BERT with a word-level tokenizer, saved as a Hugging Face folder."""
    from tiny_models import tiny_bert
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(60)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]")
    model, _ = tiny_bert()
    folder = tmp_path / "tiny-bert"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_compress_hugging_face_folder_with_text_calibration(hf_folder, tmp_path):
    text = " ".join(f"w{(i * 7) % 60}" for i in range(200))
    out = tmp_path / "out"
    code = main(["compress", str(hf_folder), "-p", "quantize{bits=8,method=gptq}", "--calib-text", text,
                 "--seq-len", "32", "--n-calib", "3", "-o", str(out)])
    assert code == 0
    loaded = fxc.load(out)
    report = loaded.report(show=False)
    assert sum("w8 gptq" in r.plan for r in report.rows) == 13  # 12 encoder linears + pooler
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(hf_folder)(["w1 w2 w3", "w4 w5 w6"], return_tensors="pt")
    assert loaded(**encoded).last_hidden_state.shape == (2, 3, 32)  # called as the tokenizer's output, any length
