"""fxc: a compression compiler for PyTorch models.

    import fxc
    cm = fxc.compile(model, passes="fold-bn,dce", example_inputs=(x,))
    cm(x); cm.report(); cm.graph
    cm.generate(input_ids, max_new_tokens=32)     # a transformers causal LM: decoding with its KV cache
    fxc.Pipeline.parse("prune{method=wanda,sparsity=0.5}")

The core (this package) holds the IR, the op set, the pass manager and the public API. Passes live
in `fxc.passes` and backends in `fxc.codegen`; the core finds both through entry-point registries and
never imports them. Any subpackage loads on first attribute access (`import fxc; fxc.passes.Prune`),
found by its import spec, so this module names none of them. Importing it registers the op set
(torch.ops.fxc.*) and reads or writes nothing else.
"""

from __future__ import annotations

import importlib
import importlib.util

from fxc.api.backend import Backend, CompiledModule
from fxc.api.budget import Budget
from fxc.api.compiler import compile
from fxc.api.export import export
from fxc.api.serialize import load, save
from fxc.errors import (
    BackendError,
    CalibrationError,
    ExportError,
    FormatError,
    FxcError,
    GenerateError,
    InputError,
    IRError,
    MissingCalibrationError,
    NodeError,
    OptionError,
    PassFailure,
    PipelineSyntaxError,
    TraceError,
    UnknownNameError,
)
from fxc.frontend.dynamo import canonicalize_dynamo_graph, lift_dynamo_graph
from fxc.frontend.kv_cache import KVCacheWarning
from fxc.frontend.size_one import FixedBatchWarning
from fxc.frontend.trace import trace
from fxc.ir import ops as _ops  # noqa: F401  (registers torch.ops.fxc.*)
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.calibration import Calibration
from fxc.passmgr.instruments import Instrument, IRDump, NumericDrift, Progress, Timing
from fxc.passmgr.options import option
from fxc.passmgr.passbase import ALL, Analysis, Pass, PassResult
from fxc.passmgr.pipeline import Pipeline
from fxc.passmgr.registry import register
from fxc.version import __version__ as __version__

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
    "ExportError",
    "FixedBatchWarning",
    "FormatError",
    "FxcError",
    "GenerateError",
    "IRDump",
    "IRError",
    "InputError",
    "KVCacheWarning",
    "MissingCalibrationError",
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
    "export",
    "load",
    "option",
    "register",
    "save",
    "trace",
]


def __getattr__(name: str):
    """A subpackage not imported yet loads on first use: `fxc.passes`, `fxc.codegen`, or any other
    that is installed (the core does not depend on them, so it does not import them up front)."""
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
