"""What users give a causal LM, turned into the inputs of its KV-cache step graph, and the step's logits back.

    inputs = bind_user_inputs(((ids,), {"attention_mask": m}), positional)   # {"input_ids", "attention_mask", ...}
    args, kwargs = step_batch(batch, signature)     # (input_ids, attention_mask, position_ids, empty past), {}
    out = user_output(logits)                       # CausalLMOutputWithPast(logits=...), as the model returns

Users (and calibration batches, and example_inputs) keep giving what the model takes: input_ids [B, T] and
optionally attention_mask [B, T] and position_ids [B, T], as a tensor, a tuple (bound to the model's own forward
parameter names, `KVSignature.positional`) or a dict. A step batch is that input with an empty past (P = 0), the
mask and ids as int64, and, when position_ids are not given, the positions the model itself computes without them
(`KVSignature.positions`: 0..T-1 for most families, counted over the mask for OPT), so `cm(ids, mask)` returns what
`model(ids, mask)` returns. Generation computes its own positions from the mask (`positions_from_mask`:
cumsum(mask) - 1, pad positions 0, as transformers' generate does, so left padding gives every row the positions
it has alone). Anything else
given (labels, inputs_embeds, a cache) is an InputError naming it and the fix (compile with kv_cache=False).
Reads its arguments; writes only new tensors (the caller's tensors are not modified).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from fxc.errors import CalibrationError, InputError
from fxc.ir.kv_signature import KVSignature
from fxc.passmgr.calibration import Batch, as_batch

STEP_INPUTS = ("input_ids", "attention_mask", "position_ids")


class LogitsOutput(NamedTuple):
    """A step's user-facing output where transformers is not installed: `.logits`, or `[0]`."""

    logits: torch.Tensor


def bind_user_inputs(batch: Any, positional: tuple[str, ...]) -> dict[str, torch.Tensor | None]:
    """{"input_ids", "attention_mask", "position_ids"} of one batch (the last two may be None), checked; an
    InputError names the input (its index among the model's parameters) and both shapes, as CompiledModule's
    checks of other graphs do."""
    try:
        args, kwargs = as_batch(batch)
    except CalibrationError as error:
        raise InputError(str(error)) from None
    signature = f"({', '.join(STEP_INPUTS)})"
    if len(args) > len(positional):
        raise InputError(f"the model takes at most {len(positional)} inputs by position ({', '.join(positional)}); "
                         f"got {len(args)}")
    given = dict(zip(positional, args))
    for name, value in kwargs.items():
        if name in given:
            raise InputError(f"input {name!r} is given twice, by position and by name")
        given[name] = value
    extra = [name for name, value in given.items() if name not in STEP_INPUTS and value is not None]
    if extra:
        known = [name for name in extra if name in positional]
        if not known:
            raise InputError(f"the compiled model has no input {extra[0]!r}; it was compiled for {signature}")
        raise InputError(f"the KV-cache step takes {', '.join(STEP_INPUTS)}; got {', '.join(map(repr, known))}: "
                         "give only those, or compile with kv_cache=False to trace the model on these inputs")

    def where(name: str) -> str:
        return f"input {positional.index(name) if name in positional else STEP_INPUTS.index(name)} ({name})"

    ids = given.get("input_ids")
    if ids is None:
        raise InputError(f"{where('input_ids')} is missing; the model was compiled for {signature}")
    if not isinstance(ids, torch.Tensor):
        raise InputError(f"{where('input_ids')} is a {type(ids).__name__}; the model was compiled for a tensor [*, *]")
    if ids.dim() != 2:
        raise InputError(f"{where('input_ids')} has shape {list(ids.shape)}; the model was compiled for [*, *] "
                         "(rank 2; for one sequence, ids[None])")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise InputError(f"{where('input_ids')} is {ids.dtype}; the model was compiled for torch.int64 [*, *]")
    for name in ("attention_mask", "position_ids"):
        value = given.get(name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise InputError(f"{where(name)} is a {type(value).__name__}; the model was compiled for a tensor [*, *]")
        if value.dim() != 2:
            raise InputError(f"{where(name)} has shape {list(value.shape)}; the model was compiled for [*, *] "
                             "(rank 2)")
        for d in (0, 1):
            free = name == "position_ids" and d == 0 and value.shape[0] == 1  # one row of positions for all
            if value.shape[d] != ids.shape[d] and not free:
                raise InputError(
                    f"{where(name)} has shape {list(value.shape)}, dim {d} = {value.shape[d]}; {where('input_ids')} "
                    f"has dim {d} = {ids.shape[d]}, and the model was traced with the two equal"
                )
    return {name: given.get(name) for name in STEP_INPUTS}


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Each token's position counted over the mask's ones: cumsum(mask) - 1, with pad (0) columns at 0 (what
    transformers' generate gives every family that takes position_ids)."""
    mask = mask.long()
    return ((mask.cumsum(-1) - 1) * mask).clamp(min=0)


def model_positions(mask: torch.Tensor, style: str) -> torch.Tensor:
    """The positions the model computes itself when called without position_ids (KVSignature.positions)."""
    mask = mask.long()
    if style == "mask":
        return mask.cumsum(-1) * mask - 1
    return torch.arange(mask.shape[1], device=mask.device).expand(mask.shape).contiguous()


def step_batch(batch: Any, signature: KVSignature) -> Batch:
    """One user batch as the step graph's inputs with an empty past."""
    inputs = bind_user_inputs(batch, signature.positional)
    ids = inputs["input_ids"].long()
    mask = inputs["attention_mask"]
    mask = torch.ones_like(ids) if mask is None else mask.to(device=ids.device, dtype=torch.long)
    positions = inputs["position_ids"]
    if positions is None:
        positions = model_positions(mask, signature.positions)
    else:
        positions = positions.to(ids.device).long().expand(ids.shape).contiguous()
    return (ids, mask, positions, signature.empty_past(ids.shape[0], ids.device)), {}


def user_output(logits: torch.Tensor) -> Any:
    """The logits as the transformers model returns them (CausalLMOutputWithPast, without a cache)."""
    try:
        from transformers.modeling_outputs import CausalLMOutputWithPast
    except ImportError:
        return LogitsOutput(logits)
    return CausalLMOutputWithPast(logits=logits)
