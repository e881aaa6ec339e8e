"""Frontends: every model family traces, runs like the original, and the three frontends agree."""

import pytest
import torch
from tiny_models import attention_block, call, cnn, first_tensor, mlp, tiny_bert, tiny_llama

import fxc
from fxc import ir
from fxc.frontend.dynamo import DynamoGraph
from fxc.frontend.export import export_canonical
from fxc.ir import meta

FAMILIES = {"mlp": mlp, "cnn": cnn, "attention": attention_block, "llama": tiny_llama, "bert": tiny_bert}


def signature(gm):
    """What makes two canonical graphs the same: op sequence and weight names."""
    ops = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    attrs = sorted(n.target for n in gm.graph.nodes if n.op == "get_attr")
    return ops, attrs


@pytest.mark.parametrize("family", FAMILIES)
def test_export_trace_matches_model(family):
    model, example = FAMILIES[family]()
    gm = fxc.trace(model, example)
    ir.verify(gm)
    assert not any(n.op == "call_module" for n in gm.graph.nodes)
    expected = first_tensor(call(model, example))
    torch.testing.assert_close(first_tensor(call(gm, example)), expected, rtol=1e-5, atol=1e-5)
    layers = ir.weight_layers(gm)
    assert layers and all(meta.get(layer.node, meta.LayerInfo) for layer in layers)


@pytest.mark.parametrize("family", ["mlp", "cnn", "attention"])
def test_three_frontends_agree(family):
    model, example = FAMILIES[family]()
    graphs = {frontend: fxc.trace(model, example, frontend=frontend) for frontend in fxc.frontend.trace.FRONTENDS}
    reference = signature(graphs["export"])
    for frontend, gm in graphs.items():
        assert signature(gm) == reference, frontend
        torch.testing.assert_close(call(gm, example), call(model, example))


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_dynamo_frontend_agrees_on_hugging_face(family):
    model, example = FAMILIES[family]()
    exported, dynamo = fxc.trace(model, example), fxc.trace(model, example, frontend="dynamo")
    assert signature(dynamo)[1] == signature(exported)[1]
    assert [t for t in signature(dynamo)[0] if "linear" in t] == [t for t in signature(exported)[0] if "linear" in t]
    torch.testing.assert_close(first_tensor(call(dynamo, example)), first_tensor(call(model, example)))


def test_dynamic_batch_and_sequence_length():
    model, example = tiny_llama()
    gm = fxc.trace(model, example)
    other = torch.randint(0, 64, (3, 7))
    torch.testing.assert_close(gm(other).logits, model(other).logits)


def test_trace_copies_weights_and_restores_mode():
    model, example = mlp()
    model.train()
    gm = fxc.trace(model, example)
    assert model.training
    ir.set_tensor(gm, "layers.0.weight", torch.zeros(32, 16))
    assert model.layers[0].weight.abs().sum() > 0


class DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor value
            return x * 2
        return x


def test_untraceable_model_names_frontend_line_and_alternative():
    with pytest.raises(fxc.TraceError) as error:
        fxc.trace(DataDependent(), (torch.randn(3),))
    text = str(error.value)
    assert "frontend 'export'" in text and "frontend='symbolic'" in text
    assert "x.sum() > 0" in text  # the failing line


def test_symbolic_failure_suggests_export():
    with pytest.raises(fxc.TraceError, match="frontend 'symbolic'.*\n.*frontend='export'"):
        fxc.trace(DataDependent(), (torch.randn(3),), frontend="symbolic")


def test_unknown_frontend_and_missing_inputs():
    model, example = mlp()
    with pytest.raises(fxc.TraceError, match="unknown frontend 'jit'"):
        fxc.trace(model, example, frontend="jit")
    with pytest.raises(fxc.TraceError, match="example_inputs"):
        fxc.trace(model, None)


@pytest.mark.parametrize("identity", [True, False])
def test_dynamo_graph_weights_mapped_back_to_module_paths(identity):
    model, example = cnn()
    seen = {}

    def backend(gm, inputs):
        seen["lifted"] = fxc.lift_dynamo_graph(gm, inputs, model if identity else None)
        return gm

    torch._dynamo.reset()
    torch.compile(model, backend=backend)(*example)
    torch._dynamo.reset()
    lifted = seen["lifted"]
    graph = DynamoGraph(
        export_canonical(lifted.gm, tuple(lifted.user_values), {}, "dynamo", True),
        lifted.user_inputs,
    )
    names = {n.target for n in graph.gm.graph.nodes if n.op == "get_attr"}
    assert {"conv1.weight", "bn1.running_mean", "fc.weight"} <= names
    assert len(graph.user_inputs) == 1
    torch.testing.assert_close(graph.gm(*example)[0], model(*example))
