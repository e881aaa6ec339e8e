"""Pruning patterns as the prune pass's `pattern` option and meta.LayerPlan.pattern name them.

    kind, nm = parse_pattern("2:4")                # ("nm", (2, 4))
    kind, nm = parse_pattern("channel")            # ("channel", None)

"unstructured" and "N:M" (N weights kept of every M consecutive input columns, M at most 255: the
uint8 indices of torch.ops.fxc.sparse_nm_linear) zero single weights (the masks:
passes/algorithms/prune_scores.py); "channel" and "head" remove whole channels or attention heads.
Reads and writes nothing.
"""

from __future__ import annotations

import re

from fxc.errors import OptionError

PATTERNS = ("unstructured", "channel", "head", "N:M (e.g. 2:4, 4:8)")


def parse_pattern(text: str, owner: str = "prune") -> tuple[str, tuple[int, int] | None]:
    """("unstructured" | "channel" | "head", None) or ("nm", (n, m)); OptionError for anything else."""
    if text in ("unstructured", "channel", "head"):
        return text, None
    match = re.fullmatch(r"(\d{1,4}):(\d{1,4})", text)
    if not match:
        raise OptionError(f"{owner}: option 'pattern' must be one of {', '.join(PATTERNS)}, got {text[:40]!r}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise OptionError(
            f"{owner}: option 'pattern' {text!r} needs 0 < N < M (N weights kept of every M); "
            "for 2:4 sparsity write pattern=2:4"
        )
    if m > 255:
        raise OptionError(f"{owner}: option 'pattern' {text!r}: M must be at most 255 (indices are uint8)")
    return "nm", (n, m)
