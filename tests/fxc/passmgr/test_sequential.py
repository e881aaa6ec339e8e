"""CalibrationRunner: segment-by-segment execution keeps only the values later segments need."""

from __future__ import annotations

import torch
from tiny_models import tiny_llama

import fxc
from fxc.passmgr.calibration import Calibration
from fxc.passmgr.sequential import CalibrationRunner, segments


def _runner(batches: int):
    model, example = tiny_llama()
    gm = fxc.trace(model, example)
    return gm, CalibrationRunner(gm, Calibration.of([example] * batches)), model, example


def test_advance_keeps_no_value_only_the_output_needs():
    gm, runner, _, _ = _runner(2)
    for segment in segments(gm):
        runner.advance(segment)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    logits = set(output.all_input_nodes)
    assert logits
    for env in runner._environments():
        assert not logits & set(env), "the logits of every calibration batch stayed in memory"


def test_forward_all_still_returns_the_outputs():
    gm, runner, model, example = _runner(1)
    (outputs,) = runner.forward_all()
    expected = model(**example).logits if isinstance(example, dict) else model(*example).logits
    got = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_whole_graph_analyses_keep_no_outputs(monkeypatch):
    """hessian and act-stats run forward_all with keep_outputs=False: an LM's logits for every calibration batch
    would otherwise stay in memory until the analysis ends (12.9 GB for SmolLM2 at 128 x 512 tokens)."""
    from fxc.passmgr.analysis_manager import AnalysisManager

    gm, runner, _, example = _runner(2)
    assert runner.forward_all(keep_outputs=False) == []
    seen = []
    original = CalibrationRunner.forward_all

    def spy(self, on_layer_input=None, keep_outputs=True):
        result = original(self, on_layer_input, keep_outputs)
        seen.append(len(result))
        return result

    monkeypatch.setattr(CalibrationRunner, "forward_all", spy)
    am = AnalysisManager(gm, Calibration.of([example] * 2))
    am.get("hessian")
    am.get("act-stats")
    assert seen == [0, 0]


def test_observe_shows_the_inputs_a_run_would_without_running_the_segment(monkeypatch):
    """Every segment starts at its layer group, whose input an earlier segment made: observe reads it from the
    kept values (the same tensors a run of the segment shows) and executes nothing."""
    gm, runner, _, _ = _runner(2)
    execute = CalibrationRunner._execute
    executed = []
    monkeypatch.setattr(CalibrationRunner, "_execute", lambda self, nodes, *a, **k: executed.append(len(nodes))
                        or execute(self, nodes, *a, **k))  # fmt: skip
    for segment in segments(gm):
        wanted, seen = [], []
        for env in runner._environments():  # what running the segment shows
            execute(runner, segment.nodes, dict(env), lambda node, x, into=wanted: into.append((node, x.clone())))
        runner.observe(segment, lambda node, x, into=seen: into.append((node, x.clone())))
        assert executed == []  # nothing ran
        assert [n for n, _ in seen] == [n for n, _ in wanted] == [layer.node for layer in segment.layers] * 2
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(seen, wanted))
        runner.advance(segment)
        executed.clear()
