"""Fuzzing the pipeline text parser (fxc/passmgr/pipeline_text.py) with Hypothesis: whatever the text,
parsing it either gives pass objects or raises an FxcError subclass (PipelineSyntaxError, OptionError,
UnknownNameError); never a raw Python error (RecursionError, ValueError, OverflowError, ...).

Two kinds of input: arbitrary text (any unicode, NUL bytes, the grammar's punctuation, unterminated
quotes and braces), and text built from the real registered pass / analysis names and their option
names with random values (lists nested thousands deep, integers of thousands of digits, nan / inf,
quoted strings, lists). What parses must print back to text that parses to the same objects, and
hold no NaN or infinite number. Reads the registries; writes nothing (Hypothesis' example database
goes to .hypothesis/, which git ignores).
"""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxc
from fxc.errors import FxcError
from fxc.passmgr import registry
from fxc.passmgr.options import declared, to_text_name
from fxc.passmgr.pipeline_text import parse_entries

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ENTRIES = {
    name: [to_text_name(f.name) for f in declared(registry.lookup(group, name))]
    for group in ("fxc.passes", "fxc.analyses")
    for name in registry.names(group)
}
CHOICES = sorted({
    str(c) for group in ("fxc.passes", "fxc.analyses") for name in registry.names(group)
    for f in declared(registry.lookup(group, name)) for c in (f.metadata.get("choices") or ()) if c is not None
})
WORDS = [
    "none", "true", "false", "nan", "NaN", "-nan", "inf", "-inf", "+inf", "Infinity", "1e999", "-1e999",
    "1e-999", "0", "-0", "0.5", "1", "2", "4", "8", "64", "1_000", "0x10", "2:4", "4:8", "0:4", "1:256", "w4",
    "w4g128", "2:4+w8", "r0.5+w8", "s0.5", "keep", "lm_head", "*embed*", "١٢", "\x00", "é", "∞", "(", "((((",
]


def _parses_or_fxc_error(text: str) -> list | None:
    """parse_entries(text), or None when it raised an FxcError; any other exception fails the test."""
    try:
        return parse_entries(text)
    except FxcError:
        return None
    except Exception as error:  # noqa: BLE001 - the point: name the raw error and the text that gave it
        pytest.fail(f"{type(error).__name__} escaped the parser for {text[:300]!r}: {str(error)[:300]}")


def _numbers(value):
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, float):
        yield value


def _check_parsed(text: str) -> None:
    entries = _parses_or_fxc_error(text)
    if entries is None:
        return
    for obj, _, _ in entries:
        for key, value in obj.options().items():
            assert all(math.isfinite(x) for x in _numbers(value)), f"{obj.name} option {key}={value!r} from {text!r}"
    pipeline = fxc.Pipeline.parse(text)
    again = fxc.Pipeline.parse(str(pipeline))
    assert again.passes == pipeline.passes, f"{text!r} printed as {str(pipeline)!r}, which parses differently"


# -- values -----------------------------------------------------------------------------------------------

def _nested(depth: int, inner: str, close: bool) -> str:
    return "[" * depth + inner + ("]" * depth if close else "")


scalar = st.one_of(
    st.sampled_from(WORDS + CHOICES),
    st.integers().map(str),
    st.integers(300, 6000).map(lambda n: "9" * n),  # past float range and past int()'s 4300-digit limit
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12).map(lambda s: '"' + s.replace('"', "") + '"'),
    st.text(alphabet=st.characters(blacklist_characters='"{}[]=,', blacklist_categories=("Zs", "Cc")),
            min_size=1, max_size=12),
)
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
                     max_leaves=12)
deep = st.builds(_nested, st.integers(0, 4000), scalar, st.booleans())  # far past Python's recursion limit


def _mostly(usual: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """`usual` three times in four, else `rare`."""
    return st.integers(0, 3).flatmap(lambda i: rare if i == 0 else usual)


@st.composite
def entry(draw) -> str:
    name = draw(st.sampled_from(sorted(ENTRIES)))
    if not ENTRIES[name] or draw(st.integers(0, 4)) == 0:
        return name
    key = _mostly(st.sampled_from(ENTRIES[name]), st.sampled_from(["no-such-option", "_private", "name", ""]))
    items = draw(st.lists(st.tuples(key, _mostly(value, deep)), min_size=1, max_size=3))
    return name + "{" + ",".join(f"{k}={v}" for k, v in items) + "}"


structured = st.lists(entry(), min_size=1, max_size=3).map(",".join)
punctuation = st.lists(
    st.sampled_from(list('{}[]=,"() \t\n\x00') + ["dce", "prune", "smooth-quant", "alpha", "layers", "nan", "0.5"]),
    max_size=60,
).map("".join)


# -- tests ------------------------------------------------------------------------------------------------

@SETTINGS
@given(text=st.text(max_size=200))
def test_arbitrary_text_only_raises_fxc_errors(text):
    _check_parsed(text)


@SETTINGS
@given(text=punctuation)
def test_grammar_punctuation_soup_only_raises_fxc_errors(text):
    _check_parsed(text)


@SETTINGS
@given(text=structured)
def test_real_names_with_random_values_only_raise_fxc_errors(text):
    _check_parsed(text)


@SETTINGS
@given(depth=st.integers(33, 6000), opener=st.sampled_from(["[", "(", "{", "[1,"]),
       name=st.sampled_from(sorted(ENTRIES)))
def test_deep_nesting_is_a_syntax_error(depth, opener, name):
    option = (ENTRIES[name] or ["x"])[0]
    text = f"{name}{{{option}={opener * depth}1{']' * depth}}}"
    with pytest.raises(FxcError):
        parse_entries(text)


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_nesting_past_the_limit_points_at_the_bracket_that_passes_it(depth):
    text = "prune{layers=" + "[" * depth + "]" * depth + "}"
    with pytest.raises(fxc.PipelineSyntaxError, match="nest") as error:
        parse_entries(text)
    assert error.value.position == len("prune{layers=") + 32  # the 33rd '['


def test_nesting_within_the_limit_still_parses_to_a_type_error_not_a_crash():
    with pytest.raises(fxc.PipelineSyntaxError, match="list"):
        parse_entries("prune{layers=" + "[" * 32 + "a" + "]" * 32 + "}")


@pytest.mark.parametrize(
    "text",
    ['prune{layers=["a]}', "prune{", "prune{sparsity=", "prune{sparsity=0.5", "prune{layers=[a,", "\x00",
     "dce,\x00", "d\x00ce", "prune{spars\x00ity=1}", "\ud800", "}", "]", "=", '"', "dce{}",
     "prune{sparsity=0.5}}", "prune{{sparsity=0.5}", "prune{sparsity=[0.5]}", "prune{pattern=" + "1" * 5000 + ":4}",
     "prune{block-size=" + "9" * 5000 + "}", "auto{ratio=" + "9" * 400 + "}", "prune{sparsity=" + "9" * 5000 + "}"],
)
def test_malformed_text_gives_fxc_errors(text):
    with pytest.raises(FxcError):
        parse_entries(text)


@pytest.mark.parametrize("text", [" dce ," * 50_000 + "dce", "prune{layers=[" + "a," * 100_000 + "a]}",
                                  "\u3000" * 200_000 + "dce", "x" * 1_000_000])
def test_long_text_parses_in_linear_time(text):
    started = time.perf_counter()
    _parses_or_fxc_error(text)
    assert time.perf_counter() - started < 5.0
