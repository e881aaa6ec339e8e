"""Pipeline text: parses to pass objects, prints back identically, and errors point at the bad token."""

from dataclasses import dataclass

import pytest

import fxc
from fxc.passmgr import registry
from fxc.passmgr.options import option
from fxc.passmgr.passbase import Pass, PassResult


@dataclass(frozen=True)
class Knobs(Pass):
    """A pass with one option of each kind, for parser tests."""

    name = "knobs"
    ratio: float = option(0.5, "a fraction", low=0.0, high=1.0, high_open=True)
    bits: int = option(8, "bit width", choices=(4, 8))
    method: str = option("rtn", "how", choices=("rtn", "gptq"))
    symmetric: bool = option(True, "symmetric or not")
    group_size: int | None = option(None, "group size; none = per channel", low=1)
    skip: tuple[str, ...] = option(("lm_head",), "patterns to skip")

    def run(self, gm, am):
        return PassResult(False)


@pytest.fixture(autouse=True)
def knobs_registered():
    registry.register("fxc.passes", "knobs", Knobs)
    yield
    registry.unregister("fxc.passes", "knobs")


@pytest.mark.parametrize(
    "text",
    [
        "dce,fold-bn",
        "dce",
        "knobs{ratio=0.25,bits=4,method=gptq,symmetric=false,group-size=64,skip=[lm_head,*embed*]}",
        "knobs{ratio=0.5}",  # an explicit default stays
        "knobs{group-size=none},dce",
        'knobs{skip=["a b",c]}',
    ],
)
def test_text_prints_back_identically(text):
    assert str(fxc.Pipeline.parse(text)) == text


def test_parse_gives_typed_objects_equal_to_python_construction():
    pipeline = fxc.Pipeline.parse("knobs{ratio=0.25,bits=4,group-size=64,skip=[x,y]},dce")
    assert pipeline.passes[0] == Knobs(ratio=0.25, bits=4, group_size=64, skip=("x", "y"))
    assert isinstance(pipeline.passes[1], fxc.passes.DeadCodeElimination)


def test_objects_print_their_non_default_options():
    assert str(fxc.Pipeline.of([Knobs(bits=4), fxc.passes.FoldBN(), "dce"])) == "knobs{bits=4},fold-bn,dce"


def test_whitespace_is_allowed():
    assert str(fxc.Pipeline.parse(" dce , knobs{ bits = 4 } ")) == "dce,knobs{bits=4}"


def test_unknown_pass_lists_close_matches_and_points_at_it():
    with pytest.raises(fxc.PipelineSyntaxError) as error:
        fxc.Pipeline.parse("dce,fold-nb")
    text = str(error.value)
    assert "unknown pass 'fold-nb'" in text and "did you mean fold-bn" in text
    assert text.splitlines()[-1] == "      ^"  # under the 'f' of fold-nb (2 spaces of indent + "dce,")


@pytest.mark.parametrize(
    "text,message,column",
    [
        ("knobs{ratio=1.5}", "option 'ratio' must be in [0.0, 1.0), got 1.5", 12),
        ("knobs{bits=3}", "option 'bits' must be one of 4, 8, got 3", 11),
        ("knobs{bits=four}", "'four' is not int", 11),
        ("knobs{ratioo=0.5}", "knobs has no option 'ratioo'", 6),
        ("knobs{ratio 0.5}", "expected '=', found '0.5'", 12),
        ("knobs{ratio=0.5", "expected ',' or '}', found end of text", 15),
        ("dce,,dce", "expected a pass name, found ','", 4),
        ("knobs{bits=4,bits=8}", "option 'bits' given twice", 13),
    ],
)
def test_errors_name_the_problem_and_point_at_the_token(text, message, column):
    with pytest.raises(fxc.PipelineSyntaxError) as error:
        fxc.Pipeline.parse(text)
    assert message in str(error.value)
    assert error.value.position == column


def test_bad_option_in_python_names_option_and_range():
    with pytest.raises(fxc.OptionError, match=r"knobs: option 'ratio' must be in \[0.0, 1.0\), got -0.1"):
        Knobs(ratio=-0.1)
    with pytest.raises(fxc.OptionError, match="option 'method' must be one of rtn, gptq"):
        Knobs(method="awq")
    with pytest.raises(fxc.OptionError, match="option 'bits' must be int"):
        Knobs(bits="8")


def test_help_lists_options():
    text = Knobs.help()
    assert "ratio=0.5" in text and "a fraction" in text and "group-size" in text


@pytest.mark.parametrize(
    "option,value",
    [("symmetric", False), ("group_size", None), ("group_size", 64), ("ratio", 0.25), ("method", "gptq"),
     ("skip", ("x", "y z", "")), ("skip", ())],
)
def test_format_value_is_what_the_parser_reads_back(option, value):
    from fxc.passmgr.pipeline_text import format_value, parse_entries

    text = f"knobs{{{option.replace('_', '-')}={format_value(value)}}}"
    [(obj, explicit, is_analysis)] = parse_entries(text)
    assert getattr(obj, option) == value and explicit == (option,) and not is_analysis
    assert fxc.passmgr.pipeline.format_value is format_value  # still importable from pipeline.py


def test_parse_entries_marks_analyses():
    from fxc.passmgr.pipeline_text import parse_entries

    (first, _, first_is_analysis), (second, explicit, second_is_analysis) = parse_entries("knobs,act-stats")
    assert isinstance(first, Knobs) and not first_is_analysis
    assert isinstance(second, fxc.Analysis) and second_is_analysis and explicit == ()
    assert str(fxc.Pipeline.parse("knobs,act-stats")) == "knobs,act-stats"
