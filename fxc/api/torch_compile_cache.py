"""Compiled graphs reused across dynamo recompiles: fxc/api/torch_compile.py asks here before running passes.

Dynamo hands the backend a graph it has compiled before when a guard on a Python value fails, when the
same module is torch.compile'd again with other options (a new instrument, another on_compile), or
after torch._dynamo.reset(). Running the passes again (calibration, Hessians, GPTQ) would give the same
result, so a graph whose key matches an earlier compile gets that CompiledModule back.

The key is everything a compiled result is computed from:
- the graph: the code of the lifted GraphModule and of its GraphModule children (ops, constants,
  structure, get_attr names); any other child module by type, `extra_repr` and training flag; the
  dtype, device and shape of each user input (export specializes sizes 0 and 1, so shapes count);
- the settings: the pipeline (pass classes and options, compared as the frozen pass objects), the fxc
  backend name and its options;
- every tensor the result depends on: the weights and constants the graph reads and the graph's
  calibration batches, each by name, dtype, shape and the SHA-256 of its contents. Contents, not
  version counters: writes through `.data` (common in weight init and hand-written updates) bypass them.
  Hashing reads each tensor once per compile, a single pass over the weights, small next to the passes.
Instruments and on_compile are not in the key: they observe. A hit runs no pass, so they see no pass.
Anything that cannot be keyed (an unhashable pass option or backend option, a get_attr that is not a
tensor or a module, a tensor without readable contents) makes the graph uncacheable: it compiles.

Memory: a slot is addressed by the graph, the settings and the *identity* of the tensors, and holds one
entry (the digests and the compiled module); a changed weight replaces it. A weakref finalizer on each
tensor drops the slot when that tensor is freed, so no compressed copy of a model that is gone stays
alive. `clear()` empties the table. Reads tensors; writes only its own table.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree

from fxc.api.backend import CompiledModule


@dataclass(frozen=True)
class GraphKey:
    slot: tuple  # graph, settings, and (name, id) of each tensor: where the entry lives
    digests: tuple  # (name, dtype, shape, SHA-256) of each tensor: what must match for a hit
    tensors: tuple[torch.Tensor, ...]  # the tensors themselves, for the finalizers (not kept in the table)


@dataclass
class _Entry:
    digests: tuple
    compiled: CompiledModule


_SLOTS: dict[tuple, _Entry] = {}


def graph_key(
    gm: torch.fx.GraphModule, inputs: list[torch.Tensor], settings: tuple, calibration: Any
) -> GraphKey | None:
    """The cache key of compiling `gm` (user inputs like `inputs`) with `settings` (hashable: pipeline,
    backend, frozen backend options) and `calibration` (a Calibration or None); None: do not cache."""
    tensors = _graph_tensors(gm)
    if tensors is None:
        return None
    leaves = pytree.tree_leaves(calibration.batches) if calibration is not None else []
    values = []
    for index, leaf in enumerate(leaves):
        if isinstance(leaf, torch.Tensor):
            tensors.append((f"calibration[{index}]", leaf))
        else:
            values.append((index, type(leaf).__qualname__, leaf))
    described = [_describe(name, tensor) for name, tensor in tensors]
    if any(d is None for d in described):
        return None
    specs = tuple((t.dtype, str(t.device), tuple(t.shape)) for t in inputs)
    slot = (_graph_text(gm), specs, settings, tuple(values), tuple((name, id(t)) for name, t in tensors))
    try:
        hash(slot)
    except TypeError:
        return None
    return GraphKey(slot, tuple(described), tuple(t for _, t in tensors))


def lookup(key: GraphKey | None) -> CompiledModule | None:
    """The module compiled earlier under `key`, or None."""
    if key is None:
        return None
    entry = _SLOTS.get(key.slot)
    return entry.compiled if entry is not None and entry.digests == key.digests else None


def store(key: GraphKey | None, compiled: CompiledModule) -> None:
    if key is None:
        return
    if key.slot not in _SLOTS:  # a new slot: drop it when any of its tensors is freed (their ids may be reused)
        for tensor in {id(t): t for t in key.tensors}.values():
            weakref.finalize(tensor, _SLOTS.pop, key.slot, None).atexit = False
    _SLOTS[key.slot] = _Entry(key.digests, compiled)


def clear() -> None:
    """Forget every compiled graph (the next compile of each runs its passes)."""
    _SLOTS.clear()


def size() -> int:
    return len(_SLOTS)


def freeze(value: Any) -> Hashable:
    """A hashable stand-in for an option value (dicts and lists become sorted tuples); TypeError if none."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(freeze(v) for v in value))
    hash(value)  # raises TypeError for an unhashable value
    return (type(value).__qualname__, value)


def _graph_tensors(gm: torch.fx.GraphModule) -> list[tuple[str, torch.Tensor]] | None:
    """Every tensor `gm` reads: parameters, buffers and tensor attributes named by get_attr nodes."""
    found = dict(gm.named_parameters(remove_duplicate=False)) | dict(gm.named_buffers(remove_duplicate=False))
    for prefix, module in gm.named_modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.find_nodes(op="get_attr"):
            value: Any = module
            for part in str(node.target).split("."):
                value = getattr(value, part, None)
            if isinstance(value, torch.Tensor):
                found[f"{prefix}.{node.target}" if prefix else str(node.target)] = value
            elif not isinstance(value, torch.nn.Module):
                return None
    return sorted(found.items(), key=lambda item: item[0])


def _graph_text(gm: torch.fx.GraphModule) -> tuple:
    """The code of every GraphModule in `gm`; other modules by type, settings and training flag."""
    parts = []
    for name, module in gm.named_modules():
        if isinstance(module, torch.fx.GraphModule):
            parts.append((name, "graph", module.code))
        else:
            kind = f"{type(module).__module__}.{type(module).__qualname__}"
            parts.append((name, kind, module.extra_repr(), module.training))
    return tuple(parts)


def _describe(name: str, tensor: torch.Tensor) -> tuple | None:
    """(name, dtype, shape, SHA-256 of the contents); None for a tensor whose bytes cannot be read."""
    try:
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    except Exception:  # sparse, meta, fake or quantized tensors: not cached
        return None
    return name, tensor.dtype, tuple(tensor.shape), str(tensor.device), hashlib.sha256(data).hexdigest()
