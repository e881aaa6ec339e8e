"""A newcomer's first hour with the `fxc` command (issue #25), on tiny models made here: the built-in
calibration text and the line that says what calibration was used, one-line errors with exit status 2
(--debug for the traceback), shape mismatches named at trace time and at call time, Hugging Face models
that take input_ids alone, one summary line of backend kernels, whole progress lines in a pipe,
--version, no third-party warnings, and `fxc report` from its cache."""

import sys
import textwrap
import warnings
from importlib import resources

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import mlp

import fxc
from fxc.cli import console
from fxc.cli.calibration import MIN_SEQUENCES, MIN_TOKENS, looks_like_path
from fxc.cli.main import main
from fxc.cli.model_source import random_example
from fxc.errors import InputError

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(60)]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]")


@pytest.fixture
def llama_folder(tmp_path):
    """A tiny Llama causal LM (vocabulary 64, 64 positions) with a word-level tokenizer, as a HF folder."""
    from tiny_models import tiny_llama

    model, _ = tiny_llama()
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """A module of factories in the working folder (the CLI finds module:factory there), named per test."""
    name = f"first_hour_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import torch
        from tiny_models import MLP

        def mlp_only():
            return MLP().eval()

        def boom():
            raise RuntimeError("boom from the factory\\nsecond line")
    """))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def _err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# --- 1. calibration ------------------------------------------------------------------------------------


def test_the_built_in_calibration_text_ships_and_is_public_domain():
    data = resources.files("fxc.cli").joinpath("data")
    text = data.joinpath("calibration.txt").read_text(encoding="utf-8")
    assert 30_000 <= len(text.encode()) <= 60_000
    assert "We hold these truths to be self-evident" in text and "Four score and seven years ago" in text
    readme = data.joinpath("README.md").read_text()
    assert "public domain" in readme and "Declaration of Independence" in readme and "Aesop" in readme


def test_hugging_face_model_calibrates_on_the_built_in_text_and_says_so(llama_folder, tmp_path, capsys):
    assert main(["compress", str(llama_folder), "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("calibration:")]
    # the model has 64 positions: windows of 64 tokens, not the default 128
    assert line == ("calibration: built-in English text (fxc/cli/data/calibration.txt), 16 sequences x 64 tokens "
                    "(1,024 tokens; --seq-len lowered to the model's 64 positions)")
    [warning] = [line for line in err.splitlines() if line.startswith("warning:")]
    assert "1,024 tokens" in warning and "--n-calib" in warning  # below the 2,048-token minimum: one line, the fix
    assert fxc.load(tmp_path / "out").drift  # calibration ran: drift was measured


def test_every_compress_says_what_calibration_it_used(tmp_path, capsys):
    assert main(["compress", "tiny_models:mlp", "-o", str(tmp_path / "a")]) == 0
    assert "calibration: none (the factory's example inputs only trace the model" in capsys.readouterr().err
    calib = tmp_path / "calib.safetensors"
    save_file({f"{b}.0": torch.randn(4, 16) for b in range(3)}, str(calib))
    assert main(["compress", "tiny_models:mlp", "--calib-file", str(calib), "-o", str(tmp_path / "b")]) == 0
    lines = _err_lines(capsys)
    assert f"calibration: {calib}, 3 batches (12 samples; batch 0 is [4, 16])" in lines
    assert not [line for line in lines if line.startswith("warning:")]


def test_small_calibration_text_warns_once_with_the_fix(llama_folder, tmp_path, capsys):
    text = " ".join(f"w{(i * 7) % 60}" for i in range(200))
    code = main(["compress", str(llama_folder), "--calib-text", text, "--seq-len", "32", "--n-calib", "3",
                 "-o", str(tmp_path / "out")])
    assert code == 0
    lines = _err_lines(capsys)
    assert "calibration: --calib-text (765 characters), 3 sequences x 32 tokens (96 tokens)" in lines
    [warning] = [line for line in lines if line.startswith("warning:")]
    assert f"at least {MIN_SEQUENCES} sequences and {MIN_TOKENS:,} tokens" in warning
    assert "give a longer --calib-text FILE or raise --n-calib / --seq-len" in warning


def test_calibration_text_from_a_file(llama_folder, tmp_path, capsys):
    calib = tmp_path / "calib.txt"
    calib.write_text(" ".join(f"w{i % 60}" for i in range(2048)))
    assert main(["compress", str(llama_folder), "--calib-text", str(calib), "-o", str(tmp_path / "out")]) == 0
    lines = _err_lines(capsys)
    assert f"calibration: {calib}, 16 sequences x 64 tokens (1,024 tokens; --seq-len lowered to the model's 64 " \
           "positions)" in lines


@pytest.mark.parametrize("value", ["/tmp/nope-fxc-first-hour.txt", "nope.txt", "data/calib", "~/nope"])
def test_calib_text_that_looks_like_a_missing_path_is_an_error_naming_it(llama_folder, tmp_path, capsys, value):
    assert main(["compress", str(llama_folder), "--calib-text", value, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"fxc compress: error: --calib-text {value}: no such file; give an existing text file, or "
                        "the calibration text itself\n")
    assert not (tmp_path / "out").exists()


def test_what_looks_like_a_path():
    assert looks_like_path("/tmp/x") and looks_like_path("x.txt") and looks_like_path("a/b") and looks_like_path("~/x")
    assert not looks_like_path("some words") and not looks_like_path("The end. And more.")
    assert not looks_like_path("w1 w2 w3") and not looks_like_path("word")


def test_text_shorter_than_one_window_is_an_error(llama_folder, tmp_path, capsys):
    code = main(["compress", str(llama_folder), "--calib-text", "w1 w2 w3 w4 w5", "--seq-len", "16",
                 "-o", str(tmp_path / "out")])
    assert code == 2
    [line] = _err_lines(capsys)[-1:]
    assert line == ("fxc compress: error: the calibration text is 5 tokens, shorter than one window of 16 tokens "
                    "(--seq-len); give a longer text (--calib-text FILE), a smaller --seq-len, or no --calib-text for "
                    "the built-in text")


# --- 2. errors -------------------------------------------------------------------------------------------


def test_missing_calibration_file_is_one_line_naming_it(tmp_path, capsys):
    assert main(["compress", "tiny_models:mlp", "--calib-file", "nope.safetensors", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "fxc compress: error: calibration file nope.safetensors does not exist; give a safetensors file of batches "
        "(tensors named <batch>.<input>, e.g. 0.input_ids)"
    )
    assert "Traceback" not in err and "loading" not in err  # it fails before the model loads


def test_mistyped_model_folder_is_one_line(tmp_path, capsys):
    assert main(["compress", str(tmp_path / "smollm2-hff"), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"fxc compress: error: model {tmp_path / 'smollm2-hff'}: no such folder; give a Hugging Face model folder "
        "(holding config.json) or a module:factory import path (e.g. my_models:build)"
    )


def test_unreadable_calibration_file_is_one_line_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not safetensors")
    assert main(["compress", "tiny_models:mlp", "--calib-file", str(bad), "-o", str(tmp_path / "out")]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"fxc compress: error: calibration file {bad} is not a readable safetensors file (")
    assert last.endswith("write it with safetensors.torch.save_file, tensors named <batch>.<input>")


@pytest.mark.parametrize("method", ["quantize{method=gptq}", "prune{method=sparse-gpt}"])
def test_calibrating_pass_with_only_input_shape_names_the_cli_options(factories, tmp_path, capsys, method):
    code = main(["compress", f"{factories}:mlp_only", "-p", method, "--input-shape", "4,16", "-o", str(tmp_path / "o")])
    assert code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"fxc compress: error: {method} needs calibration data and --input-shape only traces")
    assert "give --calib-text FILE or --calib-file FILE" in last and "fxc.compile" not in last


def test_input_shape_of_a_model_with_an_embedding_gives_token_ids(llama_folder, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama_folder)
    args, kwargs = random_example(model, [1, 64])
    ids = kwargs["input_ids"]
    assert args == () and ids.dtype == torch.int64 and ids.shape == (1, 64)
    assert 0 <= int(ids.min()) and int(ids.max()) < 64 and torch.equal(kwargs["attention_mask"], torch.ones_like(ids))
    assert main(["compress", str(llama_folder), "--input-shape", "1,12", "-o", str(tmp_path / "out")]) == 0
    assert "calibration: none (random token ids of shape [1, 12] from --input-shape" in capsys.readouterr().err
    loaded = fxc.load(tmp_path / "out")
    assert loaded(torch.randint(0, 64, (3, 7))).logits.shape == (3, 7, 64)


def test_other_errors_are_one_line_and_debug_shows_the_traceback(factories, tmp_path, capsys):
    assert main(["compress", f"{factories}:boom", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("fxc compress: error: RuntimeError: boom from the factory; rerun with --debug "
                                    "for the traceback")
    assert "Traceback" not in err
    for argv in (["--debug", "compress", f"{factories}:boom"], ["compress", f"{factories}:boom", "--debug"]):
        assert main([*argv, "-o", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err
        assert err.splitlines()[-1] == "fxc compress: error: RuntimeError: boom from the factory"


def test_version_prints_the_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"fxc {fxc.__version__}\n"


# --- 3. shape mismatches -------------------------------------------------------------------------------


def test_wrong_input_shape_is_a_shape_mismatch_at_trace_time(factories, tmp_path, capfd):
    assert main(["compress", f"{factories}:mlp_only", "--input-shape", "4,17", "-o", str(tmp_path / "o")]) == 2
    err = capfd.readouterr().err
    last = err.splitlines()[-1]
    assert last.startswith("fxc compress: error: shape mismatch: the inputs (input 0: [4, 17], from --input-shape "
                           "4,17) do not fit the model: its first layer layers.0 (Linear) takes 16 features in the "
                           "last dim, the input has 17: give --input-shape 4,16 (RuntimeError: ")
    assert "frontend=" not in err and "fake_tensor" not in err  # no library advice, no torch log


def test_calibration_file_of_the_wrong_width_is_a_shape_mismatch(factories, tmp_path, capfd):
    calib = tmp_path / "calib.safetensors"
    save_file({f"{b}.0": torch.randn(4, 17) for b in range(2)}, str(calib))
    assert main(["compress", f"{factories}:mlp_only", "--calib-file", str(calib), "-o", str(tmp_path / "o")]) == 2
    last = capfd.readouterr().err.splitlines()[-1]
    assert last.startswith(f"fxc compress: error: shape mismatch: the inputs (input 0: [4, 17], from batch 0 of "
                           f"--calib-file {calib}) do not fit the model: its first layer layers.0 (Linear) takes 16 "
                           "features in the last dim, the input has 17 (")


def test_compiled_model_names_a_shape_mismatch_at_call_time():
    model, (x,) = mlp()
    cm = fxc.compile(model, "quantize{bits=8}", example_inputs=(x,))
    with pytest.raises(InputError, match=r"^input 0 \(x\) has shape \[4, 17\]; the model was compiled for \[\*, 16\] "
                                         r"\(dim 1 is fixed at 16\)$"):
        cm(torch.randn(4, 17))
    with pytest.raises(InputError, match=r"input 0 \(x\) has shape \[2, 4, 16\]; .* for \[\*, 16\] \(rank 2\)"):
        cm(torch.randn(2, 4, 16))
    with pytest.raises(InputError, match=r"input 0 \(x\) is torch.int64; the model was compiled for torch.float32"):
        cm(torch.ones(4, 16, dtype=torch.int64))
    with pytest.raises(InputError, match=r"input 0 \(x\) is missing; the model was compiled for \(x\)"):
        cm()
    with pytest.raises(InputError, match=r"has no input 'y'; it was compiled for \(x\)"):
        cm(x, y=x)
    assert cm(x=torch.randn(7, 16)).shape == (7, 8)  # the batch dim is free; by name works too


def test_inputs_traced_with_one_size_must_agree(llama_folder):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama_folder)
    ids = torch.randint(0, 64, (2, 6))
    cm = fxc.compile(model, "dce", example_inputs={"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    with pytest.raises(InputError, match=r"input 1 \(attention_mask\) has shape \[2, 5\], dim 1 = 5; input 0 "
                                         r"\(input_ids\) has dim 1 = 6"):
        cm(ids, torch.ones(2, 5, dtype=torch.int64))


# --- 4. Hugging Face models take input_ids alone ---------------------------------------------------------


def test_hugging_face_model_takes_input_ids_alone_after_compile_and_after_load(llama_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama_folder)
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    example = {"input_ids": ids[:, :5], "attention_mask": torch.ones_like(ids[:, :5])}  # as the CLI traces it
    compiled = fxc.compile(model, "dce", example_inputs=example)
    assert main(["compress", str(llama_folder), "-p", "dce", "-o", str(tmp_path / "out")]) == 0
    loaded = fxc.load(tmp_path / "out")
    for cm in (compiled, loaded):
        with torch.no_grad():
            for logits in (cm(ids).logits, cm(input_ids=ids).logits, cm(ids, torch.ones_like(ids)).logits,
                           cm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits):
                torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


# --- 5. output ---------------------------------------------------------------------------------------------


def test_backend_notes_are_one_summary_line_unless_verbose(tmp_path, capsys):
    assert main(["compress", "tiny_models:mlp", "--backend", "torch", "-o", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    [summary] = [line for line in out.splitlines() if line.startswith("torch backend:")]
    assert summary.startswith("torch backend: 3 layers: 3 quantized_linear w8 per-channel -> ")
    assert "\n(--verbose: the kernel each layer gets)" in out
    assert main(["compress", "tiny_models:mlp", "--backend", "torch", "-v", "-o", str(tmp_path / "b")]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("torch backend:")]
    assert len(notes) == 4 and all(": quantized_linear w8" in note for note in notes[1:])  # summary, then each
    assert main(["report", str(tmp_path / "a")]) == 0  # the saved report: its summary line
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("torch backend:")]) == 1
    assert main(["report", str(tmp_path / "a"), "--verbose"]) == 0  # lowered here: each layer's kernel
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("torch backend:")]) == 4


def test_backend_summary_counts_dense_layers():
    model, (x,) = mlp()
    cm = fxc.compile(model, "quantize{bits=8,skip=[layers.2]}", example_inputs=(x,), backend="torch")
    summary = cm.backend_summary()
    assert summary.startswith("torch backend: 3 layers: 2 quantized_linear w8 per-channel -> ")
    assert summary.endswith(", 1 dense") and "\n" not in summary
    assert fxc.compile(model, "dce", example_inputs=(x,), backend="numpy").backend_summary().startswith(
        "numpy backend: 3 layers: 3 dense")


@pytest.mark.parametrize(
    "isa,kernel", [("avx2", "AVX2 kernel"), ("generic", "dequantized in scratch (whole weight) + addmm")]
)
def test_backend_summary_names_each_kernel_without_its_detail(isa, kernel):
    model, (x,) = mlp()
    cm = fxc.compile(model, "quantize{bits=8}", example_inputs=(x,), backend="torch", backend_options={"isa": isa})
    assert cm.backend_summary() == f"torch backend: 3 layers: 3 quantized_linear w8 per-channel -> {kernel}"
    assert all(note.count("(") == note.count(")") for note in cm.backend_notes())  # the detail is in the notes


def test_compress_can_write_the_same_folder_again(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compress", "tiny_models:mlp", "-o", str(out)]) == 0
    assert main(["compress", "tiny_models:mlp", "-p", "quantize{bits=4}", "-o", str(out)]) == 0
    assert str(fxc.load(out).pipeline) == "quantize{bits=4}" and "w4" in (out / "report.txt").read_text()
    (out / "notes.md").write_text("mine")
    assert main(["compress", "tiny_models:mlp", "-o", str(out)]) == 2  # a file of someone else's: not replaced
    assert "holds other files (notes.md" in capsys.readouterr().err and (out / "report.txt").is_file()


def test_progress_in_a_pipe_is_whole_lines(tmp_path, capsys):
    assert main(["compress", "tiny_models:mlp", "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b[" not in err  # nothing redrawn, no terminal codes
    lines = err.splitlines()
    for step in ("loading tiny_models:mlp", "tracing tiny_models:mlp", "lowering for the backend",
                 f"saving to {tmp_path / 'out'}"):
        assert f"{step} ..." in lines and any(line.startswith(f"{step}: done in ") for line in lines)
    assert any(line.startswith("pass quantize: quantized 3 layers (w8, rtn) (layer 3/3, ") for line in lines)


def test_line_progress_prints_steps_at_most_once_a_period(capsys):
    from fxc.passmgr.progress import Ticker

    [quantize] = fxc.Pipeline.parse("quantize").passes
    progress = console.LineProgress(period=0.0)
    progress.before_pass(quantize, None)
    ticker = Ticker(quantize, (progress,))
    list(ticker.each(["a.q", "a.k"]))
    progress.after_pass(quantize, None, type("R", (), {"summary": "done it", "changed": True})())
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "pass quantize ..."
    assert lines[1].startswith("pass quantize: layer 1/2 a.q (") and lines[2].startswith("pass quantize: layer 2/2 a.k")
    assert lines[3].startswith("pass quantize: done it (layer 2/2, ")
    quiet = console.LineProgress(period=3600.0)
    quiet.before_pass(quantize, None)
    list(Ticker(quantize, (quiet,)).each(["a.q", "a.k"]))
    assert capsys.readouterr().err == "pass quantize ...\n"


def test_third_party_warnings_are_quiet_and_fxc_warnings_are_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with console.quiet_third_party():
            warnings.warn_explicit("deprecated", FutureWarning, "copyreg.py", 105, module="copyreg")
            warnings.warn_explicit("noise", UserWarning, "x.py", 1, module="torch._export.utils")
            warnings.warn_explicit("mine", fxc.FixedBatchWarning, "c.py", 1, module="fxc.api.compiler")
        with console.quiet_third_party(debug=True):
            warnings.warn_explicit("kept", FutureWarning, "copyreg.py", 105, module="copyreg")
    assert [str(w.message) for w in caught] == ["mine", "kept"]


def test_compress_leaks_no_third_party_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["compress", "tiny_models:mlp", "-o", str(tmp_path / "out")]) == 0
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_report_reads_the_saved_report_and_verbose_lowers_here(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["compress", "tiny_models:mlp", "-o", str(out)]) == 0
    capsys.readouterr()
    loads = []
    real_load = fxc.api.serialize.load
    monkeypatch.setattr(fxc.api.serialize, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    assert main(["report", str(out)]) == 0
    saved = capsys.readouterr().out
    assert loads == [] and "layers.0" in saved and "total" in saved  # no graph was built
    assert main(["report", str(out), "--verbose"]) == 0
    verbose = capsys.readouterr().out
    assert len(loads) == 1 and verbose.startswith(saved.split("\nmodel:")[0])  # the same table, lowered here
    (out / "weights.safetensors").write_bytes((out / "weights.safetensors").read_bytes() + b"\0")
    assert main(["report", str(out)]) == 2  # a damaged folder is refused even without a load
    assert "missing or truncated" in capsys.readouterr().err
