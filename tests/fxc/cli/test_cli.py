"""The `fxc` command line on tiny models: compress (module:factory and a Hugging Face folder, with
calibration from a file or from text), report, backend options (--backend-option KEY=VALUE), and
clear errors with exit status 2."""

import json

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import mlp

import fxc
from fxc.cli.main import main, parse_backend_options


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


def test_backend_option_reaches_the_backend_and_is_saved(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    code = main(["compress", "tiny_models:mlp", "--backend", "torch", "--backend-option", "native=false",
                 "--backend-option", "sparse-crossover=0.25", "-o", str(out)])
    assert code == 0
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["backend"] == "torch" and saved["backend_options"] == {"native": False, "sparse_crossover": 0.25}
    assert fxc.load(out).backend_options == {"native": False, "sparse_crossover": 0.25}

    loaded = []
    real_load = fxc.api.serialize.load
    monkeypatch.setattr(fxc.api.serialize, "load", lambda *args, **kwargs: loaded.append(real_load(*args, **kwargs))
                        or loaded[-1])
    capsys.readouterr()
    assert main(["report", str(out), "--verbose"]) == 0  # lowered here: the saved options
    assert loaded[-1].backend_options == {"native": False, "sparse_crossover": 0.25}  # none given: the saved ones
    assert main(["report", str(out), "--backend-option", "fast=false"]) == 0
    assert loaded[-1].backend_options == {"fast": False} and loaded[-1].runner is loaded[-1].graph
    assert "total" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["compress", "report"])
@pytest.mark.parametrize("item", ["native", "=false", " =1"])
def test_malformed_backend_option_is_one_clear_message(tmp_path, capsys, command, item):
    target = ["tiny_models:mlp", "-o", str(tmp_path)] if command == "compress" else [str(tmp_path)]
    assert main([command, *target, "--backend-option", item]) == 2
    err = capsys.readouterr().err
    expected = f"--backend-option {item!r} is not KEY=VALUE (e.g. --backend-option native=false)"
    assert err == f"fxc {command}: error: {expected}\n"


def test_unknown_backend_option_is_one_clear_message(tmp_path, capsys):
    code = main(["compress", "tiny_models:mlp", "--backend", "torch", "--backend-option", "nativ=false",
                 "-o", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err == (
        "fxc compress: error: backend 'torch' has no option 'nativ'; it takes fast, torch_compile, sparse_crossover, "
        "native, isa\n"
    )


def test_backend_option_values_read_as_json_scalars():
    items = ["a=true", "b=FALSE", "c=3", "d=-0.5", "e=1e-3", "f=text", "g=", "h=inf", "url=x=y", "kebab-key=1"]
    assert parse_backend_options(items) == {
        "a": True, "b": False, "c": 3, "d": -0.5, "e": 0.001, "f": "text", "g": "", "h": "inf", "url": "x=y",
        "kebab_key": 1,
    }
    assert parse_backend_options(["n=1", "n=2"]) == {"n": 2}  # the last one given wins


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
