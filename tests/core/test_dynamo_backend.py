"""torch.compile(model, backend="fxc") by name: passes run on each graph, weights arriving as
placeholders map back to module paths, a second batch size recompiles, graph breaks compile each
piece, calibration in the options reaches the passes (and its absence is a clear error)."""

import pytest
import torch
import torch.nn as nn
from tiny_models import cnn, first_tensor, mlp, tiny_llama

import fxc
from fxc import ops


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


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


def test_unknown_option_is_rejected():
    model, (x,) = mlp()
    compiled = torch.compile(model, backend="fxc", options={"pases": "dce"})
    with pytest.raises(Exception, match="unknown option"):
        compiled(x)
