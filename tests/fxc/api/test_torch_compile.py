"""torch.compile(model, backend="fxc") by name: passes run on each graph, weights arriving as
placeholders map back to module paths, a second batch size recompiles, graph breaks compile each
piece, calibration in the options reaches the passes (and its absence is a clear error), instruments
in the options observe each graph's compile, and a recompile of the same graph, weights and settings
reuses the compiled module instead of running the passes again."""

import gc
import io

import pytest
import torch
import torch.nn as nn
from rich.console import Console
from tiny_models import cnn, first_tensor, mlp, tiny_llama

import fxc
from fxc.api import torch_compile_cache as dynamo_cache
from fxc.ir import ops


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    dynamo_cache.clear()
    yield
    torch._dynamo.reset()
    dynamo_cache.clear()


def fxc_ops(compiled: fxc.CompiledModule) -> set:
    return {n.target for n in compiled.graph.graph.nodes if n.op == "call_function" and ops.is_fxc_op(n.target)}


def test_mlp_by_name_matches_fxc_compile_and_takes_a_second_batch_size():
    model, (x,) = mlp()
    graphs = []
    compiled = torch.compile(model, backend="fxc", options={"passes": "quantize{bits=4}", "on_compile": graphs.append})
    reference = fxc.compile(model, "quantize{bits=4}", example_inputs=(x,))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), reference(x), rtol=0, atol=0)
        y = torch.randn(7, 16)
        torch.testing.assert_close(compiled(y), reference(y), rtol=0, atol=0)
        assert not torch.allclose(compiled(y), model(y))  # the weights really are 4-bit
    assert graphs and all(fxc_ops(g) == {torch.ops.fxc.quantized_linear.default} for g in graphs)
    layers = {row.layer for row in graphs[-1].report(show=False).rows}
    assert layers == {"layers.0", "layers.1", "layers.2"}  # placeholders mapped back to module paths


def test_cnn_with_fold_bn_and_quantize():
    model, (x,) = cnn()
    graphs = []
    compiled = torch.compile(
        model, backend="fxc", options={"passes": "fold-bn,quantize{bits=8}", "on_compile": graphs.append}
    )
    with torch.no_grad():
        for batch in (x, torch.randn(5, 3, 8, 8)):
            torch.testing.assert_close(compiled(batch), model(batch), rtol=0.02, atol=0.02)
    graph = graphs[-1].graph.graph
    assert not any("batch_norm" in str(n.target) for n in graph.nodes)
    assert torch.ops.fxc.quantized_conv2d.default in fxc_ops(graphs[-1])


def test_tiny_llama_calibration_in_options_reaches_the_pass():
    model, (ids,) = tiny_llama()
    calibration = [(torch.randint(0, 64, (2, 12)),) for _ in range(2)]
    passes = "prune{method=wanda,sparsity=0.5}"
    graphs = []
    compiled = torch.compile(
        model, backend="fxc", options={"passes": passes, "calibration": calibration, "on_compile": graphs.append}
    )
    reference = fxc.compile(model, passes, example_inputs=(ids,), calibration=calibration)
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
        longer = torch.randint(0, 64, (3, 12))
        torch.testing.assert_close(compiled(longer).logits, first_tensor(reference(longer)), rtol=1e-5, atol=1e-5)
    report = graphs[-1].report(show=False)
    pruned = [r for r in report.rows if "unstructured 50%" in r.plan]
    assert len(pruned) == 14 and all(r.drift is not None for r in pruned)  # calibration ran: drift measured


def test_pass_needing_calibration_without_it_is_a_clear_error():
    model, (x,) = mlp()
    compiled = torch.compile(model, backend="fxc", options={"passes": "prune{method=wanda}"})
    with pytest.raises(fxc.CalibrationError, match=r"options=\{'calibration'"):
        compiled(x)


class WithGraphBreak(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(16, 32), nn.Linear(32, 8)

    def forward(self, x):
        h = torch.relu(self.first(x))
        if h.sum() > 0:  # data-dependent Python branch: dynamo breaks the graph here
            h = h * 2
        return self.second(h)


def test_graph_break_compiles_each_graph():
    model, x = WithGraphBreak().eval(), torch.randn(4, 16)
    graphs = []
    compiled = torch.compile(model, backend="fxc", options={"passes": "quantize{bits=8}", "on_compile": graphs.append})
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0.02, atol=0.02)
    assert len(graphs) == 2
    assert [{r.layer for r in g.report(show=False).rows} for g in graphs] == [{"first"}, {"second"}]


def test_calibration_after_a_graph_break_names_the_break():
    model, x = WithGraphBreak().eval(), torch.randn(4, 16)
    compiled = torch.compile(model, backend="fxc", options={"passes": "prune{method=wanda}", "calibration": [x]})
    with pytest.raises(fxc.CalibrationError, match="starts after a graph break"):
        compiled(x)


def test_unknown_option_is_rejected_by_name_with_the_accepted_ones():
    model, (x,) = mlp()
    compiled = torch.compile(model, backend="fxc", options={"pases": "dce"})
    with pytest.raises(Exception, match=r"unknown option 'pases' \(did you mean 'passes'\?\); the options it takes "
                                        r"are: passes, backend, calibration, backend_options, instruments, on_compile"):
        compiled(x)


