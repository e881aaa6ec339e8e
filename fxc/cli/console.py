"""What `fxc` shows while it works, on stderr (stdout keeps the report), and what it keeps quiet.

    with steps.step("loading smollm2-hf"):      # a spinner on a terminal; plain lines in a pipe or file
        ...
    instrument = pass_progress()                 # fxc.Progress on a terminal, else LineProgress
    with quiet_third_party(debug=False):         # torch / transformers noise off around the calls that emit it
        ...

On a terminal a step is a rich spinner with its elapsed time, replaced by a "✓ step (1.2 s)" line when it
ends, and passes show fxc.Progress's live bars. When stderr is not a terminal (a pipe, a CI log, a file)
nothing is redrawn: every step prints one whole line when it starts and one when it ends, and
LineProgress prints one line when a pass or analysis starts, at most one line every PERIOD seconds
while it runs ("layer 53/210 model.layers.7.mlp.up_proj"), and one when it ends, with its summary, so
no line is ever cut. `quiet_third_party` drops the FutureWarnings and UserWarnings that torch,
transformers and the Python copy machinery raise on every run (warnings whose source is fxc are
kept), torch's fake-tensor error log of a failed trace (the CLI prints the error itself), and
transformers' info logs and progress bars; `--debug` keeps them all. Reads nothing; writes stderr;
preserves the warning filters, logger levels and transformers settings it changes (restored on exit).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

from fxc.passmgr.instruments import Instrument, Progress

PERIOD = 10.0  # seconds between two progress lines of one running pass, when stderr is not a terminal
_NOISY_MODULES = r"(torch|transformers|copyreg|copy|huggingface_hub|safetensors|accelerate)(\.|$)"
_NOISY_LOGS = ("torch._subclasses.fake_tensor", "torch._export", "torch.export", "torch.fx.experimental")


def interactive() -> bool:
    """Whether stderr is a terminal (rich redraws lines there; anywhere else it would leave cut lines)."""
    return sys.stderr.isatty()


def say(text: str) -> None:
    """One line on stderr."""
    print(text, file=sys.stderr, flush=True)


class Steps:
    """The CLI's own steps (load, tokenize, trace, lower, save), each announced and timed; one at a time.
    `begin` / `end` for a step that an instrument hook ends (tracing ends when the first pass starts)."""

    def __init__(self) -> None:
        self._text: str | None = None
        self._started = 0.0
        self._status: Any = None  # the rich spinner on a terminal

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        self.begin(text)
        try:
            yield
        except BaseException:
            self.abort()
            raise
        self.end()

    def begin(self, text: str) -> None:
        self.end()
        self._text, self._started = text, time.perf_counter()
        if interactive():
            from rich.console import Console

            self._status = Console(stderr=True).status(text + " ...")
            self._status.start()
        else:
            say(f"{text} ...")

    def end(self) -> None:
        """Close the running step (if any) with its elapsed time."""
        if self._text is None:
            return
        seconds, text = time.perf_counter() - self._started, self._text
        self.abort()
        if interactive():
            from rich.console import Console

            Console(stderr=True).print(f"[green]✓[/green] {text} ({seconds:.1f} s)", highlight=False)
        else:
            say(f"{text}: done in {seconds:.1f} s")

    def abort(self) -> None:
        """Stop the running step without a line (an error follows)."""
        if self._status is not None:
            self._status.stop()
        self._text, self._status = None, None


class StepHooks(Instrument):
    """Ends the tracing step when fxc.compile starts its passes and begins the lowering step when they end."""

    def __init__(self, steps: Steps, lowering: str) -> None:
        self.steps, self.lowering = steps, lowering

    def start(self, gm, am):
        self.steps.end()

    def finish(self):
        if sys.exc_info()[0] is None:  # fxc.compile calls finish in a `finally`: no lowering after a failed pass
            self.steps.begin(self.lowering)


def pass_progress() -> Instrument:
    """The progress instrument for fxc.compile: live bars on a terminal, whole lines elsewhere."""
    return Progress() if interactive() else LineProgress()


class LineProgress(Instrument):
    """Progress of passes and analyses as plain lines on stderr (see the module docstring)."""

    def __init__(self, period: float = PERIOD) -> None:
        self.period = period
        self._open: list[tuple[Any, str, float]] = []  # (pass or analysis, its text, started)
        self._last: dict[int, tuple[str, float]] = {}  # id(item) -> (last step text, when it printed)

    def before_pass(self, pass_, gm):
        self._start(pass_, f"pass {pass_.to_text()}")

    def after_pass(self, pass_, gm, result):
        summary = result.summary or ("changed the graph" if result.changed else "no change")
        self._end(pass_, summary)

    def before_analysis(self, analysis, gm):
        self._start(analysis, f"analysis {analysis.to_text()}")

    def after_analysis(self, analysis, gm, result):
        self._end(analysis, "done")

    def progress(self, item, step):
        entry = next((e for e in reversed(self._open) if e[0] is item), None)
        if entry is None:
            return
        known = step.total is not None
        count = f"{step.unit} {step.completed}/{step.total}" if known else f"{step.completed} {step.unit}s"
        text = f"{count} {step.layer}".rstrip()
        now = time.perf_counter()
        _, printed = self._last.get(id(item), ("", entry[2]))
        self._last[id(item)] = (count, printed)
        if step.finished and now - printed >= self.period:
            self._last[id(item)] = (count, now)
            say(f"{'  ' * (len(self._open) - 1)}{entry[1]}: {text} ({now - entry[2]:.0f} s)")

    def finish(self):
        self._open, self._last = [], {}

    def _start(self, item: Any, text: str) -> None:
        say(f"{'  ' * len(self._open)}{text} ...")
        self._open.append((item, text, time.perf_counter()))

    def _end(self, item: Any, summary: str) -> None:
        at = [i for i, (owner, _, _) in enumerate(self._open) if owner is item]
        if not at:
            return
        del self._open[at[-1] + 1 :]  # rows a failure left open, which the pass caught
        _, text, started = self._open.pop()
        count, _ = self._last.pop(id(item), ("", 0.0))
        steps = f"{count}, " if count else ""
        say(f"{'  ' * len(self._open)}{text}: {summary} ({steps}{time.perf_counter() - started:.1f} s)")


@contextlib.contextmanager
def quiet_third_party(debug: bool = False, transformers: bool = False) -> Iterator[None]:
    """Silence other libraries' routine warnings, error logs and progress bars (not fxc's own warnings).
    transformers: also its logs and bars (it is imported for that; else only when already imported)."""
    if debug:
        yield
        return
    loggers = [logging.getLogger(name) for name in _NOISY_LOGS]
    levels = [logger.level for logger in loggers]
    restore_hf = _quiet_transformers(transformers)
    try:
        with warnings.catch_warnings():
            for category in (FutureWarning, UserWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", category=category, module=_NOISY_MODULES)
            for logger in loggers:
                logger.setLevel(logging.CRITICAL)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        restore_hf()


def _quiet_transformers(load: bool):
    """transformers' own logging (info and warnings such as "sequence longer than the maximum", which the
    CLI's windows make moot) and its tqdm bars, off; returns the function that restores them."""
    module = sys.modules.get("transformers")
    if module is None:
        if not load:
            return lambda: None
        try:
            import transformers as module
        except ImportError:
            return lambda: None
    hf_logging = module.utils.logging
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    def restore() -> None:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()

    return restore
