"""`fxc generate` on a tiny random Llama with a word-level tokenizer saved as a Hugging Face folder: `fxc compress`
keeps the tokenizer (atomically, replaced with the folder, read back without running code from it); --prompt
streams text whose tokens are transformers' greedy `generate`; --prompt-ids in and out; sampling flags reach
cm.generate; errors are one line with exit status 2; incremental decoding of byte-level BPE prints whole
characters.

Tests marked `needs_generate` call `cm.generate` (fxc/api/generate/, issue #21): they are expected failures while
this tree has no CompiledModule.generate and run as ordinary tests once it does."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import fxc
from fxc.api.backend import CompiledModule
from fxc.cli.main import main
from fxc.cli.stream import TextPrinter
from fxc.cli.tokenizer_files import KEPT, load_tokenizer, save_with_tokenizer

transformers = pytest.importorskip("transformers")
needs_generate = pytest.mark.xfail(
    not hasattr(CompiledModule, "generate"), strict=True,
    reason="cm.generate (issue #21, fxc/api/generate/) is not in this tree yet",
)
WORDS = [f"w{i}" for i in range(64)]  # every id decodes to a word, so printed text maps back to ids exactly
NEW = 12


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="w0"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="w0")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A tiny random LlamaForCausalLM (vocabulary 64, eos id 2) with its word-level tokenizer."""
    from tiny_models import tiny_llama

    torch.manual_seed(1)
    model, _ = tiny_llama()
    folder = tmp_path_factory.mktemp("generate_cli") / "tiny-llama"
    model.save_pretrained(folder)
    _word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def saved(hf_folder, tmp_path_factory) -> Path:
    """`fxc compress -p dce` of the folder: the dense model, so greedy tokens equal transformers'."""
    out = tmp_path_factory.mktemp("generate_cli_saved") / "out"
    assert main(["compress", str(hf_folder), "-p", "dce", "-o", str(out)]) == 0
    return out


def _greedy(hf_folder: Path, prompt_ids: list[int], new: int) -> list[int]:
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_folder).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=new, do_sample=False)
    return out[0, len(prompt_ids):].tolist()


def _one_error_line(capsys, loaded: bool = False) -> str:
    """The error: one line, the last on stderr; before it, when `loaded`, only the loading step's lines, else none."""
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    lines = [line for line in err if not (loaded and line.startswith("loading "))]
    assert len(lines) == 1 and lines[0].startswith("fxc generate: error: "), captured.err
    assert err[-1] == lines[0] and not captured.out
    return lines[0]


# --- the tokenizer kept by fxc compress ------------------------------------------------------------------------


def test_compress_keeps_the_tokenizer_beside_the_model(saved, hf_folder):
    files = {p.name for p in saved.iterdir()}
    assert {"manifest.json", "weights.safetensors", "report.txt", "tokenizer.json", "tokenizer_config.json"} <= files
    assert files <= {"manifest.json", "weights.safetensors", "report.txt", *KEPT}
    original = transformers.AutoTokenizer.from_pretrained(hf_folder)
    kept = load_tokenizer(saved)
    text = "w5 w17 w63 w0 w2"
    assert kept(text)["input_ids"] == original(text)["input_ids"] == [5, 17, 63, 0, 2]
    assert kept.decode([5, 17, 63]) == "w5 w17 w63"


def test_the_tokenizer_is_replaced_with_the_folder(tmp_path):
    from tiny_models import mlp

    model, (x,) = mlp()
    cm = fxc.compile(model, "dce", example_inputs=(x,))
    out = tmp_path / "out"
    assert save_with_tokenizer(cm, out, _word_tokenizer()) == (out, "")
    assert (out / "tokenizer.json").is_file() and not list(tmp_path.glob(".out*"))  # no temporary folder left
    save_with_tokenizer(cm, out, _word_tokenizer())  # the same folder again: the tokenizer files are its own
    folder, note = save_with_tokenizer(cm, out, None)  # a model without a tokenizer: none left from before
    assert note == "" and load_tokenizer(folder) is None and not (out / "tokenizer_config.json").exists()
    torch.testing.assert_close(fxc.load(out)(x), cm(x))


def test_a_slow_tokenizer_is_not_kept_and_the_note_says_why(tmp_path):
    from tiny_models import mlp

    class Slow:
        is_fast = False

    model, (x,) = mlp()
    folder, note = save_with_tokenizer(fxc.compile(model, "dce", example_inputs=(x,)), tmp_path / "o", Slow())
    assert "not a fast tokenizer" in note and "--prompt-ids" in note and load_tokenizer(folder) is None


