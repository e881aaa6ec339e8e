"""Shared benchmark plumbing: the real models and metrics come from fxc.eval.realdata / fxc.eval.quality;
this file adds what only benchmarks need. Writes: appends sections to benchmarks/RESULTS.md.

    from harness import record, peak_rss_mb, timed, machine
    record("Pruning on SmolLM2", "python benchmarks/prune_quality.py", table_text)
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from fxc.eval.quality import embed, mean_cosine, perplexity, wiki_sentences, wordsim_spearman  # noqa: F401
from fxc.eval.realdata import load_minilm, load_smollm2, wiki_splits, wiki_text, wordsim353  # noqa: F401

RESULTS = Path(__file__).with_name("RESULTS.md")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cores = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()} CPU, {cores} cores, {mem:.0f} GiB, no GPU"


def commit() -> str:
    """The commit this process started from (read once, at import: a long run records the code it ran, not
    the HEAD that later commits moved on to while it ran)."""
    return STARTED_AT


def _head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
        return out.stdout.strip() + ("+uncommitted" if dirty else "")
    except OSError:
        return "unknown"


STARTED_AT = _head()


def record(title: str, command: str, table: str, notes: str = "") -> None:
    """Append one dated section to RESULTS.md and print it."""
    today = datetime.date.today().isoformat()
    section = (
        f"\n## {title}\n\n- date: {today}\n- commit: {commit()}\n- machine: {machine()}\n"
        f"- command: `{command}`\n\n```\n{table.rstrip()}\n```\n" + (f"\n{notes.strip()}\n" if notes else "")
    )
    with RESULTS.open("a") as f:
        f.write(section)
    print(section)


def publish(table: str, title: str, notes: str = "", record_it: bool = True) -> None:
    """Print a benchmark's table, and record it in RESULTS.md (with this command) unless told not to."""
    print(table)
    if record_it:
        record(title, this_command(), table, notes)


class timed:
    """with timed() as t: ...; t.seconds"""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def this_command() -> str:
    return "python " + " ".join(sys.argv)
