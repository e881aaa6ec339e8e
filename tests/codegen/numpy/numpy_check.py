"""Shared checks of the numpy backend tests: compile one traced graph with the torch backend (the
reference ops as is) and with the numpy backend, run both and compare every output leaf: floats
within a relative error (max |a - b| / max |b|), integers and booleans exactly; and list the torch
functions a call runs (the numpy backend's run path calls none)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.utils._pytree as pytree

import fxc
from fxc.passmgr.calibration import as_batch

FP32_RTOL = 1e-5


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().item() if expected.numel() else 0.0
    return (actual - expected).abs().max().item() / max(scale, 1e-30) if expected.numel() else 0.0


def torch_calls(run: Callable[[], Any]) -> tuple[list[str], Any]:
    """(the modules of the torch functions `run()` called, Python or C, in call order; its result)."""
    calls = []

    def watch(frame, event, arg):
        module = (getattr(arg, "__module__", None) or "") if event == "c_call" else frame.f_globals.get("__name__", "")
        if event in ("call", "c_call") and module.startswith("torch"):
            calls.append(module)

    sys.setprofile(watch)
    try:
        result = run()
    finally:
        sys.setprofile(None)
    return calls, result


def compile_both(model, example, passes=None):
    gm = fxc.trace(model, example) if not isinstance(model, torch.fx.GraphModule) else model
    reference = fxc.compile(gm, passes=passes, example_inputs=example, backend="torch", backend_options={"fast": False})
    numpy_module = fxc.compile(reference.graph, example_inputs=example, backend="numpy")
    return reference, numpy_module


def assert_close_outputs(actual, expected, rtol: float = FP32_RTOL) -> float:
    """Every leaf of `actual` matches `expected`; returns the worst float relative error."""
    got, spec = pytree.tree_flatten(actual)
    want, want_spec = pytree.tree_flatten(expected)
    assert spec == want_spec, f"output structure differs: {spec} vs {want_spec}"
    worst = 0.0
    for a, b in zip(got, want):
        if not isinstance(b, torch.Tensor):
            assert a == b
            continue
        assert isinstance(a, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, (a, b)
        if b.is_floating_point():
            assert torch.isnan(a).equal(torch.isnan(b))
            error = relative_error(torch.nan_to_num(a), torch.nan_to_num(b))
            assert error <= rtol, f"relative error {error:.2e} > {rtol:.0e}"
            worst = max(worst, error)
        else:
            assert torch.equal(a, b)
    return worst


def check_model(model, example, other_inputs=(), passes=None, rtol: float = FP32_RTOL) -> float:
    """numpy backend == torch backend on `example` and on each of `other_inputs` (other shapes)."""
    reference, numpy_module = compile_both(model, example, passes)
    worst = 0.0
    for inputs in (example, *other_inputs):
        args, kwargs = as_batch(inputs)
        worst = max(worst, assert_close_outputs(numpy_module(*args, **kwargs), reference(*args, **kwargs), rtol))
    return worst
