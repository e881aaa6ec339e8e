"""fxc.passes: fxc's analyses and rewrite passes, one per file. Each is registered by name under
the `fxc.passes` / `fxc.analyses` entry-point groups (pyproject.toml) and importable from here."""

from fxc.passes.dce import DeadCodeElimination
from fxc.passes.fold_bn import FoldBN

__all__ = ["DeadCodeElimination", "FoldBN"]