def test_loading_the_tokenizer_runs_no_code_from_the_folder(saved, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    marker = tmp_path / "ran"
    (folder / "evil_tokenizer.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Evil: pass\n")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config |= {"tokenizer_class": "Evil", "auto_map": {"AutoTokenizer": ["evil_tokenizer.Evil", None]},
               "eos_token": {"content": "w2"}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = load_tokenizer(folder)
    assert tokenizer("w3 w4")["input_ids"] == [3, 4] and tokenizer.eos_token == "w2"
    assert not marker.exists()


# --- fxc generate --------------------------------------------------------------------------------------------------


@needs_generate
def test_prompt_streams_the_text_of_transformers_greedy_tokens(saved, hf_folder, capsys):
    prompt = "w7 w21 w40 w3"
    expected = _greedy(hf_folder, [7, 21, 40, 3], NEW)
    assert main(["generate", str(saved), "--prompt", prompt, "--max-new-tokens", str(NEW)]) == 0
    captured = capsys.readouterr()
    assert captured.out.endswith("\n")
    assert [WORDS.index(word) for word in captured.out.split()] == expected
    last = captured.err.strip().splitlines()[-1]
    pattern = rf"prompt 4 tokens, {len(expected)} new tokens.*; prefill [\d.]+ ms, decode ([\d.]+ tokens/s|n/a.*)"
    assert re.fullmatch(pattern + r" \(\d+ threads?\)", last), last


@needs_generate
def test_prompt_ids_in_token_ids_out(saved, hf_folder, capsys):
    expected = _greedy(hf_folder, [9, 1, 33], NEW)
    threads = torch.get_num_threads()
    try:
        assert main(["generate", str(saved), "--prompt-ids", "9, 1 33", "-n", str(NEW), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    assert [int(word) for word in captured.out.split()] == expected and "(1 thread)" in captured.err


@needs_generate
def test_prompt_ids_work_without_a_tokenizer_and_prompt_names_the_fix(saved, hf_folder, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(saved, bare, ignore=shutil.ignore_patterns(*KEPT))
    assert main(["generate", str(bare), "--prompt", "w1 w2"]) == 2
    line = _one_error_line(capsys)
    assert "keeps no tokenizer" in line and '--prompt-ids "1 2 3"' in line and "compress" in line
    assert main(["generate", str(bare), "--prompt-ids", "7 21 40 3", "-n", "5"]) == 0
    assert [int(word) for word in capsys.readouterr().out.split()] == _greedy(hf_folder, [7, 21, 40, 3], 5)


@needs_generate
def test_sampling_flags_reach_generate(saved, hf_folder, capsys):
    args = ["generate", str(saved), "--prompt-ids", "7 21 40 3", "-n", "8", "--do-sample"]
    assert main([*args, "--top-k", "1", "--seed", "5"]) == 0  # one candidate: greedy
    assert [int(word) for word in capsys.readouterr().out.split()] == _greedy(hf_folder, [7, 21, 40, 3], 8)
    runs = []
    for _ in range(2):
        assert main([*args, "--temperature", "3.0", "--top-p", "0.99", "--seed", "11"]) == 0
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1] and runs[0].split()  # one seed, one draw


# --- errors: one line, exit status 2 ---------------------------------------------------------------------------------


@needs_generate
def test_too_many_new_tokens_and_a_model_without_a_cache_are_one_line(saved, tmp_path, capsys):
    assert main(["generate", str(saved), "--prompt", "w1 w2 w3 w4", "--max-new-tokens", "61"]) == 2
    line = _one_error_line(capsys, loaded=True)
    assert "the prompt (4 tokens) plus --max-new-tokens 61 exceed the model's 64 positions; give --max-new-tokens 60 " \
           "or less" in line
    assert main(["compress", "tiny_models:mlp", "-o", str(tmp_path / "mlp")]) == 0
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "mlp"), "--prompt-ids", "1 2"]) == 2
    assert "holds no KV-cache step graph, so it cannot generate" in _one_error_line(capsys, loaded=True)



def test_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope"), "--prompt", "hi"]) == 2
    assert "is not a folder written by fxc.save" in _one_error_line(capsys)


@pytest.mark.parametrize("flags,words", [
    (["--do-sample", "--top-p", "1.5"], "--top-p is 1.5; give a probability above 0 and at most 1"),
    (["--do-sample", "--top-p", "0"], "--top-p is 0.0"),
    (["--do-sample", "--temperature", "0"], "--temperature is 0.0; give a number above 0"),
    (["--do-sample", "--top-k", "0"], "--top-k is 0; give 1 or more"),
    (["--top-p", "0.9", "--seed", "1"], "--top-p, --seed only act when sampling: add --do-sample"),
    (["--max-new-tokens", "0"], "--max-new-tokens is 0; give 1 or more"),
    (["--threads", "0"], "--threads is 0; give 1 or more"),
])
def test_bad_flags_are_one_line_before_loading(saved, capsys, flags, words):
    assert main(["generate", str(saved), "--prompt", "w1", *flags]) == 2
    assert words in _one_error_line(capsys)  # checked before the model loads: no loading line


@pytest.mark.parametrize("ids,words", [("1 x 3", "'x' is not a token id"), (" , ", "it holds no token id"),
                                       ("1 64", "token id 64 is outside the model's vocabulary of 64 tokens")])
def test_bad_prompt_ids_are_one_line(saved, capsys, ids, words):
    assert main(["generate", str(saved), "--prompt-ids", ids]) == 2
    assert words in _one_error_line(capsys)


# --- incremental decoding ----------------------------------------------------------------------------------------


def test_incremental_decoding_prints_whole_characters():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(["the quick brown fox jumps over the lazy dog; " * 20], trainer)  # ASCII merges only
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core)
    ids = tokenizer("Say: the naïve café, 日本語 and 🙂 over the lazy dog")["input_ids"]  # one byte a token there
    prompt, new = ids[:3], ids[3:]
    assert any("\ufffd" in tokenizer.decode([i]) for i in new)  # some tokens hold part of a character

    class Out:
        def __init__(self):
            self.pieces = []

        def write(self, piece):
            self.pieces.append(piece)

        def flush(self):
            pass

    out = Out()
    printer = TextPrinter(tokenizer, prompt, out)
    for token in new:
        printer(token)
    printer.finish()
    assert "".join(out.pieces) == tokenizer.decode(new)
    assert not any("\ufffd" in piece for piece in out.pieces) and len(out.pieces) > 10
