"""Bad input to quantize / smooth-quant / mixed-precision: a clear error naming the option or layer,
and the model untouched."""

import pytest
import torch
from quant_helpers import assert_untouched, run, snapshot, traced
from tiny_models import mlp

import fxc
from fxc import ir
from fxc.errors import CalibrationError, FxcError, NodeError, OptionError, PipelineSyntaxError
from fxc.ir import meta
from fxc.passes import MixedPrecision, Quantize, SmoothQuant


@pytest.mark.parametrize(
    "kwargs,named",
    [
        ({"bits": 3}, "'bits'"),
        ({"bits": 4, "group_size": 48}, "'group-size'"),
        ({"method": "awq"}, "'method'"),
        ({"act_bits": 4}, "'act-bits'"),
        ({"act_bits": 8, "bits": 4}, "act-bits=8"),
        ({"act_bits": 8, "group_size": 64}, "act-bits=8"),
        ({"static": True}, "'static'"),
    ],
)
def test_unsupported_options_are_named(kwargs, named):
    with pytest.raises(OptionError, match=named):
        Quantize(**kwargs)


def test_pipeline_text_error_points_at_the_option():
    with pytest.raises(PipelineSyntaxError, match="'bits'") as info:
        fxc.Pipeline.parse("quantize{bits=2}")
    assert info.value.position == len("quantize{bits=")


def test_group_size_that_does_not_divide_a_layer_names_the_layer_and_leaves_the_model():
    model, example = mlp()  # first layer has 16 input columns
    gm, am = traced(model, example)
    before = snapshot(gm)
    with pytest.raises(NodeError, match=r"layers\.0 .*group size 32 does not divide its input dimension 16"):
        run(gm, am, "quantize{bits=4,group-size=32}")
    assert_untouched(gm, before)


def test_int4_layer_with_odd_input_dimension_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(9, 4)).eval()
    gm, am = traced(model, (torch.randn(2, 9),))
    before = snapshot(gm)
    with pytest.raises(NodeError, match="odd"):
        run(gm, am, "quantize{bits=4}")
    assert_untouched(gm, before)


@pytest.mark.parametrize("text", ["quantize{method=gptq}", "quantize{act-bits=8,static=true}"])
def test_missing_calibration_is_named_and_model_untouched(text):
    model, example = mlp()
    gm, am = traced(model, example)
    before = snapshot(gm)
    with pytest.raises(CalibrationError, match="quantize"):
        run(gm, am, text)
    assert_untouched(gm, before)


def test_gptq_failing_midway_restores_the_layers_it_already_changed():
    model, example = mlp()  # 16 -> 32 -> 32 -> 8
    calibration = [torch.randn(20, 16)]  # 20 tokens: full rank for 16 inputs, singular for 32
    gm, am = traced(model, example, calibration)
    before = snapshot(gm)
    with pytest.raises(FxcError, match=r"layers\.1 is not positive definite"):
        run(gm, am, "quantize{method=gptq,damp=0.0}")
    assert_untouched(gm, before)


def test_plan_asking_for_unsupported_bits_names_the_layer():
    model, example = mlp()
    gm, am = traced(model, example)
    meta.put(ir.weight_layers(gm)[1].node, meta.LayerPlan(bits=2, source="my-planner"))
    before = snapshot(gm)
    with pytest.raises(NodeError, match=r"layers\.1 \(my-planner\) asks for w2"):
        run(gm, am, "quantize")
    assert_untouched(gm, before)


def test_smooth_quant_alpha_out_of_range():
    with pytest.raises(OptionError, match="'alpha'"):
        SmoothQuant(alpha=1.5)


@pytest.mark.parametrize(
    "kwargs,named",
    [
        ({}, "exactly one budget"),
        ({"avg_bits": 4.0, "bytes": 100}, "exactly one budget"),
        ({"avg_bits": 0.0}, "'avg-bits'"),
        ({"avg_bits": 4.5, "candidates": ("w3",)}, "'candidates'"),
        ({"avg_bits": 4.5, "candidates": ()}, "'candidates'"),
    ],
)
def test_mixed_precision_bad_options(kwargs, named):
    with pytest.raises(OptionError, match=named):
        MixedPrecision(**kwargs)


@pytest.mark.parametrize("budget", ["avg-bits=3.9", "bytes=1000"])
def test_budget_below_the_smallest_reachable_size_names_option_and_size(budget):
    model, example = mlp()
    gm, am = traced(model, example, [torch.randn(8, 16)])
    before = snapshot(gm)
    option_name = budget.split("=")[0]
    with pytest.raises(OptionError, match=f"'{option_name}'.*below the smallest reachable"):
        run(gm, am, f"mixed-precision{{{budget},candidates=[w4,w8]}}")
    assert_untouched(gm, before)
