"""No NaN or infinity slips into an option (fxc/passmgr/options.py, fxc/passmgr/pipeline_text.py).

For every registered pass, analysis and backend (read from the registries, so a new one is covered
when it registers) and every option whose declared type admits a float, nan, inf and -inf are refused
with an OptionError that names the owner, the option, the value and the fix: built in Python (the
constructor, dataclasses.replace, AnalysisManager.get(name, **options), make_backend, the CLI's
--backend-option), written as pipeline text (a PipelineSyntaxError carrying that message and pointing at
the value), and inside list options. Every other option refuses them too (as the wrong type).
smooth-quant{alpha=nan} fails before fxc.compile traces the model, so no weight is ever touched.
Reads the registries; builds objects and one tiny model; writes nothing.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxc
from fxc.api.backend import make_backend
from fxc.errors import OptionError, PipelineSyntaxError
from fxc.passmgr import registry
from fxc.passmgr.options import allowed_types, declared, option, to_text_name
from fxc.passmgr.passbase import Pass, PassResult

BAD = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
SPELLINGS = {"nan": ["nan", "NaN", "NAN"], "inf": ["inf", "Infinity", "+inf"], "-inf": ["-inf", "-Infinity", "-INF"]}


def _admits_float(expected: Any) -> bool:
    allowed = allowed_types(expected)
    return not allowed or float in allowed


def _options(groups: tuple[str, ...], floats: bool | None):
    """(group, name, class, field name, annotation) of every declared option in `groups`; floats=True: only
    options whose type admits a float, False: only the others, None: all. Classes behind several names
    (the `budget` target is the `auto` pass) count once."""
    seen, out = set(), []
    for group in groups:
        for name in registry.names(group):
            cls = registry.lookup(group, name)
            if cls in seen or not dataclasses.is_dataclass(cls):
                continue
            seen.add(cls)
            hints = typing.get_type_hints(cls)
            for f in declared(cls):
                if floats is None or _admits_float(hints.get(f.name, Any)) == floats:
                    out.append(pytest.param(group, name, cls, f.name, id=f"{name}.{to_text_name(f.name)}"))
    return out


PASSES = ("fxc.passes", "fxc.analyses", "fxc.targets")
FLOAT_OPTIONS = _options(PASSES, floats=True)
OTHER_OPTIONS = _options(PASSES, floats=False)
BACKEND_FLOAT_OPTIONS = _options(("fxc.backends",), floats=True)
BACKEND_OTHER_OPTIONS = _options(("fxc.backends",), floats=False)


def test_the_registries_have_float_options_to_check():
    """The parametrized lists below are not empty (a registry that failed to load would pass them all)."""
    names = {p.id for p in FLOAT_OPTIONS + BACKEND_FLOAT_OPTIONS}
    assert {"smooth-quant.alpha", "prune.sparsity", "low-rank.ratio", "low-rank.energy", "mixed-precision.avg-bits",
            "auto.ratio", "numpy.sparse-crossover", "triton.block-sparse-min-zero"} <= names


def _refused(error: BaseException, name: str, option_name: str, shown: str) -> None:
    text = str(error)
    assert f"{name}: option '{to_text_name(option_name)}' is {shown}; give a finite number" in text, text


# -- passes and analyses ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shown", BAD)
@pytest.mark.parametrize("group,name,cls,field", FLOAT_OPTIONS)
def test_python_constructor_refuses_non_finite(group, name, cls, field, shown):
    with pytest.raises(OptionError) as error:
        cls(**{field: BAD[shown]})
    _refused(error.value, cls.name, field, shown)


@pytest.mark.parametrize("shown", BAD)
@pytest.mark.parametrize("group,name,cls,field", FLOAT_OPTIONS)
def test_dataclasses_replace_refuses_non_finite(group, name, cls, field, shown):
    """replace() on a valid object (the way code derives one pass from another) runs the same check."""
    valid = _a_valid(cls)
    with pytest.raises(OptionError) as error:
        dataclasses.replace(valid, **{field: BAD[shown]})
    _refused(error.value, cls.name, field, shown)


@pytest.mark.parametrize("shown", BAD)
@pytest.mark.parametrize("group,name,cls,field", FLOAT_OPTIONS)
def test_pipeline_text_refuses_non_finite_and_points_at_the_value(group, name, cls, field, shown):
    for spelling in SPELLINGS[shown]:
        text = f"dce,{cls.name}{{{to_text_name(field)}={spelling}}}"
        with pytest.raises(PipelineSyntaxError) as error:
            fxc.Pipeline.parse(text)
        _refused(error.value, cls.name, field, shown)
        assert error.value.position == text.index("=") + 1


@pytest.mark.parametrize("group,name,cls,field", FLOAT_OPTIONS)
def test_pipeline_text_past_float_range_is_not_read_as_inf(group, name, cls, field):
    for number in ("1e999", "-1e999", "9" * 400):
        with pytest.raises(PipelineSyntaxError, match="past float range") as error:
            fxc.Pipeline.parse(f"{cls.name}{{{to_text_name(field)}={number}}}")
        assert error.value.position == len(cls.name) + len(to_text_name(field)) + 2


@pytest.mark.parametrize("group,name,cls,field", FLOAT_OPTIONS)
def test_python_int_past_float_range_is_an_option_error(group, name, cls, field):
    with pytest.raises(OptionError, match=f"option '{to_text_name(field)}' is an integer of .* too large for a float"):
        cls(**{field: 10**400})


@pytest.mark.parametrize("shown", BAD)
@pytest.mark.parametrize("group,name,cls,field", OTHER_OPTIONS)
def test_options_that_take_no_float_refuse_non_finite_too(group, name, cls, field, shown):
    """Every other option refuses them as the wrong type, and a list option refuses them as an item."""
    with pytest.raises(OptionError, match=f"option '{to_text_name(field)}'"):
        cls(**{field: BAD[shown]})
    if tuple in allowed_types(typing.get_type_hints(cls)[field]):
        with pytest.raises(OptionError, match=f"option '{to_text_name(field)}' item 1"):
            cls(**{field: ("w8", BAD[shown])})


@pytest.mark.parametrize("shown", BAD)
@pytest.mark.parametrize("group,name,cls,field", [p for p in FLOAT_OPTIONS if p.values[0] == "fxc.analyses"])
def test_analysis_manager_get_by_name_refuses_non_finite(group, name, cls, field, shown):
    am = fxc.AnalysisManager(fxc.trace(nn.Linear(2, 2), (torch.randn(1, 2),)))
    with pytest.raises(OptionError) as error:
        am.get(name, **{field: BAD[shown]})
    _refused(error.value, name, field, shown)


def test_budget_target_cannot_carry_inf_into_auto():
    """fxc.Budget refuses NaN and inf itself; the pass that carries a budget out refuses them too when
    given directly, before anything is traced."""
    for value in (math.nan, math.inf):
        for field in ("ratio", "latency", "bytes"):
            with pytest.raises(OptionError, match="positive finite number"):
                fxc.Budget(**{field: value})
    carry_out = registry.lookup("fxc.targets", fxc.Budget.name)
    for options in ({"ratio": math.inf}, {"latency": math.inf}):
        with pytest.raises(OptionError, match="is inf; give a finite number"):
            carry_out(**options)


# -- list options and options of any type (a pass registered for the test) ------------------------------------

@dataclass(frozen=True)
class Lists(Pass):
    """A pass with a list of floats, an optional float and an untyped option."""

    name = "lists"
    weights: tuple[float, ...] = option((1.0,), "one weight per layer")
    scale: float | None = option(None, "an optional scale", low=0, low_open=True)
    anything: Any = option(None, "any value")

    def run(self, gm, am):
        return PassResult(False)


@pytest.fixture
def lists_registered():
    registry.register("fxc.passes", "lists", Lists)
    yield
    registry.unregister("fxc.passes", "lists")


@pytest.mark.parametrize("shown", BAD)
def test_non_finite_inside_list_options_is_refused(lists_registered, shown):
    value = BAD[shown]
    for kwargs in ({"weights": (0.5, value)}, {"weights": [value]}, {"anything": (1, (2, [value]))},
                   {"anything": {"k": value}}, {"anything": value}):
        with pytest.raises(OptionError, match=f"option '(weights|anything)' (is|holds) {shown}; give (a )?finite"):
            Lists(**kwargs)
    for spelling in SPELLINGS[shown]:
        with pytest.raises(PipelineSyntaxError, match=f"option 'weights' holds {shown}"):
            fxc.Pipeline.parse(f"lists{{weights=[0.5,{spelling}]}}")
        # an untyped option reads words as text, so the spelling stays a string there
        assert fxc.Pipeline.parse(f"lists{{anything=[[1,{spelling}]]}}").passes[0].anything == (("1", spelling),)
    with pytest.raises(PipelineSyntaxError, match=f"option 'scale' is {shown}; give a finite number > 0"):
        fxc.Pipeline.parse(f"lists{{scale={SPELLINGS[shown][0]}}}")


def test_finite_list_options_still_parse_and_print_back(lists_registered):
    pipeline = fxc.Pipeline.parse("lists{weights=[0.5,2,1e-30],scale=3,anything=[nan-is-text-here]}")
    assert pipeline.passes[0] == Lists(weights=(0.5, 2.0, 1e-30), scale=3.0, anything=("nan-is-text-here",))
    assert fxc.Pipeline.parse(str(pipeline)).passes == pipeline.passes
    assert Lists(weights=[1, 2]).weights == (1.0, 2.0)  # ints read as floats inside the list too
    deep: Any = (0.0,)
    for _ in range(5000):  # deeper than Python's recursion limit: the check walks it without recursing
        deep = (deep,)
    Lists(anything=deep)
    loop: list = [1.0]
    loop.append(loop)  # a value that contains itself is walked once
    Lists(anything=loop)


# -- backends ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shown", BAD)
@pytest.mark.parametrize("group,name,cls,field", BACKEND_FLOAT_OPTIONS)
def test_backend_float_options_refuse_non_finite(group, name, cls, field, shown):
    with pytest.raises(OptionError) as error:
        make_backend(name, {field: BAD[shown]})
    _refused(error.value, name, field, shown)
    with pytest.raises(OptionError):
        cls(**{field: BAD[shown]})


@pytest.mark.parametrize("shown", BAD)
@pytest.mark.parametrize("group,name,cls,field", BACKEND_OTHER_OPTIONS)
def test_backend_other_options_refuse_non_finite(group, name, cls, field, shown):
    with pytest.raises(OptionError, match=f"option '{to_text_name(field)}'"):
        make_backend(name, {field: BAD[shown]})


@pytest.mark.parametrize("group,name,cls,field", BACKEND_FLOAT_OPTIONS)
def test_cli_backend_option_refuses_non_finite(group, name, cls, field):
    """--backend-option KEY=nan reads nan as text, which the float option refuses as the wrong type."""
    from fxc.cli.main import parse_backend_options

    for spelling in ("nan", "inf", "-inf", "1e999"):
        with pytest.raises(OptionError, match=f"option '{to_text_name(field)}'"):
            make_backend(name, parse_backend_options([f"{to_text_name(field)}={spelling}"]))


# -- the regression of issue #19 ---------------------------------------------------------------------------

class NormMLP(nn.Module):
    """RMSNorm -> (gate, up) -> silu(gate)*up -> down: every linear has a producer smooth-quant folds into."""

    def __init__(self, dim=16, hidden=32):
        super().__init__()
        self.norm_weight = nn.Parameter(torch.ones(dim))
        self.gate, self.up, self.down = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        with torch.no_grad():
            self.norm_weight[3] = 40.0

    def forward(self, x):
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm_weight
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def test_smooth_quant_alpha_nan_fails_before_any_weight_changes(monkeypatch):
    model = NormMLP().eval()
    calibration = [torch.randn(2, 4, 16) for _ in range(2)]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    smoothed = fxc.compile(model, "smooth-quant{alpha=0.5}", calibration=calibration, backend="torch")
    assert not torch.equal(fxc.ir.get_tensor(smoothed.graph, "norm_weight"), weights["norm_weight"])  # alpha acts here

    import fxc.api.compiler as compiler

    def no_trace(*args, **kwargs):
        raise AssertionError("the model was traced: the bad option was not refused first")

    monkeypatch.setattr(compiler, "trace", no_trace)
    for passes in ("smooth-quant{alpha=nan}", "smooth-quant{alpha=nan},quantize{act-bits=8}"):
        with pytest.raises(PipelineSyntaxError, match=r"smooth-quant: option 'alpha' is nan; give a finite number "
                                                       r"in \[0, 1\]") as error:
            fxc.compile(model, passes, calibration=calibration, backend="torch")
        assert error.value.position == len("smooth-quant{alpha=")
    with pytest.raises(OptionError, match=r"smooth-quant: option 'alpha' is nan; give a finite number in \[0, 1\]"):
        fxc.compile(model, [fxc.passes.SmoothQuant(alpha=math.nan)], calibration=calibration)
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key


def _a_valid(cls):
    """An object of `cls` built from options that pass its own checks (one budget where it needs one)."""
    fields = {f.name for f in declared(cls)}
    for kwargs in ({}, {"ratio": 4.0}, {"avg_bits": 4.0}):
        if kwargs.keys() <= fields:
            try:
                return cls(**kwargs)
            except OptionError:
                continue
    raise AssertionError(f"no valid {cls.__name__} to start from")
