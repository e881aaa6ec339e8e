"""fxc.passes: fxc's analyses and rewrite passes, and the algorithms they run on.

The folders, from the bottom layer up (a module imports from its own folder and from the lines above its
own, never from a line below or a folder beside it on the same line; tests/test_layout.py checks it):

    select.py, aten_groups.py
                which layers a pass touches (`layers` / `skip` patterns); groups of ATen ops several
                passes walk through (value copies, pointwise ops)
    algorithms/ the math the passes call (GPTQ, SparseGPT, the dense-model fit target, the kept-weight
                re-solve, pruning scores and masks, Gram matrices and damped Hessians, layer inputs and
                their Hessians over calibration, low-rank math, the budget solver): tensors and
                calibration runners in, tensors out, no pass classes
    specs/      the vocabulary analyses, planners and rewrites share: candidate specs and whether the
                passes can carry one out, quantization schemes, pruning patterns
    analyses/   one registered analysis per module (`fxc.analyses` entry points): act-stats, hessian,
                sensitivity, cost, output-metric, method-error
    prune/, low_rank/, auto/
                the helpers of the pass of that name (structured channel and head pruning; the split's
                graph surgery; each layer's options and the exact solve, their damage, the joint check,
                carrying a plan out, the printed plan)
    rewrites/   one registered pass per module (`fxc.passes` entry points): dce, fold-bn, prune,
                lower-sparse, quantize, smooth-quant, mixed-precision, auto, low-rank
    training/   compression-aware training (QAT, gradual pruning): runs in the user's training loop, not a pass

Each registered module's docstring says what it reads, writes and preserves. Passes meet backends only
in the core's op set (fxc/ir/ops.py): nothing here imports fxc.codegen. Every registered pass and
analysis class is found by name through pyproject.toml's entry points and is importable from here
(`fxc.passes.Prune`, `fxc.passes.Hessian`).
"""

from fxc.passes.analyses.act_stats import ActStats
from fxc.passes.analyses.cost import Cost
from fxc.passes.analyses.hessian import Hessian
from fxc.passes.analyses.method_error import MethodError
from fxc.passes.analyses.output_metric import OutputMetric
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
    "ActStats",
    "Auto",
    "Cost",
    "DeadCodeElimination",
    "FoldBN",
    "Hessian",
    "LowRank",
    "LowerSparse",
    "MethodError",
    "MixedPrecision",
    "OutputMetric",
    "Prune",
    "Quantize",
    "Sensitivity",
    "SmoothQuant",
]
