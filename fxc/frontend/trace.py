"""fxc.trace: capture a model into the canonical IR (see fxc/ir/__init__.py).

    fxc.trace(model, example_inputs)                        # "export" (default): torch.export
    fxc.trace(model, example_inputs, frontend="symbolic")   # torch.fx.symbolic_trace first
    fxc.trace(model, example_inputs, frontend="dynamo")     # the graph torch.compile hands a backend

The dynamo capture and the lifting of a torch.compile graph are fxc/frontend/dynamo.py. Every path
ends in fxc/frontend/export.py (`torch.export.export(..., strict=False).module()`, then
canonicalization), so all three give the same canonical form: ATen ops, weights as get_attr,
meta["val"] on every node, LayerInfo on each layer.
Tensor input dims are traced as `Dim.AUTO` (dynamic where the model allows), so calibration and
inference can use other batch sizes and sequence lengths. torch.export would fix every dim whose example
size is 1 (one example of batch 1: the graph takes only batch 1), so size-1 dims are traced at size 2
and must come out dynamic; where the model cannot, they stay static, and a batch dim that does is
reported with a FixedBatchWarning naming the fix (fxc/frontend/size_one.py). `dynamic=False` traces
every dim at its example size. The model is traced in eval mode (its
mode is restored; Hugging Face models with `use_cache` off) and the graph gets its own copy of
every weight, so passes never touch the user's model. Reads the model; writes nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.fx

from fxc.errors import TraceError
from fxc.frontend import size_one
from fxc.frontend.dynamo import dynamo_capture, match_signature, restore_output_structure
from fxc.frontend.export import export_canonical, first_line, user_frame
from fxc.passmgr.calibration import as_batch

FRONTENDS = ("export", "symbolic", "dynamo")


def trace(
    model: torch.nn.Module, example_inputs: Any, frontend: str = "export", dynamic: bool = True
) -> torch.fx.GraphModule:
    """Capture `model` called on `example_inputs` (a tensor, tuple, or dict of keyword inputs).

    dynamic: trace tensor input dims as dynamic where the model allows (size-1 dims are traced at size 2,
    fxc/frontend/size_one.py); False traces every dim at its example size."""
    if frontend not in FRONTENDS:
        raise TraceError(f"unknown frontend '{frontend}'; choose one of {', '.join(FRONTENDS)}")
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"fxc traces an nn.Module, got {type(model).__name__}; wrap functions in a Module")
    if example_inputs is None:
        raise TraceError("tracing needs example_inputs: a batch the model accepts, e.g. (torch.randn(1, 16),)")
    args, kwargs = as_batch(example_inputs)
    tries = size_one.attempts(args, kwargs) if dynamic else [size_one.Attempt(args, kwargs)]
    with _eval_mode(model):
        symbolic = _symbolic(model) if frontend == "symbolic" else None
        failure = None
        for attempt in tries:
            try:
                gm = _capture(model, symbolic, attempt, frontend, dynamic)
            except Exception as error:  # a widened attempt may fail anywhere the model runs; the last one raises
                if attempt is tries[-1]:
                    raise
                failure = failure or error  # the widest attempt's reason is the one to report
                continue
            if failure is not None and not isinstance(model, torch.fx.GraphModule):
                # a captured graph (torch.compile's) had its sizes fixed by whoever captured it: no advice to give
                cause = failure.__cause__ if isinstance(failure, TraceError) and failure.__cause__ else failure
                reason = f"{type(cause).__name__}: {first_line(cause)}".rstrip(": ") + user_frame(cause, ", ")
                size_one.warn_fixed(size_one.fixed_leading_dims(args, kwargs, attempt), type(model).__name__, reason)
            return gm
    raise AssertionError("unreachable: the last attempt returns or raises")


def _capture(
    model: torch.nn.Module, symbolic: torch.fx.GraphModule | None, attempt: size_one.Attempt, frontend: str, dynamic
) -> torch.fx.GraphModule:
    """One trace of `model` on the attempt's inputs, through `frontend`."""
    args, kwargs = attempt.args, attempt.kwargs
    if frontend == "export":
        source = model
    elif frontend == "symbolic":
        source = symbolic
    else:
        lifted = dynamo_capture(model, args, kwargs)
        match_signature(lifted, model, args, kwargs)
        source = lifted.gm
    gm = export_canonical(source, args, kwargs, frontend, dynamic, attempt.dims)
    if frontend == "dynamo":
        restore_output_structure(gm, model, args, kwargs)
    return gm


def _symbolic(model: torch.nn.Module) -> torch.fx.GraphModule:
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as error:
        raise TraceError(
            f"frontend 'symbolic' could not trace {type(model).__name__}: {type(error).__name__}: "
            f"{first_line(error)}\n  try frontend='export' (torch.export handles Hugging Face models "
            "and most Python control flow on shapes)"
        ) from error


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    """Eval mode, and for Hugging Face models no KV cache (the graph is one full-sequence forward)."""
    was_training = model.training
    config = getattr(model, "config", None)
    had_cache = getattr(config, "use_cache", None)
    model.eval()
    if had_cache:
        config.use_cache = False
    try:
        yield
    finally:
        model.train(was_training)
        if had_cache:
            config.use_cache = had_cache
