"""fxc.passes: fxc's analyses and rewrite passes, one per file. Each is registered by name under
the `fxc.passes` / `fxc.analyses` entry-point groups (pyproject.toml) and importable from here."""

from fxc.passes.auto import Auto
from fxc.passes.dce import DeadCodeElimination
from fxc.passes.fold_bn import FoldBN
from fxc.passes.low_rank import LowRank
from fxc.passes.lower_sparse import LowerSparse
from fxc.passes.mixed_precision import MixedPrecision
from fxc.passes.prune import Prune
from fxc.passes.quantize import Quantize
from fxc.passes.sensitivity import Sensitivity
from fxc.passes.smooth_quant import SmoothQuant

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
