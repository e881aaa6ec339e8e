"""Progress inside passes (fxc/passmgr/progress.py): every sequential pass ticks once per segment of the tiny
Llama, in graph order, with the right totals; RTN quantize and magnitude prune tick once per layer; an
analysis's ticks are its own; the rich display (fxc.Progress) renders to a non-terminal console and
stops when a pass fails; a plain compile prints nothing; `fxc compress` shows the bars on stderr."""

import io

import pytest
import torch
from rich.console import Console
from tiny_models import mlp, tiny_llama

import fxc
from fxc.cli.main import main
from fxc.passmgr.progress import Ticker, group_label
from fxc.passmgr.sequential import segments


class Recorder(fxc.Instrument):
    """Keeps every progress event as (name of the pass or analysis, step)."""

    def __init__(self):
        self.events = []
        self.finished = 0

    def progress(self, item, step):
        self.events.append((item.name, step))

    def finish(self):
        self.finished += 1

    def ticks(self, name):
        return [step for owner, step in self.events if owner == name and step.finished]


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    model, example = tiny_llama(layers=2)
    calibration = [(torch.randint(0, 64, (1, 12)),) for _ in range(3)]
    return fxc.trace(model, example), example, calibration


@pytest.mark.parametrize(
    "pipeline",
    [
        "prune{method=sparse-gpt,sparsity=0.5}",
        "prune{method=wanda,sparsity=0.5}",
        "quantize{method=gptq,bits=4}",
        "low-rank{method=whitened,ratio=0.5}",
    ],
)
def test_sequential_pass_ticks_once_per_segment_in_order(llama, pipeline):
    gm, example, calibration = llama
    every = [segment.label for segment in segments(gm)]
    assert len(every) == 4 * 2 + 2 and every[-1] == "lm_head"  # embedding; q/k/v, o, gate/up, down per layer
    expected = every[:-1]  # lm_head is left dense by default, so its segment (the last) never runs
    recorder = Recorder()
    fxc.compile(gm, pipeline, example_inputs=example, calibration=calibration, instruments=[recorder])
    name = fxc.Pipeline.parse(pipeline).passes[0].name
    ticks = recorder.ticks(name)
    assert [t.layer for t in ticks] == expected
    assert [t.completed for t in ticks] == list(range(1, len(expected) + 1))
    assert {(t.total, t.unit) for t in ticks} == {(len(expected), "segment")}
    assert expected[1] == "model.layers.0.self_attn.{q_proj,k_proj,v_proj}" and expected[-1].endswith("down_proj")
    started = [step for owner, step in recorder.events if owner == name and not step.finished]
    assert started[0].completed == 0 and started[0].total == len(expected)  # the count comes before any tick
    working = [s.layer for s in started if s.layer]
    assert working and working == [label for label in expected if label in working]  # named before it ran, in order
    assert recorder.finished == 1


@pytest.mark.parametrize("pipeline", ["quantize{bits=8}", "prune{method=magnitude,sparsity=0.5}"])
def test_per_layer_pass_ticks_once_per_layer(pipeline):
    model, (x,) = mlp()
    recorder = Recorder()
    fxc.compile(model, pipeline, example_inputs=(x,), instruments=[recorder])
    ticks = recorder.ticks(pipeline.split("{")[0])
    assert [t.layer for t in ticks] == ["layers.0", "layers.1", "layers.2"]
    assert [(t.completed, t.total, t.unit) for t in ticks] == [(1, 3, "layer"), (2, 3, "layer"), (3, 3, "layer")]


def test_an_analysis_reports_its_own_batches(llama):
    gm, example, calibration = llama
    recorder = Recorder()
    fxc.compile(gm, "hessian,dce", example_inputs=example, calibration=calibration, instruments=[recorder])
    assert {owner for owner, _ in recorder.events} == {"hessian"}  # ticked by the analysis, not its pipeline entry
    ticks = recorder.ticks("hessian")
    assert [(t.completed, t.total, t.unit, t.layer) for t in ticks] == [
        (i, len(calibration), "batch", f"batch {i}") for i in range(1, len(calibration) + 1)
    ]


def test_rich_display_renders_to_a_non_terminal_console(llama):
    gm, example, calibration = llama
    out = io.StringIO()
    fxc.compile(gm, "hessian,prune{method=sparse-gpt,sparsity=0.5}", example_inputs=example, calibration=calibration,
                instruments=[fxc.Progress(console=Console(file=out, width=200))])
    text = out.getvalue()
    assert "pass prune{method=sparse-gpt}: pruned 14 layers" in text  # the text names non-default options
    assert "segment 9/9" in text and "analysis hessian" in text and "batch 3/3" in text  # lm_head: never run


def test_display_stops_when_a_pass_fails(llama):
    gm, example, _ = llama
    out = io.StringIO()
    progress, recorder = fxc.Progress(console=Console(file=out, width=200)), Recorder()
    with pytest.raises(fxc.CalibrationError, match="calibration"):
        fxc.compile(gm, "quantize{method=gptq}", example_inputs=example, instruments=[progress, recorder])
    assert recorder.finished == 1
    assert "pass quantize{method=gptq}" in out.getvalue()  # a non-terminal console prints when the display stops


def test_plain_compile_prints_nothing(llama, capsys):
    gm, example, calibration = llama
    fxc.compile(gm, "prune{method=sparse-gpt,sparsity=0.5}", example_inputs=example, calibration=calibration)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_cli_compress_shows_pass_and_layer_progress_on_stderr(tmp_path, capsys):
    assert main(["compress", "tiny_models:mlp", "-p", "quantize{bits=8}", "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "pass quantize: quantized 3 layers" in captured.err and "layer 3/3" in captured.err
    assert "pass quantize" not in captured.out  # stdout keeps the report only


def test_ticker_counts_each_and_goes_quiet_when_closed():
    recorder = Recorder()
    ticker = Ticker(fxc.Pipeline.parse("dce").passes[0], (recorder,))
    assert list(ticker.each(["a", "b"], unit="block")) == ["a", "b"]
    assert [(s.completed, s.total, s.unit, s.layer, s.finished) for _, s in recorder.events] == [
        (0, 2, "block", "", False), (0, 2, "block", "a", False), (1, 2, "block", "a", True),
        (1, 2, "block", "b", False), (2, 2, "block", "b", True),
    ]
    ticker.close()
    ticker.advance(layer="late")
    assert len(recorder.events) == 5 and ticker.completed == 2
    with pytest.raises(ValueError, match="total"):
        Ticker().start(-1)


def test_group_label_names_siblings_once():
    assert group_label([]) == ""
    assert group_label(["a.b.q"]) == "a.b.q"
    assert group_label(["a.b.q", "a.b.k"]) == "a.b.{q,k}"
    assert group_label(["x.q", "y.k"]) == "{x.q,y.k}"
    assert group_label(["a.q", "a.b.k"]) == "a.{q,b.k}"


def test_analysis_manager_outside_a_pipeline_is_silent():
    model, (x,) = mlp()
    gm = fxc.trace(model, (x,))
    am = fxc.AnalysisManager(gm)
    am.progress.start(3)
    am.progress.advance(layer="x")
    assert not am.progress.active and am.progress.completed == 0
