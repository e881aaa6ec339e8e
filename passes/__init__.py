"""fxc.passes: fxc's analyses and rewrite passes, and the algorithms they run on.

    analyses/    one registered analysis per module (`fxc.analyses` entry points): act-stats, hessian,
                 sensitivity, cost, output-metric, method-error
    rewrites/    one registered pass per module (`fxc.passes` entry points): dce, fold-bn, prune,
                 lower-sparse, quantize, smooth-quant, mixed-precision, auto, low-rank
    algorithms/  the math the passes call (GPTQ, SparseGPT, the dense-model fit target, the kept-weight
                 re-solve, Gram matrices and damped Hessians, low-rank math, the budget solver): tensors in,
                 tensors out, no pass classes
    prune/, quantize/, low_rank/, auto/    the helpers of the pass of that name (scores and structured
                 pruning; quantization schemes; the split's graph surgery; candidates, planning, damage,
                 the joint check, carrying a plan out, the printed plan)
    training/    compression-aware training (QAT, gradual pruning): runs in the user's training loop, not a pass
    select.py    which layers a pass touches (`layers` / `skip` patterns)
    opsets.py    the ATen op sets several passes walk through (value copies, pointwise ops)

Each registered module's docstring says what it reads, writes and preserves. Passes meet backends only
in the core's op set (fxc/ir/ops.py): nothing here imports fxc.codegen. Every registered class is found
by name through pyproject.toml's entry points and is importable from here (`fxc.passes.Prune`).
"""

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
