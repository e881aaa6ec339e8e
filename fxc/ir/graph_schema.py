"""Checks on a graph read from a file, made before any of it is built or run (used by graph_json).

A saved graph is hostile until checked. These functions turn its JSON pieces into Python values
only after checking them against closed vocabularies, and raise FormatError naming the field and
the fix otherwise:

- `check_identifier`, `check_attr_path`: node names and placeholder names are Python identifiers;
  tensor names are dotted identifiers (or list indices) that name no attribute torch.nn.Module or GraphModule already
  has (so none can shadow `forward` or reach `__class__`), since torch.fx pastes them into code;
- `decode`: an encoded argument as a value: nodes already defined, bounded ints, finite floats (or
  the explicit {"float": "inf"} encoding), short strings, dtypes, devices, layouts and memory
  formats from closed lists, slices and containers no deeper than MAX_DEPTH;
- `check_call`: a call's arguments bound to the target's schema (a torch op's declared argument
  types, a Python function's arity and plain-number arguments) before the call is ever made.

Reads and writes nothing; holds no state.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.fx

from fxc.errors import FormatError

MAX_DEPTH = 32  # nesting of argument containers
MAX_ITEMS = 1 << 16  # items in one argument list
MAX_INT = (1 << 63) - 1  # int64: what a torch op can take
MAX_SMALL_INT = 1 << 31  # arguments of Python arithmetic on sizes
MAX_STR = 1024
NOT_FROM_FXC = "the file was not written by fxc.save or was edited after; do not load it, compile the model again"

DTYPES = {
    str(d).replace("torch.", ""): d
    for d in (
        torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int16,
        torch.int32, torch.int64, torch.bool, torch.complex64, torch.float8_e4m3fn, torch.float8_e5m2,
    )
}
LAYOUTS = {"strided": torch.strided}
MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "preserve_format": torch.preserve_format,
}
_DEVICE = re.compile(r"(cpu|cuda|meta)(:\d{1,3})?")
_RESERVED = set(dir(torch.fx.GraphModule))


def fail(where: str, problem: str, fix: str = NOT_FROM_FXC) -> FormatError:
    return FormatError(f"{where}: {problem}; {fix}")


def check_identifier(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.isidentifier() or keyword.iskeyword(value) or len(value) > 200:
        raise fail(where, f"{_short(value)} is not a Python identifier")
    return value


def check_attr_path(value: Any, where: str) -> str:
    """A dotted tensor name: identifiers that shadow no module attribute and no dunder."""
    if not isinstance(value, str) or len(value) > 1000:
        raise fail(where, f"{_short(value)} is not a tensor name")
    for part in value.split("."):
        if re.fullmatch(r"[0-9]{1,9}", part):  # a ModuleList index
            continue
        if not part.isidentifier() or keyword.iskeyword(part) or part.startswith("__") or part in _RESERVED:
            raise fail(where, f"tensor name {_short(value)} has the part {_short(part)}, not a plain attribute name")
    return value


def check_dtype(value: Any, where: str) -> torch.dtype:
    if not isinstance(value, str) or value not in DTYPES:
        raise fail(where, f"dtype {_short(value)} is not one of {', '.join(DTYPES)}")
    return DTYPES[value]


def check_int(value: Any, where: str, low: int = -MAX_INT, high: int = MAX_INT) -> int:
    if type(value) is not int or not low <= value <= high:
        raise fail(where, f"{_short(value)} is not an integer in [{low}, {high}]")
    return value


def decode(value: Any, env: dict[str, torch.fx.Node], where: str, depth: int = 0) -> Any:
    """An encoded argument (graph_json's encoding) as a checked Python value."""
    if depth > MAX_DEPTH:
        raise fail(where, f"arguments nest deeper than {MAX_DEPTH} levels")
    if value is None or type(value) is bool:
        return value
    if type(value) is int:
        return check_int(value, where)
    if type(value) is float:
        if not math.isfinite(value):
            raise fail(where, f"the number {value} is written as a bare JSON constant")
        return value
    if type(value) is str:
        if len(value) > MAX_STR:
            raise fail(where, f"a string argument of {len(value):,} characters (at most {MAX_STR})")
        return value
    if type(value) is not dict or len(value) != 1:
        raise fail(where, f"an argument of JSON type {type(value).__name__} is not an fxc argument encoding")
    ((kind, data),) = value.items()
    if kind == "node":
        if not isinstance(data, str) or data not in env:
            raise fail(where, f"refers to node {_short(data)}, which no earlier node defines")
        return env[data]
    if kind in ("list", "tuple", "slice", "dict"):
        if type(data) is not list or len(data) > MAX_ITEMS or (kind == "slice" and len(data) != 3):
            raise fail(where, f"a {kind} argument is not a list of at most {MAX_ITEMS} items (slices: 3)")
        if kind == "dict":
            if not all(type(p) is list and len(p) == 2 and type(p[0]) is str and len(p[0]) <= MAX_STR for p in data):
                raise fail(where, "a dict argument is not a list of [str key, value] pairs")
            return {k: decode(v, env, where, depth + 1) for k, v in data}
        items = [decode(v, env, where, depth + 1) for v in data]
        return items if kind == "list" else tuple(items) if kind == "tuple" else slice(*items)
    if kind == "float":
        if data not in ("inf", "-inf", "nan"):
            raise fail(where, f"float encoding {_short(data)} is not inf, -inf or nan")
        return float(data)
    if kind == "dtype":
        return check_dtype(data, where)
    if kind == "device":
        if not isinstance(data, str) or not _DEVICE.fullmatch(data):
            raise fail(where, f"device {_short(data)} is not cpu, cuda[:N] or meta")
        return torch.device(data)
    table = {"layout": LAYOUTS, "memory_format": MEMORY_FORMATS}.get(kind)
    if table is not None and isinstance(data, str) and data in table:
        return table[data]
    raise fail(where, f"unknown argument encoding {_short(kind)}: {_short(data)}")


def check_call(target: Callable, name: str, args: tuple, kwargs: dict, where: str, arity: int | None) -> None:
    """`args`/`kwargs` fit `target`'s schema (torch op) or arity (Python arithmetic on sizes)."""
    if arity is not None:
        if kwargs or len(args) != arity:
            raise fail(where, f"{name} takes {arity} positional arguments, got {len(args)} and {len(kwargs)} keyword")
        for index, arg in enumerate(args):
            if isinstance(arg, torch.fx.Node):
                continue
            if type(arg) is int and abs(arg) <= MAX_SMALL_INT or type(arg) is bool:
                continue
            if type(arg) is float and math.isfinite(arg) and abs(arg) <= MAX_SMALL_INT:
                continue
            raise fail(where, f"argument {index} of {name} is {_short(arg)}; size arithmetic takes nodes and numbers "
                              f"of magnitude at most {MAX_SMALL_INT}")
        if name == "operator.pow" and not (type(args[1]) in (int, float) and abs(args[1]) <= 8):
            raise fail(where, "operator.pow needs a constant exponent of magnitude at most 8")
        if name == "operator.getitem" and type(args[1]) is not int:
            raise fail(where, "operator.getitem needs a constant integer index")
        return
    schema = target._schema
    positional = [a for a in schema.arguments if not a.kwarg_only]
    if len(args) > len(positional):
        raise fail(where, f"{name} takes at most {len(positional)} positional arguments, got {len(args)}")
    by_name = {a.name: a for a in schema.arguments}
    given = {a.name: v for a, v in zip(positional, args, strict=False)}
    for key, value in kwargs.items():
        if key not in by_name or key in given:
            raise fail(where, f"{name} has no keyword argument {_short(key)} (or it is also given by position)")
        given[key] = value
    for argument in schema.arguments:
        if argument.name not in given:
            if not argument.has_default_value() and not str(argument.real_type).startswith("Optional["):
                raise fail(where, f"{name} needs the argument {argument.name!r}")
            continue
        if not _fits(given[argument.name], str(argument.real_type)):
            raise fail(where, f"argument {argument.name!r} of {name} is {_short(given[argument.name])}, "
                              f"not a {argument.real_type}")


def _fits(value: Any, kind: str) -> bool:
    if kind.startswith("Optional[") and kind.endswith("]"):
        return value is None or _fits(value, kind[9:-1])
    if kind.startswith("List[") and kind.endswith("]"):
        return isinstance(value, (list, tuple)) and all(_fits(v, kind[5:-1]) for v in value)
    if isinstance(value, torch.fx.Node):  # its type is checked when the graph is propagated
        return kind in ("Tensor", "int", "SymInt", "float", "bool", "number")
    kind_of = type(value)
    if kind in ("int", "SymInt"):
        return kind_of is int
    if kind == "Tensor":  # a number where torch wraps it as a tensor
        return kind_of in (int, float, bool)
    if kind == "float":
        return kind_of in (int, float)
    if kind == "bool":
        return kind_of is bool
    if kind == "number":
        return kind_of in (int, float, bool)
    if kind == "str":
        return kind_of is str
    expected = {"ScalarType": torch.dtype, "Layout": torch.layout, "Device": torch.device,
                "MemoryFormat": torch.memory_format}.get(kind)
    return expected is not None and isinstance(value, expected)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
