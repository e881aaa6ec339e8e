"""fxc.compile: trace, check calibration, run the pipeline, lower with a backend.

    cm = fxc.compile(model, passes="fold-bn,dce", example_inputs=(x,))
    cm(x); cm.report(); cm.graph

Steps: trace the model (fxc/frontend/trace.py; input dims dynamic where the model allows, a batch-1
example included, unless dynamic=False; a transformers causal LM as one step with its KV cache as inputs and
outputs, fxc/frontend/kv_cache.py, unless kv_cache=False) → for a step graph, turn the example, the calibration
batches and loss_fn's view of them into step inputs (the user's batches with an empty past,
fxc/frontend/kv_inputs.py), so every pass and analysis runs on the graph unchanged → record its dense size for the
report (fxc/api/report.py) and, for a transformers model, its config (`gm.meta["fxc.hf_config"]`: fxc.save keeps
it, fxc.export lays weights out by it) → check calibration batches against the graph → run the pipeline under the
AnalysisManager and instruments (fxc/passmgr/pipeline.py) → drop tensors nothing uses → lower with the backend
named by `backend` ("auto": triton for a model on a CUDA device when triton is installed, else torch).
Reads the model and the batches; writes only the new graph (its own copies of the weights) and the
compiled module; preserves the user's model, which is never modified. After the passes, a step graph must still
fit its record (an IRError otherwise: e.g. a pass that changed the number of kv heads).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import warnings
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
from fxc.errors import CalibrationError, InputError, IRError, OptionError, TraceError
from fxc.frontend.kv_cache import KVCacheWarning, wants_kv_cache
from fxc.frontend.kv_cache import capture as capture_kv_cache
from fxc.frontend.kv_inputs import step_batch, user_output
from fxc.frontend.trace import trace
from fxc.ir.kv_signature import KVSignature, signature_of
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
    kv_cache: bool | None = None,
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
    kv_cache: None (auto) captures a transformers causal LM as one step with its KV cache as inputs and outputs
    (fxc/frontend/kv_cache.py), which `cm.generate` runs; False traces it without a cache (one full-sequence
    forward); True requires the cache capture (OptionError / TraceError saying why it cannot be done).
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
    if _is_canonical(model):
        gm = copy.deepcopy(model)
        if kv_cache and signature_of(gm) is None:
            raise OptionError("fxc.compile: kv_cache=True needs the transformers model; this graph was captured "
                              "without a KV cache")
    elif wants_kv_cache(model, kv_cache, frontend, dynamic, example):
        gm = _capture_with_cache(model, example, kv_cache, frontend, dynamic)
    else:
        gm = trace(model, example, frontend=frontend, dynamic=dynamic)
    if (signature := signature_of(gm)) is not None:  # user batches become step inputs (an empty past)
        example, calib, loss_fn = _step_inputs(signature, example, calib, loss_fn)
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
    if signature is not None and (problem := signature.mismatch(gm)):
        raise IRError(f"fxc.compile: after the passes ({pipeline}) the KV-cache step graph no longer fits its record: "
                      f"{problem}; compile with kv_cache=False to compress the model without a cache")
    name = resolve_backend(backend, gm)
    runner = make_backend(name, backend_options).compile(gm, example)
    drift = probe.measure(gm) if probe else None
    return CompiledModule(gm, runner, pipeline, name, instruments, drift, backend_options=backend_options)


def _capture_with_cache(model, example, kv_cache: bool | None, frontend: str, dynamic: bool) -> torch.fx.GraphModule:
    """The KV-cache step graph; in auto mode (kv_cache=None) a capture failure warns and traces without a cache."""
    try:
        return capture_kv_cache(model, example)
    except TraceError as error:
        if kv_cache:
            raise
        warnings.warn(
            f"fxc.compile: {type(model).__name__} is traced without a KV cache (cm.generate will refuse it): {error}"
            "\n  pass kv_cache=False to trace it so without this warning", KVCacheWarning, stacklevel=3)
    return trace(model, example, frontend=frontend, dynamic=dynamic)


def _step_inputs(signature: KVSignature, example, calib: Calibration | None, loss_fn):
    """The example, the calibration batches and loss_fn for a step graph: each user batch with an empty past (a batch
    already in step form is kept), and loss_fn called as the user wrote it (the model's output, the user's batch)."""
    originals: dict[int, Any] = {}

    def convert(batch, where: str):
        args, _ = batch
        if len(args) == 4 and isinstance(args[3], tuple):  # (input_ids, attention_mask, position_ids, past)
            return batch
        try:
            step = step_batch(batch, signature)
        except InputError as error:
            raise CalibrationError(f"{where}: {error}") from None
        originals[id(step[0][0])] = batch
        return step

    example = convert(example, "example_inputs")
    if calib is not None:
        calib = Calibration([convert(b, f"calibration batch {i}") for i, b in enumerate(calib.batches)])
    if loss_fn is not None:
        user_loss = loss_fn

        def loss_fn(outputs, batch):
            return user_loss(user_output(outputs[0]), originals.get(id(batch[0][0]), batch))

    return example, calib, loss_fn


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
