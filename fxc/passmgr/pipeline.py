"""Pipelines: an ordered list of passes, written as objects or as text that prints back identically.

    Pipeline.parse("dce,prune{method=wanda,sparsity=0.5},quantize{bits=4,group-size=64}")
    Pipeline.of([FoldBN(), "dce"])          # objects, text, or a mix
    str(pipeline)                           # the text again

Grammar:  pipeline := entry ("," entry)* ;  entry := name ["{" key "=" value ("," key "=" value)* "}"]
          value := word | "quoted" | "[" value ("," value)* "]"
An analysis name (act-stats, hessian, ...) in a pipeline computes it at that point. Errors point at
the bad token. `run` is the pass manager: it runs each pass with instruments, verifies the IR after
each change, invalidates analyses, and adds failure context (the pass, the passes before it).
Reads and writes only the graph it is given.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch.fx

from fxc import ir
from fxc.errors import FxcError, OptionError, PassFailure, PipelineSyntaxError, UnknownNameError
from fxc.passmgr import registry
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.options import _allowed_types, declared, to_field_name, to_text_name
from fxc.passmgr.passbase import Analysis, Pass, PassResult
from fxc.passmgr.progress import reporting

_TOKEN = re.compile(r'\s*(?:(?P<punct>[{}=,\[\]])|"(?P<quoted>[^"]*)"|(?P<word>[^\s{}=,\[\]"]+))')


@dataclass(frozen=True)
class RequireAnalysis(Pass):
    """Computes an analysis at this point of the pipeline (so instruments and later passes see it)."""

    analysis: Analysis = None  # type: ignore[assignment]

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.analysis.name

    def __post_init__(self) -> None:
        if not isinstance(self.analysis, Analysis):
            raise OptionError(f"RequireAnalysis needs an Analysis, got {type(self.analysis).__name__}")

    def run(self, gm: torch.fx.GraphModule, am: AnalysisManager) -> PassResult:
        am.get(self.analysis)
        return PassResult(changed=False)

    def to_text(self, explicit: list[str] | None = None) -> str:
        return self.analysis.to_text(explicit)


@dataclass(frozen=True)
class Entry:
    item: Pass
    explicit: tuple[str, ...] | None = None  # options written in the text; None: print non-defaults

    def text(self) -> str:
        return self.item.to_text(None if self.explicit is None else list(self.explicit))


@dataclass(frozen=True)
class Pipeline:
    entries: tuple[Entry, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Pipeline:
        return cls(tuple(_Parser(text).pipeline()))

    @classmethod
    def of(cls, passes: str | Pass | Analysis | Pipeline | Iterable[Any] | None) -> Pipeline:
        if passes is None:
            return cls()
        if isinstance(passes, Pipeline):
            return passes
        if isinstance(passes, str):
            return cls.parse(passes)
        if isinstance(passes, (Pass, Analysis)):
            passes = [passes]
        entries: list[Entry] = []
        for item in passes:
            if isinstance(item, str):
                entries.extend(cls.parse(item).entries)
            elif isinstance(item, Analysis):
                entries.append(Entry(RequireAnalysis(item)))
            elif isinstance(item, Pass):
                entries.append(Entry(item))
            else:
                raise TypeError(f"a pipeline holds passes or pipeline text, got {type(item).__name__}")
        return cls(tuple(entries))

    @property
    def passes(self) -> list[Pass]:
        return [e.item for e in self.entries]

    def __iter__(self):
        return iter(self.passes)

    def __len__(self) -> int:
        return len(self.entries)

    def __str__(self) -> str:
        return ",".join(e.text() for e in self.entries)

    def run(self, gm: torch.fx.GraphModule, am: AnalysisManager, instruments: tuple = ()) -> list[PassResult]:
        """Run every pass in order on `gm` (in place). Returns each pass's result."""
        results: list[PassResult] = []
        ran: list[str] = []
        for entry in self.entries:
            text = entry.text()
            for instrument in instruments:
                instrument.before_pass(entry.item, gm)
            try:
                with reporting(am, entry.item, instruments):  # am.progress: this pass's progress hook
                    result = entry.item.run(gm, am)
                if not isinstance(result, PassResult):
                    raise TypeError(f"run() must return a PassResult, got {type(result).__name__}")
                if result.changed:
                    ir.verify(gm)
            except FxcError as error:
                error.add_context(f"in pass '{text}'; passes that ran before it: {', '.join(ran) or 'none'}")
                raise
            except Exception as error:
                raise PassFailure(text, ran, error) from error
            am.invalidate(result)
            for instrument in instruments:
                instrument.after_pass(entry.item, gm, result)
            results.append(result)
            ran.append(text)
        return results


def lookup_entry(name: str) -> tuple[type, bool]:
    """The class for a pipeline name and whether it is an analysis."""
    if name in registry.names("fxc.passes"):
        return registry.lookup("fxc.passes", name), False
    if name in registry.names("fxc.analyses"):
        return registry.lookup("fxc.analyses", name), True
    raise UnknownNameError(registry.unknown_message("fxc.passes", name, registry.names("fxc.analyses")))


def format_value(value: Any) -> str:
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

    def pipeline(self) -> list[Entry]:
        if not self.tokens:
            return []
        entries = [self.entry()]
        while self._peek()[0] != "end":
            self._take(",")
            entries.append(self.entry())
        return entries

    def entry(self) -> Entry:
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
        item = RequireAnalysis(obj) if is_analysis else obj
        return Entry(item, tuple(raw))

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
    allowed = _allowed_types(expected)
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


__all__ = ["Pipeline", "Entry", "RequireAnalysis", "format_value"]
