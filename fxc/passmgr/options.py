"""Declared options: the fields of pass, analysis and backend dataclasses, with one line of help each.

    @dataclass(frozen=True)
    class Prune(Pass):
        name = "prune"
        sparsity: float = option(0.5, "fraction of weights set to zero", low=0.0, high=1.0, high_open=True)
        method: str = option("magnitude", "how weights are scored", choices=("magnitude", "wanda"))

`validate_options(obj)` (called from each base class's __post_init__) checks types, choices and
ranges and raises OptionError naming the owner, the option and what it accepts. Option names are
snake_case in Python and kebab-case in pipeline text (`group_size` <-> `group-size`).
Reads and writes nothing else.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from fxc.errors import OptionError


def option(
    default: Any,
    help: str,
    *,
    choices: tuple | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """A dataclass field carrying its help line and the values it accepts."""
    meta = {
        "help": help,
        "choices": choices,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
    }
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable; use a tuple")
    return dataclasses.field(default=default, metadata=meta)


def to_text_name(field_name: str) -> str:
    return field_name.replace("_", "-")


def to_field_name(text_name: str) -> str:
    return text_name.replace("-", "_")


def declared(cls_or_obj) -> list[dataclasses.Field]:
    """The declared options of a pass/analysis/backend, in declaration order."""
    return [f for f in dataclasses.fields(cls_or_obj) if f.init and not f.name.startswith("_")]


def describe_range(f: dataclasses.Field) -> str:
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(_format(c) for c in m["choices"])
    lo, hi = m.get("low"), m.get("high")
    if lo is None and hi is None:
        return _type_name(f.type)
    left = "(" if m.get("low_open") else "["
    right = ")" if m.get("high_open") else "]"
    return f"in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"


def validate_options(obj) -> None:
    owner = getattr(obj, "name", type(obj).__name__)
    hints = typing.get_type_hints(type(obj))
    for f in declared(obj):
        value = getattr(obj, f.name)
        expected = hints.get(f.name, Any)
        coerced = _coerce_type(owner, f, value, expected)
        if coerced is not value:
            object.__setattr__(obj, f.name, coerced)
            value = coerced
        if value is None:
            continue
        m = f.metadata
        bad = False
        if m.get("choices") and value not in m["choices"]:
            bad = True
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = m.get("low"), m.get("high")
            if lo is not None and (value < lo or (m.get("low_open") and value == lo)):
                bad = True
            if hi is not None and (value > hi or (m.get("high_open") and value == hi)):
                bad = True
        if bad:
            raise OptionError(
                f"{owner}: option '{to_text_name(f.name)}' must be {describe_range(f)}, got {_format(value)}"
            )


def _coerce_type(owner: str, f: dataclasses.Field, value: Any, expected: Any) -> Any:
    """Accept ints for floats and lists for tuples; reject anything else of the wrong type."""
    allowed = allowed_types(expected)
    if (
        not allowed
        or isinstance(value, tuple(allowed))
        and not (isinstance(value, bool) and bool not in allowed)
    ):
        return value
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tuple in allowed and isinstance(value, list):
        return tuple(value)
    raise OptionError(
        f"{owner}: option '{to_text_name(f.name)}' must be {_type_name(expected)}, "
        f"got {type(value).__name__} {_format(value)}"
    )


def allowed_types(expected: Any) -> set[type]:
    """The Python types an option annotated `expected` accepts (empty: any value)."""
    if expected is Any:
        return set()
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        out: set[type] = set()
        for arg in typing.get_args(expected):
            sub = allowed_types(arg)
            if not sub:
                return set()
            out |= sub
        return out
    if expected is type(None):
        return {type(None)}
    if origin is not None:
        return {origin}
    return {expected} if isinstance(expected, type) else set()


def _type_name(expected: Any) -> str:
    names = sorted(t.__name__ for t in allowed_types(expected)) or ["any value"]
    return " or ".join("none" if n == "NoneType" else n for n in names)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
