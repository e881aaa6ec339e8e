"""The text form of a pipeline: its grammar, the parser, and how an option value prints.

Grammar:  pipeline := entry ("," entry)* ;  entry := name ["{" key "=" value ("," key "=" value)* "}"]
          value := word | "quoted" | "[" value ("," value)* "]"

    parse_entries("dce,prune{sparsity=0.5}")  # [(DeadCodeElimination(), (), False),
                                              #  (Prune(sparsity=0.5), ("sparsity",), False)]
    format_value(("a b", 3))                   # '["a b",3]': the text that parses back to ("a b", 3)

A name is looked up among the registered passes, then the registered analyses (fxc/passmgr/registry.py);
each value is converted to the type the option declares (fxc/passmgr/options.py) and the object is built
with its options validated. Every error is a PipelineSyntaxError that points at the bad token.
`format_value` is the inverse of the value conversion, so printed pipeline text parses back to the same
objects (strings spelling none / true / false print quoted, so they stay strings).
fxc/passmgr/pipeline.py wraps what the parser returns into a Pipeline.

Hostile text: whatever the text (any length, any unicode, NUL bytes, unbalanced brackets, unterminated
quotes), parsing it gives objects or raises an FxcError (PipelineSyntaxError, or UnknownNameError /
OptionError inside its message), never a raw Python error. Lists nest at most MAX_DEPTH deep (the
recursive descent would otherwise hit Python's recursion limit); the bracket that passes it is the
error's position. Tokenizing is linear in the text's length. `nan`, `inf`, `-inf` (any case) read as
floats and the option check refuses them by name; a number past float range (`1e999`, 400 digits)
is refused here rather than read as inf. A ValueError / TypeError / ArithmeticError a pass's own
constructor raises on a value becomes a PipelineSyntaxError at the entry (chained, so the cause shows).
Reads the text it is given and the registries; writes nothing; preserves nothing (it builds new objects).
"""

from __future__ import annotations

import math
import re
import sys
import typing
from typing import Any

from fxc.errors import OptionError, PipelineSyntaxError, UnknownNameError
from fxc.passmgr import registry
from fxc.passmgr.options import allowed_types, declared, to_field_name, to_text_name

_TOKEN = re.compile(r'\s*(?:(?P<punct>[{}=,\[\]])|"(?P<quoted>[^"]*)"|(?P<word>[^\s{}=,\[\]"]+))')
_SPACE = re.compile(r"\s*")
_KEYWORDS = ("none", "true", "false")  # unquoted, these read as None / True / False where the type allows
_INFINITE = re.compile(r"[+-]?inf(inity)?", re.IGNORECASE)  # the spellings float() reads as +-inf
MAX_DEPTH = 32  # nesting of lists in one value; far beyond any option, far below Python's recursion limit


def parse_entries(text: str) -> list[tuple[Any, tuple[str, ...], bool]]:
    """Each entry of pipeline `text` as (the pass or analysis object, the option names written in the
    text, whether it is an analysis), in order."""
    return _Parser(text).pipeline()


def lookup_entry(name: str) -> tuple[type, bool]:
    """The class for a pipeline name and whether it is an analysis."""
    if name in registry.names("fxc.passes"):
        return registry.lookup("fxc.passes", name), False
    if name in registry.names("fxc.analyses"):
        return registry.lookup("fxc.analyses", name), True
    raise UnknownNameError(registry.unknown_message("fxc.passes", name, registry.names("fxc.analyses")))


