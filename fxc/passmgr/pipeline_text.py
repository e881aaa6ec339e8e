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
objects. fxc/passmgr/pipeline.py wraps what the parser returns into a Pipeline. Reads the text it is
given and the registries; writes nothing; preserves nothing (it builds new objects).
"""

from __future__ import annotations

import re
import typing
from typing import Any

from fxc.errors import OptionError, PipelineSyntaxError, UnknownNameError
from fxc.passmgr import registry
from fxc.passmgr.options import allowed_types, declared, to_field_name, to_text_name

_TOKEN = re.compile(r'\s*(?:(?P<punct>[{}=,\[\]])|"(?P<quoted>[^"]*)"|(?P<word>[^\s{}=,\[\]"]+))')


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
    if isinstance(value, str) and (not value or re.search(r'[\s{}=,\[\]"]', value)):
        return f'"{value}"'
    return str(value)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, value, position)
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if not match:
                raise PipelineSyntaxError("unterminated quoted value", text, pos)
            start = match.start(match.lastgroup)
            kind = match.lastgroup
            self.tokens.append((kind, match.group(kind), start))
            pos = match.end()
        self.index = 0

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
        try:
            cls, is_analysis = lookup_entry(name)
        except UnknownNameError as error:
            raise PipelineSyntaxError(str(error), self.text, pos) from None
        raw: dict[str, tuple[Any, int]] = {}
        if self._peek()[:2] == ("punct", "{"):
            self._take("{")
            while True:
                key, key_pos = self._word("an option name")
                fields = {f.name: f for f in declared(cls)}
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
        hints = typing.get_type_hints(cls)
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
        return obj, tuple(raw), is_analysis

    def value(self) -> Any:
        kind, value, pos = self._peek()
        if (kind, value) == ("punct", "["):
            self._take("[")
            items = []
            if self._peek()[:2] != ("punct", "]"):
                items.append(self.value())
                while self._take(",", "]")[1] == ",":
                    items.append(self.value())
            else:
                self._take("]")
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
            pass
    if float in allowed:
        try:
            return float(raw)
        except ValueError:
            pass
    if not allowed or str in allowed:
        return raw
    raise ValueError(f"'{raw}' is not {_names(allowed)}")


def _names(types_: set[type]) -> str:
    return " or ".join(sorted("none" if t is type(None) else t.__name__ for t in types_))
