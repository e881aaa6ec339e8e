"""Progress inside a pass: the hook a pass (or analysis) calls while it walks layers, and what instruments see.

A long pass reports its steps through `am.progress`, a `Ticker` the pass manager opens for each pass and
each analysis (fxc/passmgr/pipeline.py, fxc/passmgr/analysis_manager.py) and closes when it returns:

    am.progress.start(len(layers), unit="layer")      # how many steps (optional: without it, a count only)
    for layer in layers:
        am.progress.working_on(layer.fqn)              # optional: names the step now running
        ... compress layer ...
        am.progress.advance(layer=layer.fqn)           # one step finished
    for layer in am.progress.each(layers, name=lambda l: l.fqn): ...   # the same three calls, as a loop

Passes that calibrate layer by layer need no code of their own: `am.require_calibration(who)` hands out
the calibration bound to the current ticker, and fxc.passmgr.sequential.CalibrationRunner ticks once per
segment (and once per batch in `forward_all`). Every call becomes a `ProgressStep` delivered to each
instrument's `progress(item, step)` hook (fxc/passmgr/instruments.py); with no instruments nothing happens,
so library calls print nothing unless the caller opts in (e.g. instruments=[fxc.Progress()]).
A ticker is closed when its pass returns: late calls from a runner that outlived its pass are ignored.
Reads nothing, writes nothing; it only forwards events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ProgressStep:
    """One progress event of a pass or analysis.

    completed: steps finished so far; total: steps expected (None: unknown); unit: what a step is
    ("layer", "segment", "batch"); layer: the step's label (a module path, or a group of them);
    finished: True when the step just ended (`advance`), False when it just began (`start`, `working_on`).
    """

    completed: int
    total: int | None
    unit: str
    layer: str
    finished: bool


class Ticker:
    """The progress hook of one running pass or analysis: `start`, `working_on`, `advance`, `each`."""

    def __init__(self, item: Any = None, instruments: tuple = ()):
        self.item = item
        self.instruments = tuple(i for i in instruments if hasattr(i, "progress"))
        self.completed = 0
        self.total: int | None = None
        self.unit = "step"
        self.closed = False

    @property
    def active(self) -> bool:
        """Whether anyone listens (callers may skip building labels when not)."""
        return bool(self.instruments) and not self.closed

    def start(self, total: int | None, unit: str = "layer") -> None:
        """Announce `total` steps of `unit` (restarts the count at 0)."""
        if total is not None and total < 0:
            raise ValueError(f"progress total must be >= 0, got {total}")
        if self.closed:
            return
        self.completed, self.total, self.unit = 0, total, unit
        self._emit("", finished=False)

    def working_on(self, layer: str) -> None:
        """Name the step that is running now (counts nothing)."""
        self._emit(layer, finished=False)

    def advance(self, layer: str = "", steps: int = 1) -> None:
        """`steps` more steps finished; `layer` names the last of them."""
        if self.closed:
            return
        self.completed += steps
        self._emit(layer, finished=True)

    def each(self, items: Iterable[T], name: Callable[[T], str] = str, unit: str = "layer") -> Iterator[T]:
        """Yield `items`, announcing their number first and ticking after each one."""
        items = list(items)
        self.start(len(items), unit)
        for item in items:
            label = name(item) if self.active else ""
            self.working_on(label)
            yield item
            self.advance(layer=label)

    def close(self) -> None:
        self.closed = True

    def _emit(self, layer: str, finished: bool) -> None:
        if not self.active:
            return
        step = ProgressStep(self.completed, self.total, self.unit, layer, finished)
        for instrument in self.instruments:
            instrument.progress(self.item, step)


SILENT = Ticker()  # what am.progress is outside any pass: no listeners
SILENT.close()


@contextmanager
def reporting(am: Any, item: Any, instruments: tuple) -> Iterator[Ticker]:
    """Open a ticker for `item` (a pass or analysis) as `am.progress` while it runs, then restore the outer one."""
    outer = getattr(am, "progress", SILENT)
    ticker = Ticker(item, instruments)
    am.progress = ticker
    try:
        yield ticker
    finally:
        ticker.close()
        am.progress = outer


def group_label(names: list[str]) -> str:
    """Module paths as one label: "a.b.q_proj", or "a.b.{q_proj,k_proj,v_proj}" for siblings."""
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    parts = [n.split(".") for n in names]
    shared = 0
    while all(len(p) > shared + 1 for p in parts) and len({p[shared] for p in parts}) == 1:
        shared += 1
    prefix = ".".join(parts[0][:shared])
    rest = ",".join(".".join(p[shared:]) for p in parts)
    return f"{prefix}.{{{rest}}}" if prefix else f"{{{rest}}}"


__all__ = ["ProgressStep", "Ticker", "SILENT", "reporting", "group_label"]
