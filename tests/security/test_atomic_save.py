"""fxc.save is atomic: killed at any moment, the folder holds the old model or the new one, and the
next save leaves no stray files; files get the usual modes; a folder holding other files is not
replaced."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from tiny_models import mlp

import fxc

CHILD = textwrap.dedent(
    """
    import sys, torch, fxc
    from safetensors.torch import save_file
    folder, refs = sys.argv[1], sys.argv[2]
    x = torch.randn(3, 512, generator=torch.Generator().manual_seed(0))
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 512))
        models.append(fxc.compile(model, None, example_inputs=(x,)))
    save_file({"x": x, "a": models[0](x), "b": models[1](x)}, refs)
    fxc.save(models[0], folder)
    print("ready", flush=True)
    i = 1
    while True:
        fxc.save(models[i % 2], folder)
        i += 1
    """
)


def test_kill_during_save_leaves_the_old_or_the_new_model(tmp_path):
    from safetensors.torch import load_file

    folder, refs = tmp_path / "model", tmp_path / "refs.safetensors"
    rng = random.Random(0)
    seen = set()
    for _ in range(6):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(refs)], stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 1.0))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        expected = load_file(str(refs))
        out = fxc.load(folder)(expected["x"])
        matches = [name for name in ("a", "b") if torch.allclose(out, expected[name], atol=1e-5)]
        assert matches, "the folder holds neither the old nor the new model"
        seen.add(matches[0])
    fxc.save(fxc.load(folder), folder)  # the next save cleans what the killed writers left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "refs.safetensors"]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "report.txt", "weights.safetensors"]


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_saved_files_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    model, (x,) = mlp()
    compiled = fxc.compile(model, None, example_inputs=(x,))
    old = os.umask(umask)
    try:
        folder = fxc.save(compiled, tmp_path / "model")
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == dir_mode
    for file in folder.iterdir():
        assert file.stat().st_mode & 0o777 == file_mode, file.name


def test_save_replaces_a_saved_model_and_leaves_nothing_else(tmp_path):
    model, (x,) = mlp()
    first = fxc.compile(model, None, example_inputs=(x,))
    second = fxc.compile(model, "quantize{bits=8}", example_inputs=(x,))
    fxc.save(first, tmp_path / "model")
    fxc.save(second, tmp_path / "model")
    assert torch.equal(fxc.load(tmp_path / "model")(x), second(x))
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_save_refuses_to_replace_a_folder_with_other_files(tmp_path):
    model, (x,) = mlp()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(fxc.FormatError, match="holds other files \\(notes.txt\\).*new or empty folder"):
        fxc.save(fxc.compile(model, None, example_inputs=(x,)), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_failed_save_leaves_the_old_model_and_no_temporary_folder(tmp_path, monkeypatch):
    model, (x,) = mlp()
    compiled = fxc.compile(model, None, example_inputs=(x,))
    fxc.save(compiled, tmp_path / "model")
    before = (tmp_path / "model" / "manifest.json").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        fxc.save(compiled, tmp_path / "model")
    assert (tmp_path / "model" / "manifest.json").read_bytes() == before
    assert [p.name for p in Path(tmp_path).iterdir()] == ["model"]
