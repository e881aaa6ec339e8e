"""Instruments: observers the pass manager calls around every pass and analysis.

    fxc.compile(model, passes=..., instruments=[Timing(), IRDump("dump/"), NumericDrift()])

Hooks (all optional): start(gm, am) once before the first pass; before_pass / after_pass;
before_analysis / after_analysis; progress(item, step) for each step a running pass or analysis
reports through `am.progress` (fxc/passmgr/progress.py: segments of a layer-by-layer calibration, layers,
batches); finish() once after the last pass, also when one failed. Built-ins:
- Timing: seconds per pass and analysis, with each pass's one-line summary; `.table()`.
- IRDump: after each pass that changed the graph, writes its code to `directory/NN-name.py`.
- NumericDrift: max relative error of the graph's output on the example inputs after each pass,
  against the original model's output (the per-stage numeric check; of a KV-cache step graph, the logits).
- Progress: a live rich display, one row per pass and analysis with its bar, steps ("segment 7/26"),
  current layer and elapsed time; what `fxc compress` shows. Opt-in: library calls print nothing without it.
Reads the graph; IRDump writes files, Progress draws on a console (stderr by default), the others only record.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree

from fxc.ir.kv_signature import model_output
from fxc.passmgr.progress import ProgressStep


class Instrument:
    """Base: every hook does nothing."""

    def start(self, gm: torch.fx.GraphModule, am: Any) -> None: ...

    def before_pass(self, pass_: Any, gm: torch.fx.GraphModule) -> None: ...

    def after_pass(self, pass_: Any, gm: torch.fx.GraphModule, result: Any) -> None: ...

    def before_analysis(self, analysis: Any, gm: torch.fx.GraphModule) -> None: ...

    def after_analysis(self, analysis: Any, gm: torch.fx.GraphModule, result: Any) -> None: ...

    def progress(self, item: Any, step: ProgressStep) -> None: ...

    def finish(self) -> None: ...


class Timing(Instrument):
    def __init__(self) -> None:
        self.records: list[tuple[str, str, float, str]] = []  # (kind, name, seconds, summary)
        self._started: list[float] = []

    def before_pass(self, pass_, gm):
        self._started.append(time.perf_counter())

    def after_pass(self, pass_, gm, result):
        seconds = time.perf_counter() - self._started.pop()
        summary = result.summary or ("changed" if result.changed else "unchanged")
        self.records.append(("pass", pass_.to_text(), seconds, summary))

    def before_analysis(self, analysis, gm):
        self._started.append(time.perf_counter())

    def after_analysis(self, analysis, gm, result):
        self.records.append(("analysis", analysis.to_text(), time.perf_counter() - self._started.pop(), ""))

    def table(self) -> str:
        lines = [f"{'kind':<9} {'name':<40} {'seconds':>9}  summary"]
        lines += [f"{k:<9} {n:<40} {s:>9.3f}  {m}" for k, n, s, m in self.records]
        return "\n".join(lines)


class IRDump(Instrument):
    def __init__(self, directory: str | Path, only_changed: bool = True) -> None:
        self.directory = Path(directory)
        self.only_changed = only_changed
        self.count = 0

    def start(self, gm, am):
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write("input", gm)

    def after_pass(self, pass_, gm, result):
        if result.changed or not self.only_changed:
            self._write(pass_.name, gm)

    def _write(self, name: str, gm: torch.fx.GraphModule) -> None:
        path = self.directory / f"{self.count:02d}-{name}.py"
        path.write_text(gm.code)
        self.count += 1


class NumericDrift(Instrument):
    """After each pass: max |y - y_ref| / max |y_ref| over the outputs on the example inputs."""

    def __init__(self) -> None:
        self.drift: list[tuple[str, float]] = []
        self._inputs: tuple[tuple, dict] | None = None
        self._reference: list[torch.Tensor] = []

    def start(self, gm, am):
        self._inputs = am.example_inputs
        if self._inputs is not None:
            self._reference = _tensor_outputs(gm, self._inputs)

    def after_pass(self, pass_, gm, result):
        if self._inputs is None:
            return
        outputs = _tensor_outputs(gm, self._inputs)
        self.drift.append((pass_.to_text(), relative_error(outputs, self._reference)))


def _tensor_outputs(gm: torch.fx.GraphModule, inputs: tuple[tuple, dict]) -> list[torch.Tensor]:
    args, kwargs = inputs
    with torch.no_grad():
        out = model_output(gm, gm(*args, **kwargs))  # a KV-cache step graph: its logits
    return [t.detach().float() for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def relative_error(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """max over outputs of max|a - b| / max|b| (0 when both are zero)."""
    worst = 0.0
    for a, b in zip(outputs, reference):
        scale = b.abs().max().item() if b.numel() else 0.0
        err = (a - b).abs().max().item() if b.numel() else 0.0
        worst = max(worst, err / scale if scale > 0 else err)
    return worst


class Progress(Instrument):
    """A live rich display while fxc.compile runs: one row per pass and analysis (nested rows indented)
    with a bar, its steps ("segment 7/26"), the layer it is on, and elapsed time; a finished pass shows
    its one-line summary. console: a rich Console (default: one on stderr, so stdout stays clean).
    fxc.compile stops the display when it returns or fails; around a bare Pipeline.run use `with Progress() as p:`."""

    def __init__(self, console: Any = None) -> None:
        self.console = console
        self._display: Any = None  # rich.progress.Progress while a compile runs
        self._rows: list[tuple[Any, Any]] = []  # open rows, outermost first: (pass or analysis, rich task id)

    def before_pass(self, pass_, gm):
        self._open(pass_, f"pass {pass_.to_text()}")

    def after_pass(self, pass_, gm, result):
        summary = result.summary or ("changed the graph" if result.changed else "no change")
        if len(summary) > 100:  # a live line: the whole summary is in Timing and the pass's result
            summary = summary[:97] + "..."
        self._close(pass_, f"pass {pass_.to_text()}: {summary}")

    def before_analysis(self, analysis, gm):
        self._open(analysis, f"analysis {analysis.to_text()}")

    def after_analysis(self, analysis, gm, result):
        self._close(analysis)

    def progress(self, item, step):
        task = next((task for owner, task in reversed(self._rows) if owner is item), None)
        if task is None:
            return
        known = step.total is not None
        count = f"{step.unit} {step.completed}/{step.total}" if known else f"{step.completed} {step.unit}s"
        self._display.update(task, total=step.total, completed=step.completed, steps=count, layer=step.layer)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.finish()

    def finish(self):
        if self._display is not None:
            self._display.stop()
        self._display, self._rows = None, []

    def _open(self, item: Any, description: str) -> None:
        if self._display is None:
            self._display = _rich_display(self.console)
            self._display.start()
        indent = "  " * len(self._rows)
        task = self._display.add_task(indent + description, total=None, steps="", layer="", seconds=None)
        self._rows.append((item, task))

    def _close(self, item: Any, description: str | None = None) -> None:
        open_at = [i for i, (owner, _) in enumerate(self._rows) if owner is item]
        if not open_at:
            return
        del self._rows[open_at[-1] + 1 :]  # rows a failure left open, which the pass caught
        _, task = self._rows.pop()
        row = self._display.tasks[[t.id for t in self._display.tasks].index(task)]
        done = max(row.completed, row.total or 1)
        indent = "  " * len(self._rows)
        self._display.update(
            task, total=done, completed=done, seconds=row.elapsed, layer="",
            description=None if description is None else indent + description,
        )


def _rich_display(console: Any) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, ProgressColumn, SpinnerColumn, TextColumn
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class Elapsed(ProgressColumn):
        """Seconds since the row opened, frozen when its pass or analysis returns."""

        def render(self, task) -> Text:
            seconds = task.fields.get("seconds")
            seconds = task.elapsed if seconds is None else seconds
            minutes, rest = divmod(int(seconds or 0), 60)
            return Text(f"{minutes // 60}:{minutes % 60:02d}:{rest:02d}", style="progress.elapsed")

    return RichProgress(
        SpinnerColumn(finished_text="[green]✓"),
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[steps]}"),
        TextColumn("{task.fields[layer]}", style="dim"),
        Elapsed(),
        console=console or Console(stderr=True),
    )
