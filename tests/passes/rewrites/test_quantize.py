"""quantize: the rewrite emits the op set's quantized ops with packed weights, within each scheme's
error bound, follows a plan when one is written, and really shrinks the model."""

import pytest
import torch
from quant_helpers import dequantized_weight, quantized_nodes, run, traced
from tiny_models import attention_block, cnn, mlp

import fxc
from fxc import ir
from fxc.ir import meta, qformat
from fxc.ir.cost import model_bytes
from fxc.passes import Quantize
from fxc.passes.specs.scheme import Scheme

SCHEMES = [(8, None), (4, None), (8, 32), (4, 32), (4, 64), (4, 128)]


def _wide_mlp():
    from tiny_models import MLP

    model = MLP(sizes=(128, 256, 128)).eval()
    with torch.no_grad():  # uneven column ranges, as in trained models: groups then matter
        for layer in model.layers:
            layer.weight.mul_(torch.exp(0.5 * torch.randn(layer.weight.shape[1])))
    return model, (torch.randn(4, 128),)


@pytest.mark.parametrize("bits,group", SCHEMES)
@pytest.mark.parametrize("symmetric", [True, False])
def test_rtn_weights_within_half_a_step_and_bytes_match_the_scheme(bits, group, symmetric):
    model, example = _wide_mlp()
    gm, am = traced(model, example)
    before = model_bytes(gm)
    originals = {layer.fqn: ir.get_tensor(gm, layer.weight).clone() for layer in ir.weight_layers(gm)}
    sym = "true" if symmetric else "false"
    run(gm, am, f"quantize{{bits={bits},group-size={group or 'none'},symmetric={sym}}}")
    nodes = quantized_nodes(gm)
    assert [n.target for n in nodes] == [torch.ops.fxc.quantized_linear.default] * 2
    saved = 0
    for node in nodes:
        w = originals[meta.get(node, meta.LayerInfo).fqn]
        scale = ir.get_tensor(gm, node.args[2].target)
        gs = group or w.shape[1]
        step = scale.repeat_interleave(gs, 1)
        error = (dequantized_weight(gm, node) - w).abs()
        assert (error <= step / 2 + 1e-6).all()
        assert error.max() > 0  # it really quantized
        qweight = ir.get_tensor(gm, node.args[1].target)
        assert qweight.dtype == (torch.uint8 if bits == 4 else torch.int8)
        assert qweight.shape == (w.shape[0], w.shape[1] * bits // 8)
        assert meta.get(node, meta.Quantized) == meta.Quantized(bits, group, symmetric, None, "rtn")
        saved += w.numel() * 4 - Scheme(bits, group, symmetric).storage_bytes(*w.shape)
    assert model_bytes(gm) == before - saved
    assert not any(ir.weight_layers(gm))  # the dense weights are gone


def test_int4_weights_round_trip_through_the_packed_buffer():
    model, example = _wide_mlp()
    gm, am = traced(model, example)
    weight = ir.get_tensor(gm, "layers.0.weight").clone()
    run(gm, am, "quantize{bits=4,group-size=64}")
    node = quantized_nodes(gm)[0]
    packed = ir.get_tensor(gm, node.args[1].target)
    expected = qformat.quantize_rtn(weight, 4, 64)
    assert torch.equal(packed, expected.qweight)
    ints = qformat.unpack_int4(packed)
    assert ints.min() >= -8 and ints.max() <= 7
    assert torch.equal(qformat.pack_int4(ints), packed)


def test_quantized_model_output_is_close_and_error_grows_with_fewer_bits():
    model, example = _wide_mlp()
    reference = model(*example)
    errors = {}
    for text in ("quantize{bits=8}", "quantize{bits=4,group-size=32}", "quantize{bits=4}"):
        cm = fxc.compile(model, text, example_inputs=example, backend="torch")
        errors[text] = ((cm(*example) - reference).norm() / reference.norm()).item()
    assert errors["quantize{bits=8}"] < 0.02
    assert errors["quantize{bits=8}"] < errors["quantize{bits=4,group-size=32}"] < errors["quantize{bits=4}"] < 0.35


@pytest.mark.parametrize("method", ["rtn", "gptq,fit=layer"])
def test_w8a8_weight_scales_follow_one_rule_whatever_the_method(method):
    """The W8A8 weight rule lives in one place (qformat.weights_full_range): GPTQ's per-channel scales are
    max|w| / 127 like RTN's, not the weight-only max|w| / 127.5."""
    model, example = attention_block()
    gm, am = traced(model, example, [torch.randn(2, 5, 16) for _ in range(3)])
    dense, _ = traced(model, example)
    weights = {layer.fqn: ir.get_tensor(dense, layer.weight) for layer in ir.weight_layers(dense)}
    run(gm, am, f"quantize{{method={method},act-bits=8}}")
    nodes = quantized_nodes(gm)
    assert nodes and all(n.target == torch.ops.fxc.int8_linear.default for n in nodes)
    for node in nodes:
        amax = weights[meta.get(node, meta.LayerInfo).fqn].abs().amax(dim=1)
        torch.testing.assert_close(ir.get_tensor(gm, node.args[2].target).reshape(-1), amax / 127, rtol=1e-6, atol=0)


def test_w8a8_dynamic_and_static_scales():
    model, example = attention_block()
    calibration = [torch.randn(2, 5, 16) for _ in range(3)]
    gm, am = traced(model, example, calibration)
    stats = am.get("act-stats")
    expected_scale = {layer.fqn: float(stats[layer.node.name].absmax.max()) / 127.5 for layer in ir.weight_layers(gm)}
    run(gm, am, "quantize{act-bits=8,static=true}")
    nodes = quantized_nodes(gm)
    assert nodes and all(n.target == torch.ops.fxc.int8_linear.default for n in nodes)
    dense, _ = traced(model, example)
    weights = {layer.fqn: ir.get_tensor(dense, layer.weight) for layer in ir.weight_layers(dense)}
    for node in nodes:
        qweight = ir.get_tensor(gm, node.args[1].target)
        assert qweight.dtype == torch.int8 and int(qweight.abs().max()) == 127  # weights ±127 (activations -128..127)
        weight_scale = ir.get_tensor(gm, node.args[2].target).reshape(-1)
        amax = weights[meta.get(node, meta.LayerInfo).fqn].abs().amax(dim=1)
        torch.testing.assert_close(weight_scale, amax / 127, rtol=1e-6, atol=0)
        static_scale = ir.get_tensor(gm, node.args[4].target)
        assert static_scale.item() == pytest.approx(expected_scale[meta.get(node, meta.LayerInfo).fqn], rel=1e-6)
    dynamic = fxc.compile(model, "quantize{act-bits=8}", example_inputs=example, backend="torch")
    assert all(n.args[4] is None for n in quantized_nodes(dynamic.graph))
    reference = model(*example)
    for out in (gm(*example), dynamic(*example)):
        assert ((out - reference).norm() / reference.norm()).item() < 0.03


def test_conv_layers_quantized_too_and_depthwise_kept_grouped():
    model, example = cnn()
    cm = fxc.compile(model, "fold-bn,quantize{skip=[]}", example_inputs=example, backend="torch")
    targets = [n.target for n in quantized_nodes(cm.graph)]
    assert targets.count(torch.ops.fxc.quantized_conv2d.default) == 2
    assert targets.count(torch.ops.fxc.quantized_linear.default) == 1
    depthwise = [n for n in quantized_nodes(cm.graph) if n.target == torch.ops.fxc.quantized_conv2d.default][1]
    assert depthwise.args[6] == [8, 1, 3, 3] and depthwise.args[10] == 8
    reference = model(*example)
    assert ((cm(*example) - reference).norm() / reference.norm()).item() < 0.02


def test_plan_decides_each_layer_and_unplanned_layers_stay_dense():
    model, example = mlp()  # layers 16->32->32->8
    gm, am = traced(model, example)
    layers = ir.weight_layers(gm)
    meta.put(layers[0].node, meta.LayerPlan(bits=4, source="test"))
    meta.put(layers[1].node, meta.LayerPlan(bits=16, source="test"))
    run(gm, am, "quantize{bits=8}")  # the plan wins over bits=8; layers[2] has no plan
    nodes = quantized_nodes(gm)
    assert len(nodes) == 1 and meta.get(nodes[0], meta.Quantized).bits == 4
    assert meta.get(nodes[0], meta.LayerPlan).source == "test"
    assert len(ir.weight_layers(gm)) == 2


def test_layers_and_skip_patterns_choose_layers():
    model, example = mlp()
    gm, am = traced(model, example)
    run(gm, am, "quantize{layers=[layers.*],skip=[layers.1]}")
    assert sorted(meta.get(n, meta.LayerInfo).fqn for n in quantized_nodes(gm)) == ["layers.0", "layers.2"]


def test_pipeline_text_round_trips_and_pass_object_is_the_same():
    text = "quantize{method=gptq,bits=4,group-size=64,act-order=true}"
    assert str(fxc.Pipeline.parse(text)) == text
    assert fxc.Pipeline.parse(text).passes[0] == Quantize(method="gptq", bits=4, group_size=64, act_order=True)
