"""fxc.compile: trace, check calibration, run the pipeline, lower with a backend.

    cm = fxc.compile(model, passes="fold-bn,dce", example_inputs=(x,))
    cm(x); cm.report(); cm.graph

Steps: trace the model (fxc/frontend/trace.py; input dims dynamic where the model allows, a batch-1
example included, unless dynamic=False) → record its dense size for the report (fxc/api/report.py) and, for a
transformers model, its config (`gm.meta["fxc.hf_config"]`: fxc.save keeps it, fxc.export lays weights out by it) →
check calibration batches against the graph → run the pipeline under the AnalysisManager and instruments
(fxc/passmgr/pipeline.py) → drop tensors nothing uses → lower with the backend named by `backend`
("auto": triton for a model on a CUDA device when triton is installed, else torch).
Reads the model and the batches; writes only the new graph (its own copies of the weights) and the
compiled module; preserves the user's model, which is never modified.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree

from fxc import ir
from fxc.api.backend import CompiledModule, make_backend
from fxc.api.budget import Budget
from fxc.api.drift import DriftProbe
from fxc.api.manifest import check_hf_config
from fxc.api.report import record_dense_bytes
from fxc.errors import OptionError, TraceError
from fxc.frontend.trace import trace
from fxc.passmgr import registry
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.calibration import Calibration, as_batch
from fxc.passmgr.pipeline import Entry, Pipeline

HF_CONFIG = "fxc.hf_config"  # key in GraphModule.meta: the Hugging Face config (a JSON dict) of the model compiled


def compile(
    model: torch.nn.Module | torch.fx.GraphModule,
    passes: Any = None,
    example_inputs: Any = None,
    calibration: Iterable[Any] | None = None,
    backend: str = "auto",
    frontend: str = "export",
    instruments: Iterable[Any] = (),
    loss_fn: Callable[..., torch.Tensor] | None = None,
    backend_options: dict[str, Any] | None = None,
    target: Budget | None = None,
    dynamic: bool = True,
) -> CompiledModule:
    """Compress `model` with `passes` (pipeline text, pass objects, or a Pipeline) and lower it.

    example_inputs: one batch the model accepts (tensor, tuple or dict of keyword inputs); defaults
    to the first calibration batch. calibration: an iterable of such batches, for passes that
    calibrate. loss_fn(outputs, batch) -> scalar, for loss-aware analyses (Hutchinson sensitivity).
    target: an fxc.Budget; appends the pass registered for it (entry-point group `fxc.targets`, under
    the target's `name`: budgeted per-layer compression) after `passes`.
    dynamic: trace input dims as dynamic where the model allows, so the compiled model takes other batch
    sizes and sequence lengths than example_inputs' (an example of batch 1 included); False traces every
    dim at its example size (fxc.trace).
    """
    pipeline = Pipeline.of(passes)  # parse first: a typo fails before any tracing work
    if target is not None:
        if not isinstance(target, Budget):
            raise OptionError(f"fxc.compile: target must be an fxc.Budget, got {type(target).__name__}")
        carry_out = registry.lookup("fxc.targets", target.name)(**target.pass_options())
        pipeline = Pipeline((*pipeline.entries, Entry(carry_out)))
    calib = Calibration.of(calibration)
    if example_inputs is None:
        if calib is None:
            raise TraceError("fxc.compile needs example_inputs (or calibration, whose first batch is used)")
        example_inputs = calib.batches[0]
    example = as_batch(example_inputs)
    gm = copy.deepcopy(model) if _is_canonical(model) else trace(model, example, frontend=frontend, dynamic=dynamic)
    record_dense_bytes(gm)  # the report's "dense" size is the model's before any pass
    if (config := hf_config_of(model)) is not None:
        gm.meta[HF_CONFIG] = config
    if calib is not None:
        calib.check_against(gm)
    instruments = tuple(instruments)
    am = AnalysisManager(gm, calib, example, loss_fn, instruments)
    for instrument in instruments:
        instrument.start(gm, am)
    probe = DriftProbe.capture(gm, calib.batches[0]) if calib is not None else None  # dense layer outputs
    try:
        pipeline.run(gm, am, instruments)
    finally:  # even when a pass fails: e.g. fxc.Progress stops its live display before the traceback prints
        for instrument in instruments:
            if hasattr(instrument, "finish"):
                instrument.finish()
    ir.remove_unused_tensors(gm)
    name = resolve_backend(backend, gm)
    runner = make_backend(name, backend_options).compile(gm, example)
    drift = probe.measure(gm) if probe else None
    return CompiledModule(gm, runner, pipeline, name, instruments, drift, backend_options=backend_options)


def resolve_backend(backend: str, gm: torch.fx.GraphModule) -> str:
    if backend != "auto":
        return backend
    on_cuda = any(t.is_cuda for t in pytree.tree_leaves(list(gm.parameters()) + list(gm.buffers())))
    if on_cuda and importlib.util.find_spec("triton") and "triton" in registry.names("fxc.backends"):
        return "triton"
    return "torch"


def hf_config_of(model: Any) -> dict | None:
    """A transformers model's config as JSON values (`config.to_json_string`), None for any other model or a config
    that manifest.check_hf_config refuses (fxc.save could not keep it)."""
    to_json = getattr(getattr(model, "config", None), "to_json_string", None)
    if not callable(to_json):
        return None
    try:
        config = json.loads(to_json(use_diff=False))
    except Exception:  # a config that does not serialize is no config to keep
        return None
    if isinstance(config, dict) and not config.get("architectures"):  # as save_pretrained records it
        config["architectures"] = [type(model).__name__]
    return config if check_hf_config(config) is None else None


def _is_canonical(model: Any) -> bool:
    """A GraphModule that fxc.trace produced (or that already passed verify) is used as is."""
    if not isinstance(model, torch.fx.GraphModule):
        return False
    try:
        ir.verify(model)
    except Exception:
        return False
    return True
