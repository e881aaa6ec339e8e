"""Pipelines: an ordered list of passes, written as objects or as text (canonical text prints back identically).

    Pipeline.parse("dce,prune{method=wanda,sparsity=0.5},quantize{bits=4,group-size=64}")
    Pipeline.of([FoldBN(), "dce"])          # objects, text, or a mix
    str(pipeline)                           # the text again

The text form (grammar, parser, value printing) is fxc/passmgr/pipeline_text.py; errors point at the
bad token. An analysis name (act-stats, hessian, ...) in a pipeline computes it at that point (a
RequireAnalysis entry). `run` is the pass manager: it runs each pass with instruments, verifies the IR after
each change, invalidates analyses, and adds failure context (the pass, the passes before it).
Reads and writes only the graph it is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch.fx

from fxc import ir
from fxc.errors import FxcError, OptionError, PassFailure
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.passbase import Analysis, Pass, PassResult
from fxc.passmgr.pipeline_text import format_value, parse_entries
from fxc.passmgr.progress import reporting


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
        return cls(tuple(
            Entry(RequireAnalysis(item) if is_analysis else item, explicit)
            for item, explicit, is_analysis in parse_entries(text)
        ))

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


__all__ = ["Pipeline", "Entry", "RequireAnalysis", "format_value"]
