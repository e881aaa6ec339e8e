"""fxc: a compression compiler for PyTorch models.

    import fxc
    cm = fxc.compile(model, passes="fold-bn,dce", example_inputs=(x,))
    cm(x); cm.report(); cm.graph
    fxc.Pipeline.parse("prune{method=wanda,sparsity=0.5}")

The core (this package) holds the IR, the op set, the pass manager and the public API. Passes live
in `fxc.passes` and backends in `fxc.codegen`; the core finds both through entry-point registries and
never imports them. `fxc.passes` / `fxc.codegen` are importable as attributes for convenience.
"""

from __future__ import annotations

import importlib

from fxc.api.backend import Backend, CompiledModule
from fxc.api.budget import Budget
from fxc.api.compiler import compile
from fxc.api.serialize import load, save
from fxc.errors import (
    BackendError,
    CalibrationError,
    FormatError,
    FxcError,
    IRError,
    NodeError,
    OptionError,
    PassFailure,
    PipelineSyntaxError,
    TraceError,
    UnknownNameError,
)
from fxc.frontend.trace import canonicalize_dynamo_graph, lift_dynamo_graph, trace
from fxc.ir import ops  # noqa: F401  (registers torch.ops.fxc.*)
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.calibration import Calibration
from fxc.passmgr.instruments import Instrument, IRDump, NumericDrift, Progress, Timing
from fxc.passmgr.options import option
from fxc.passmgr.passbase import ALL, Analysis, Pass, PassResult
from fxc.passmgr.pipeline import Pipeline
from fxc.passmgr.registry import register

__version__ = "0.1.0"

__all__ = [
    "ALL",
    "Analysis",
    "AnalysisManager",
    "Backend",
    "BackendError",
    "Budget",
    "Calibration",
    "CalibrationError",
    "CompiledModule",
    "FormatError",
    "FxcError",
    "IRDump",
    "IRError",
    "Instrument",
    "NodeError",
    "NumericDrift",
    "OptionError",
    "Pass",
    "PassFailure",
    "PassResult",
    "Pipeline",
    "PipelineSyntaxError",
    "Progress",
    "Timing",
    "TraceError",
    "UnknownNameError",
    "canonicalize_dynamo_graph",
    "lift_dynamo_graph",
    "compile",
    "load",
    "option",
    "register",
    "save",
    "trace",
]


def __getattr__(name: str):
    """`fxc.passes` and `fxc.codegen` load on first use (the core does not depend on them)."""
    if name in ("passes", "codegen"):
        return importlib.import_module(f"fxc.{name}")
    raise AttributeError(f"module 'fxc' has no attribute {name!r}")