def format_value(value: Any) -> str:
    """An option value as pipeline text (what the parser reads back as the same value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, str) and (not value or value in _KEYWORDS or re.search(r'[\s{}=,\[\]"]', value)):
        return f'"{value}"'
    return str(value)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, value, position)
        pos = _SPACE.match(text).end()
        while pos < len(text):  # each step consumes a token and the spaces after it: linear in len(text)
            match = _TOKEN.match(text, pos)
            if not match:  # only a '"' with no closing one fails to match
                raise PipelineSyntaxError("unterminated quoted value (no closing '\"')", text, pos)
            kind = match.lastgroup
            self.tokens.append((kind, match.group(kind), match.start(kind) - (kind == "quoted")))
            pos = _SPACE.match(text, match.end()).end()
        self.index = 0
        self.depth = 0
        self.classes: dict[str, tuple[type, bool, dict, dict]] = {}  # name -> (class, analysis?, fields, hints)

    def _lookup(self, name: str, pos: int) -> tuple[type, bool, dict, dict]:
        """lookup_entry with its fields and type hints, once per name per text (a text may repeat one)."""
        if name not in self.classes:
            try:
                cls, is_analysis = lookup_entry(name)
            except UnknownNameError as error:
                raise PipelineSyntaxError(str(error), self.text, pos) from None
            fields = {f.name: f for f in declared(cls)}
            self.classes[name] = (cls, is_analysis, fields, typing.get_type_hints(cls))
        return self.classes[name]

    def _peek(self) -> tuple[str, str, int]:
        if self.index < len(self.tokens):
            return self.tokens[self.index]
        return ("end", "", len(self.text))

    def _take(self, *values: str) -> tuple[str, str, int]:
        token = self._peek()
        if token[0] != "punct" or token[1] not in values:
            shown = "end of text" if token[0] == "end" else f"'{token[1]}'"
            expected = " or ".join(f"'{v}'" for v in values)
            raise PipelineSyntaxError(f"expected {expected}, found {shown}", self.text, token[2])
        self.index += 1
        return token

    def _word(self, what: str) -> tuple[str, int]:
        kind, value, pos = self._peek()
        if kind != "word":
            shown = "end of text" if kind == "end" else f"'{value}'"
            raise PipelineSyntaxError(f"expected {what}, found {shown}", self.text, pos)
        self.index += 1
        return value, pos

    def pipeline(self) -> list[tuple[Any, tuple[str, ...], bool]]:
        if not self.tokens:
            return []
        entries = [self.entry()]
        while self._peek()[0] != "end":
            self._take(",")
            entries.append(self.entry())
        return entries

    def entry(self) -> tuple[Any, tuple[str, ...], bool]:
        name, pos = self._word("a pass name")
        cls, is_analysis, fields, hints = self._lookup(name, pos)
        raw: dict[str, tuple[Any, int]] = {}
        if self._peek()[:2] == ("punct", "{"):
            self._take("{")
            while True:
                key, key_pos = self._word("an option name")
                if to_field_name(key) not in fields:
                    known = ", ".join(to_text_name(f) for f in fields) or "none"
                    raise PipelineSyntaxError(
                        f"{name} has no option '{key}' (options: {known})", self.text, key_pos
                    )
                if to_field_name(key) in raw:
                    raise PipelineSyntaxError(f"option '{key}' given twice", self.text, key_pos)
                self._take("=")
                value_pos = self._peek()[2]
                raw[to_field_name(key)] = (self.value(), value_pos)
                if self._take(",", "}")[1] == "}":
                    break
        kwargs = {}
        for key, (value, value_pos) in raw.items():
            try:
                kwargs[key] = _convert(value, hints.get(key, Any))
            except ValueError as error:
                raise PipelineSyntaxError(
                    f"{name}: option '{to_text_name(key)}': {error}", self.text, value_pos
                ) from None
        try:
            obj = cls(**kwargs)
        except OptionError as error:
            bad = next((pos for key, (_, pos) in raw.items() if f"'{to_text_name(key)}'" in str(error)), pos)
            raise PipelineSyntaxError(str(error), self.text, bad) from None
        except (ValueError, TypeError, ArithmeticError) as error:  # a pass's own check that is not an OptionError
            raise PipelineSyntaxError(
                f"{name}: its options were refused: {type(error).__name__}: {error}", self.text, pos
            ) from error
        return obj, tuple(raw), is_analysis

    def value(self) -> Any:
        kind, value, pos = self._peek()
        if (kind, value) == ("punct", "["):
            if self.depth == MAX_DEPTH:
                raise PipelineSyntaxError(f"lists nest more than {MAX_DEPTH} deep", self.text, pos)
            self._take("[")
            self.depth += 1
            items = []
            if self._peek()[:2] != ("punct", "]"):
                items.append(self.value())
                while self._take(",", "]")[1] == ",":
                    items.append(self.value())
            else:
                self._take("]")
            self.depth -= 1
            return items
        if kind == "quoted":
            self.index += 1
            return _Quoted(value)
        word, _ = self._word("a value")
        return word


class _Quoted(str):
    """A value written in quotes: always a string."""


def _convert(raw: Any, expected: Any) -> Any:
    """Text value -> Python value of the option's declared type."""
    allowed = allowed_types(expected)
    if isinstance(raw, list):
        if allowed and not (allowed & {tuple, list}):
            raise ValueError(f"a list is not accepted here (expected {_names(allowed)})")
        inner = typing.get_args(expected)
        item_type = next((a for a in inner if typing.get_origin(a) in (tuple, list)), expected)
        item_args = [a for a in typing.get_args(item_type) if a is not Ellipsis]
        return tuple(_convert(v, item_args[0] if item_args else Any) for v in raw)
    if isinstance(raw, _Quoted):
        return str(raw)
    if raw == "none" and (not allowed or type(None) in allowed):
        return None
    if bool in allowed and raw in ("true", "false"):
        return raw == "true"
    if int in allowed:
        try:
            return int(raw)
        except ValueError:
            limit = sys.get_int_max_str_digits()  # int() refuses longer digit strings (0: no limit)
            digits = raw.lstrip("+-").replace("_", "")
            if limit and len(digits) > limit and digits.isdigit() and not allowed & {float, str}:
                raise ValueError(f"'{_shown(raw)}' has {len(digits)} digits; integers are read up to {limit}") from None
    if float in allowed:
        try:
            number = float(raw)
        except ValueError:
            pass
        else:
            if math.isinf(number) and not _INFINITE.fullmatch(raw):
                raise ValueError(f"'{_shown(raw)}' is past float range (it reads as {number}); give a finite number")
            return number
    if not allowed or str in allowed:
        return raw
    raise ValueError(f"'{_shown(raw)}' is not {_names(allowed)}")


def _shown(raw: str) -> str:
    return raw if len(raw) <= 40 else f"{raw[:20]}... ({len(raw)} characters)"


def _names(types_: set[type]) -> str:
    return " or ".join(sorted("none" if t is type(None) else t.__name__ for t in types_))
