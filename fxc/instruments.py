"""Instruments: observers the pass manager calls around every pass and analysis.

    fxc.compile(model, passes=..., instruments=[Timing(), IRDump("dump/"), NumericDrift()])

Hooks (all optional): start(gm, am) once before the first pass; before_pass / after_pass;
before_analysis / after_analysis. Built-ins:
- Timing: seconds per pass and analysis, with each pass's one-line summary; `.table()`.
- IRDump: after each pass that changed the graph, writes its code to `directory/NN-name.py`.
- NumericDrift: max relative error of the graph's output on the example inputs after each pass,
  against the original model's output (the per-stage numeric check).
Reads the graph; IRDump writes files, the others only record.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree


class Instrument:
    """Base: every hook does nothing."""

    def start(self, gm: torch.fx.GraphModule, am: Any) -> None: ...

    def before_pass(self, pass_: Any, gm: torch.fx.GraphModule) -> None: ...

    def after_pass(self, pass_: Any, gm: torch.fx.GraphModule, result: Any) -> None: ...

    def before_analysis(self, analysis: Any, gm: torch.fx.GraphModule) -> None: ...

    def after_analysis(self, analysis: Any, gm: torch.fx.GraphModule, result: Any) -> None: ...


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
        out = gm(*args, **kwargs)
    return [t.detach().float() for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def relative_error(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """max over outputs of max|a - b| / max|b| (0 when both are zero)."""
    worst = 0.0
    for a, b in zip(outputs, reference):
        scale = b.abs().max().item() if b.numel() else 0.0
        err = (a - b).abs().max().item() if b.numel() else 0.0
        worst = max(worst, err / scale if scale > 0 else err)
    return worst