@pytest.mark.parametrize(
    "instruments, message",
    [(fxc.Timing(), "must be a list of instruments"), ([fxc.Timing], r"the class Timing; pass an instance: Timing\(\)"),
     ([object()], "lacks the instrument hook")],
)
def test_bad_instruments_option_is_a_clear_error(instruments, message):
    model, (x,) = mlp()
    compiled = torch.compile(model, backend="fxc", options={"passes": "dce", "instruments": instruments})
    with pytest.raises(Exception, match=message):
        compiled(x)


def test_instruments_in_options_observe_every_graph():
    model, x = WithGraphBreak().eval(), torch.randn(4, 16)
    timing, out = fxc.Timing(), io.StringIO()
    progress = fxc.Progress(console=Console(file=out, width=200))
    compiled = torch.compile(
        model, backend="fxc", options={"passes": "dce,quantize{bits=8}", "instruments": [progress, timing]}
    )
    with torch.no_grad():
        compiled(x)
    passes = [(name, summary) for kind, name, _, summary in timing.records if kind == "pass"]
    assert [name for name, _ in passes] == ["dce", "quantize", "dce", "quantize"]  # one pipeline per graph
    assert [summary for name, summary in passes if name == "quantize"] == ["quantized 1 layers (w8, rtn)"] * 2
    assert out.getvalue().count("pass quantize: quantized 1 layers") == 2


class PassCounter(fxc.Instrument):
    def __init__(self):
        self.passes = []

    def before_pass(self, pass_, gm):
        self.passes.append(pass_.name)


def compile_counted(model, passes="prune{method=wanda,sparsity=0.5}", calibration=None, graphs=None):
    """torch.compile with a fresh counter: new options, so dynamo hands the graph to the backend again."""
    counter = PassCounter()
    options = {"passes": passes, "instruments": [counter], "on_compile": (graphs if graphs is not None else []).append}
    if calibration is not None:
        options["calibration"] = calibration
    return torch.compile(model, backend="fxc", options=options), counter


def test_compiling_the_same_graph_and_weights_again_runs_no_pass():
    model, (x,) = mlp()
    calibration = [torch.randn(4, 16) for _ in range(2)]
    graphs = []
    first, first_count = compile_counted(model, calibration=calibration, graphs=graphs)
    second, second_count = compile_counted(model, calibration=calibration, graphs=graphs)
    with torch.no_grad():
        expected = first(x)
        torch.testing.assert_close(second(x), expected, rtol=0, atol=0)
    assert first_count.passes == ["prune"] and second_count.passes == []
    assert len(graphs) == 2 and graphs[0] is graphs[1]  # the backend ran twice; the second got the first's module
    torch._dynamo.reset()  # dynamo forgets its graphs; fxc still holds the compiled one
    again, again_count = compile_counted(model, calibration=calibration)
    with torch.no_grad():
        torch.testing.assert_close(again(x), expected, rtol=0, atol=0)
    assert again_count.passes == []


class Tagged(nn.Module):
    """A Python attribute read in forward: dynamo guards on its value, the graph does not depend on it."""

    def __init__(self):
        super().__init__()
        self.fc, self.tag = nn.Linear(16, 8), "a"

    def forward(self, x):
        if self.tag == "a":
            return self.fc(x)
        return self.fc(x)


def test_guard_failure_recompile_reuses_the_compiled_graph():
    model, x = Tagged().eval(), torch.randn(4, 16)
    graphs = []
    compiled, counter = compile_counted(model, passes="quantize{bits=8}", graphs=graphs)
    with torch.no_grad():
        expected = compiled(x)
        model.tag = "b"  # the guard on self.tag fails: dynamo traces again and calls the backend again
        torch.testing.assert_close(compiled(x), expected, rtol=0, atol=0)
    assert len(graphs) == 2 and graphs[0] is graphs[1]
    assert counter.passes == ["quantize"]


def test_changed_weights_calibration_or_passes_run_the_passes_again():
    model, (x,) = mlp()
    calibration = [torch.randn(4, 16) for _ in range(2)]
    first, _ = compile_counted(model, calibration=calibration)
    with torch.no_grad():
        before = first(x)
        model.layers[0].weight.data[0] += 1.0  # through .data: the version counter does not move
    changed, count = compile_counted(model, calibration=calibration)
    reference = fxc.compile(model, "prune{method=wanda,sparsity=0.5}", example_inputs=(x,), calibration=calibration)
    with torch.no_grad():
        after = changed(x)
    assert count.passes == ["prune"]
    torch.testing.assert_close(after, reference(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after, before)

    def passes_run(compiled_and_counter) -> list:
        compiled, counter = compiled_and_counter
        with torch.no_grad():
            compiled(x)
        return counter.passes

    with torch.no_grad():
        calibration[0].mul_(3.0)  # the same tensors with other values
    assert passes_run(compile_counted(model, calibration=calibration)) == ["prune"]
    assert passes_run(compile_counted(model, calibration=calibration)) == []  # the new values are now cached
    assert passes_run(compile_counted(model, "prune{method=wanda,sparsity=0.25}", calibration)) == ["prune"]
    twin = mlp()[0]  # same architecture and seed: equal values in other tensors (another model: its own slot)
    assert passes_run(compile_counted(twin, calibration=calibration)) == ["prune"]


def test_cache_lets_go_of_a_model_that_is_gone():
    model, (x,) = mlp()
    compiled, _ = compile_counted(model, passes="quantize{bits=8}")
    with torch.no_grad():
        compiled(x)
    assert dynamo_cache.size() == 1
    del model, compiled
    torch._dynamo.reset()
    gc.collect()
    assert dynamo_cache.size() == 0
