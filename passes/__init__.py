"""fxc.passes: fxc's analyses and rewrite passes, one per file. Each is registered by name under
the `fxc.passes` / `fxc.analyses` entry-point groups (pyproject.toml) and importable from here."""

from fxc.passes.analyses.sensitivity import Sensitivity
from fxc.passes.rewrites.auto import Auto
from fxc.passes.rewrites.dce import DeadCodeElimination
from fxc.passes.rewrites.fold_bn import FoldBN
from fxc.passes.rewrites.low_rank import LowRank
from fxc.passes.rewrites.lower_sparse import LowerSparse
from fxc.passes.rewrites.mixed_precision import MixedPrecision
from fxc.passes.rewrites.prune import Prune
from fxc.passes.rewrites.quantize import Quantize
from fxc.passes.rewrites.smooth_quant import SmoothQuant

__all__ = [
    "Auto",
    "DeadCodeElimination",
    "FoldBN",
    "LowRank",
    "LowerSparse",
    "MixedPrecision",
    "Prune",
    "Quantize",
    "Sensitivity",
    "SmoothQuant",
]
