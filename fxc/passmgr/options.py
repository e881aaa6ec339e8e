"""Declared options: the fields of pass, analysis and backend dataclasses, with one line of help each.

    @dataclass(frozen=True)
    class Prune(Pass):
        name = "prune"
        sparsity: float = option(0.5, "fraction of weights set to zero", low=0.0, high=1.0, high_open=True)
        method: str = option("magnitude", "how weights are scored", choices=("magnitude", "wanda"))

`validate_options(obj)` (called from each base class's __post_init__) checks types, choices and
ranges and raises OptionError naming the owner, the option and what it accepts. Option names are
snake_case in Python and kebab-case in pipeline text (`group_size` <-> `group-size`).

No bad value slips through: NaN, inf and -inf are refused in every option, bounded or not, at the
top level or inside a tuple (`value < low` is False for NaN, so a range alone would let it pass);
the message names the fix ("smooth-quant: option 'alpha' is nan; give a finite number in [0, 1]").
The items of a `tuple[T, ...]` option are checked against T as the option itself is (ints read as
floats, nothing else converted), and an int too large for a float option is refused, not an
OverflowError. Values in messages are cut to a readable length.
Reads the object it checks; writes only coerced values back onto it (int -> float, list -> tuple).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
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
    hints = _type_hints(type(obj))
    for f in declared(obj):
        value = getattr(obj, f.name)
        expected = hints.get(f.name, Any)
        coerced = _coerce_type(owner, f, value, expected)
        if coerced is not value:
            object.__setattr__(obj, f.name, coerced)
            value = coerced
        if value is None:
            continue
        _check_finite(owner, f, value)
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


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """typing.get_type_hints, once per class (it evaluates every annotation string: most of a check's time)."""
    return typing.get_type_hints(cls)


def _check_finite(owner: str, f: dataclasses.Field, value: Any) -> None:
    """NaN and +-inf are refused wherever they sit in an option's value (any declared type)."""
    name = to_text_name(f.name)
    if _non_finite(value):
        raise OptionError(f"{owner}: option '{name}' is {_format(value)}; give a finite number{_finite_range(f)}")
    stack, seen = [value], set()
    while stack:  # iterative, each container once: a deep or self-containing value is walked all the same
        item = stack.pop()
        if _non_finite(item):
            raise OptionError(f"{owner}: option '{name}' holds {_format(item)}; give finite numbers only")
        if isinstance(item, (tuple, list, set, frozenset, dict)) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)


def _non_finite(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, numbers.Integral)
        and not math.isfinite(value)
    )


def _finite_range(f: dataclasses.Field) -> str:
    """' in [0, 1]', ' > 0', '' ...: the finite numbers an option accepts, for the fix of a message."""
    m = f.metadata
    lo, hi = m.get("low"), m.get("high")
    if lo is not None and hi is not None:
        return " " + describe_range(f)
    if lo is not None:
        return f" {'>' if m.get('low_open') else '>='} {lo}"
    if hi is not None:
        return f" {'<' if m.get('high_open') else '<='} {hi}"
    return ""


def _coerce_type(owner: str, f: dataclasses.Field, value: Any, expected: Any, where: str = "") -> Any:
    """Accept ints for floats and lists for tuples; reject anything else of the wrong type. The items
    of a homogeneous tuple option (`tuple[str, ...]`) are checked the same way; `where` names the item."""
    allowed = allowed_types(expected)
    label = f"option '{to_text_name(f.name)}'{where}"
    if (
        not allowed
        or isinstance(value, tuple(allowed))
        and not (isinstance(value, bool) and bool not in allowed)
    ):
        return _coerce_items(owner, f, value, expected, where)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise OptionError(
                f"{owner}: {label} is {_format(value)}, too large for a float; give a finite number"
                f"{_finite_range(f) if not where else ''}"
            ) from None
    if tuple in allowed and isinstance(value, list):
        return _coerce_items(owner, f, tuple(value), expected, where)
    raise OptionError(f"{owner}: {label} must be {_type_name(expected)}, got {type(value).__name__} {_format(value)}")


def _coerce_items(owner: str, f: dataclasses.Field, value: Any, expected: Any, where: str) -> Any:
    item_type = _item_type(expected) if isinstance(value, tuple) else None
    if item_type is None:
        return value
    items = tuple(
        _coerce_type(owner, f, item, item_type, f"{where} item {i}") for i, item in enumerate(value)
    )
    return value if all(a is b for a, b in zip(items, value, strict=True)) else items


def _item_type(expected: Any) -> Any:
    """T of an option annotated `tuple[T, ...]` (alone or in a union with None); None if there is none."""
    candidates = typing.get_args(expected) if typing.get_origin(expected) in (typing.Union, types.UnionType) else (
        expected,
    )
    for candidate in candidates:
        if typing.get_origin(candidate) is tuple:
            args = typing.get_args(candidate)
            if len(args) == 2 and args[1] is Ellipsis:
                return args[0]
    return None


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


def _format(value: Any, limit: int = 80) -> str:
    """A value for a message: bools as in pipeline text, long values cut (an int of 10**5000 has no str())."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"an integer of {value.bit_length()} bits"
    text = str(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"
