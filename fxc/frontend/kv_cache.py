"""KV-cache capture: a Hugging Face causal LM traced as one step with its cache as graph inputs and outputs.

    use = wants_kv_cache(model, kv_cache=None, frontend="export", dynamic=True, example=batch)
    gm = capture(model, example)                      # gm.meta["fxc.kv_cache"]: the KVSignature

fxc.compile (kv_cache=None: auto) captures a transformers causal LM (a PreTrainedModel that can generate and whose
forward takes a cache: Llama, Mistral, Qwen2, GPT-2, OPT and the families built like them) as a *step module*
instead of the bare model: its inputs are input_ids [B, T], attention_mask [B, P+T], position_ids [B, T] and, per
layer, the past keys and values [B, Hkv, P, D]; its outputs are the logits [B, T, V] and, per layer, the keys and
values of the T new positions only (the contract: fxc/ir/kv_signature.py). Inside, a transformers `DynamicCache` is
filled from the past inputs (`cache.update(k, v, i)`), the model runs with `use_cache=True`, and the new positions
are sliced off the end of each layer's keys and values. B, T, P and the mask length are traced dynamic (from an
example of B, T >= 2 and P = 2: export fixes a dim of size 0 or 1), so one graph serves prefill (P = 0, T = the
prompt) and decoding (T = 1); the cache lives outside the graph, in the buffers the generate loop owns
(fxc/api/generate/cache.py). The module holds the model's own submodules under their own names, so weight names and
LayerInfo paths are the model's (`model.layers.0.self_attn.q_proj`), as in the cache-off capture.

Decisions:
- The cache is built without the config (every layer a plain `DynamicLayer`), so the graph always attends over
  the whole past it is given; sliding-window models (Mistral) get their window from the mask transformers builds
  from the config, which is what a full forward computes. (A `DynamicSlidingWindowLayer` would keep only the
  window's last keys, and the new positions could no longer be sliced off its end for a prompt longer than it.)
  Models with other cache layers (chunked, linear or hybrid attention, shared KV layers) or cross-attention are
  not captured this way.
- The layer count, kv heads and head dim come from one eager step of the model on a 1x1 input (whatever the config
  calls them); layers whose keys and values differ in shape are not captured.
- `cat(empty, past)`, which a lazily initialized cache layer leaves in the graph (a copy of the whole past per
  layer per step), is dropped: concatenating a 1-D empty tensor is the identity.
- Positions: position_ids are an input (the cache position comes from the cache length, P). Generation computes
  them from the mask as transformers' generate does (cumsum(mask) - 1, pad positions 0), so left padding works for
  every family (GPT-2 and OPT take position_ids too). A plain call without position_ids gets what the model computes
  itself without them, which eager runs on a left-padded batch tell apart (0..T-1, or OPT's count over the mask:
  KVSignature.positions; fxc/frontend/kv_inputs.py).
- kv_cache=None (auto) is on for such a model when the frontend is "export", dynamic=True and the example holds only
  input_ids, attention_mask and position_ids; when the capture itself fails, a KVCacheWarning says why and the
  model is traced without a cache. kv_cache=True raises instead; kv_cache=False is the cache-off capture.
Reads the model (a few eager runs on tiny inputs; its mode is restored); writes only the new graph; preserves the
model.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Any

import torch
import torch.fx

from fxc import ir
from fxc.errors import InputError, OptionError, TraceError
from fxc.frontend.export import export_canonical
from fxc.frontend.kv_inputs import bind_user_inputs, model_positions, positions_from_mask
from fxc.ir.kv_signature import KV_CACHE, POSITIONS, KVSignature

_CACHE_LAYERS = {"full_attention", "sliding_attention"}
_PAST_LENGTH = 2  # the past length traced (a size of 0 or 1 would be specialized)


class KVCacheWarning(UserWarning):
    """fxc.compile (kv_cache=None) could not capture a causal LM with its KV cache and traced it without one."""


def unsupported(model: Any) -> str | None:
    """Why `model` is not a causal LM fxc captures with a KV cache; None when it is one."""
    if "transformers" not in sys.modules:
        return "it is not a transformers model"
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return f"{type(model).__name__} is not a transformers PreTrainedModel"
    config = model.config
    if getattr(config, "is_encoder_decoder", False) or getattr(config, "add_cross_attention", False):
        return f"{type(model).__name__} has cross-attention (an encoder-decoder model)"
    can_generate = getattr(model, "can_generate", None)
    if not (callable(can_generate) and can_generate()):
        return f"{type(model).__name__} is not a generative model (no generate)"
    params = inspect.signature(model.forward).parameters
    missing = [name for name in ("input_ids", "attention_mask", "position_ids") if name not in params]
    if missing or not ({"cache", "past_key_values"} & set(params)):
        return f"{type(model).__name__}.forward takes no {', '.join(missing) or 'cache / past_key_values'}"
    layer_types = set(getattr(config, "layer_types", None) or ()) - _CACHE_LAYERS
    if layer_types:
        return f"its layer types {sorted(layer_types)} need a cache fxc does not capture (full and sliding only)"
    return None


def wants_kv_cache(model: Any, kv_cache: bool | None, frontend: str, dynamic: bool, example: Any) -> bool:
    """Whether fxc.compile captures `model` with its KV cache (see the module docstring)."""
    if kv_cache is not None and not isinstance(kv_cache, bool):
        raise OptionError(f"fxc.compile: kv_cache must be None (auto), True or False, got {kv_cache!r}")
    if kv_cache is False:
        return False
    reason = unsupported(model)
    if reason is None and frontend != "export":
        reason = f"the KV-cache capture uses frontend 'export', not '{frontend}'"
    if reason is None and not dynamic:
        reason = "the KV-cache step needs dynamic sizes (the past length grows); dynamic=False fixes them"
    if reason is None:
        try:
            bind_user_inputs(example, _positional(model))
        except InputError as error:
            reason = f"the example inputs do not fit the step: {error}"
    if reason is not None and kv_cache:
        raise OptionError(f"fxc.compile: kv_cache=True, but {reason}; compile with kv_cache=False (or None)")
    return reason is None


def capture(model: torch.nn.Module, example: Any) -> torch.fx.GraphModule:
    """The step graph of `model` traced on the user's `example` batch (input_ids, optional attention_mask /
    position_ids), with gm.meta["fxc.kv_cache"] set; TraceError naming the cause when it cannot be captured."""
    with _eval(model), torch.no_grad():
        signature = _probe(model, bind_user_inputs(example, _positional(model)))
        args = _example_step(model, signature, bind_user_inputs(example, signature.positional))
        leaves = 3 + 2 * signature.layers
        required = frozenset([(i, d) for i in range(3) for d in (0, 1)] + [(i, d) for i in range(3, leaves)
                                                                          for d in (0, 2)])
        static = frozenset((i, d) for i in range(3, leaves) for d in (1, 3))  # kv heads, head dim
        gm = export_canonical(KVCacheStep(model), args, {}, "export", True, required, static)
    _drop_empty_cats(gm)
    gm.meta[KV_CACHE] = signature
    problem = signature.mismatch(gm)
    if problem:
        raise TraceError(f"the KV-cache step of {type(model).__name__} traced to an unexpected graph: {problem}; "
                         "compile with kv_cache=False")
    return gm


class KVCacheStep(torch.nn.Module):
    """One step of a causal LM with its cache as inputs and outputs; holds the model's submodules by their names."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buffer in model.named_buffers(recurse=False):
            self.register_buffer(name, buffer, persistent=name not in model._non_persistent_buffers_set)
        object.__setattr__(self, "lm", model)  # not a submodule: its children are registered above
        self.cache_arg = _cache_arg(model)

    def forward(self, input_ids, attention_mask, position_ids, past):
        from transformers import DynamicCache

        cache = DynamicCache()
        for index, (keys, values) in enumerate(past):
            cache.update(keys, values, index)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=True, **{self.cache_arg: cache})
        new = input_ids.shape[1]
        present = tuple((layer.keys[:, :, -new:], layer.values[:, :, -new:]) for layer in cache.layers[: len(past)])
        return out.logits, present


def _cache_arg(model: torch.nn.Module) -> str:
    """The name the model's forward gives its cache (transformers 5.x: `cache`; before: `past_key_values`)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _positional(model: torch.nn.Module) -> tuple[str, ...]:
    """The names of the model's forward parameters that can be given by position (at most 16)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(model.forward).parameters.values()
    return tuple(p.name for p in params if p.kind in kinds)[:16]


def _probe(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> KVSignature:
    """The cache layout, from one eager step on the first token of the example."""
    from transformers import DynamicCache

    cache = DynamicCache()
    ids = inputs["input_ids"][:1, :1].long()
    try:
        model(input_ids=ids, use_cache=True, **{_cache_arg(model): cache})
    except Exception as error:
        raise TraceError(f"{type(model).__name__} did not run one step with a cache: {type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}") from error
    layers = list(getattr(cache, "layers", []))
    shapes = {(tuple(layer.keys.shape), tuple(layer.values.shape)) for layer in layers
              if getattr(layer, "keys", None) is not None and getattr(layer, "values", None) is not None}
    if not layers or len(shapes) != 1:
        raise TraceError(f"{type(model).__name__} did not fill the cache it was given with one key/value shape per "
                         f"layer (found {sorted(shapes)[:3]} over {len(layers)} layers)")
    keys, values = shapes.pop()
    if keys != values or len(keys) != 4:
        raise TraceError(f"{type(model).__name__} caches keys {list(keys)} and values {list(values)}; the KV-cache "
                         "step takes keys and values of one shape [B, heads, length, head_dim]")
    dtype = str(layers[0].keys.dtype).replace("torch.", "")
    return KVSignature(len(layers), keys[1], keys[3], dtype, _max_positions(model), *_special_ids(model),
                       positional=_positional(model), positions=_position_style(model, ids))


def _position_style(model: torch.nn.Module, ids: torch.Tensor) -> str:
    """Which positions the model computes without position_ids, from eager runs on a left-padded 2 x 3 batch: the
    first style whose explicit positions give the same logits."""
    ids = ids.reshape(1, 1).expand(2, 3).contiguous()
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]], device=ids.device)
    try:
        reference = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    except Exception as error:
        raise TraceError(f"{type(model).__name__} did not run on a left-padded batch: {type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}") from error
    for style in POSITIONS:
        try:
            given = model(input_ids=ids, attention_mask=mask, position_ids=model_positions(mask, style),
                          use_cache=False).logits
        except Exception:  # e.g. a learned position table has no row -1
            continue
        if torch.allclose(given, reference, rtol=1e-4, atol=1e-5):
            return style
    raise TraceError(f"{type(model).__name__} computes positions (without position_ids) in a way fxc does not "
                     f"reproduce ({', '.join(POSITIONS)} tried)")


def _example_step(model, signature: KVSignature, inputs: dict[str, torch.Tensor]) -> tuple:
    """(input_ids, attention_mask, position_ids, past) to trace with: the example's tokens with B and T widened to at
    least 2 and a past of _PAST_LENGTH positions."""
    ids = inputs["input_ids"].long()
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask.to(device=ids.device, dtype=torch.long)
    for dim in (0, 1):
        if ids.shape[dim] < 2:
            ids, mask = torch.cat([ids, ids], dim), torch.cat([mask, mask], dim)
    batch = ids.shape[0]
    mask = torch.cat([torch.ones(batch, _PAST_LENGTH, dtype=torch.long, device=ids.device), mask], dim=1)
    positions = positions_from_mask(mask)[:, -ids.shape[1]:]
    shape = (batch, signature.kv_heads, _PAST_LENGTH, signature.head_dim)
    past = tuple((torch.zeros(shape, dtype=signature.torch_dtype, device=ids.device),
                  torch.zeros(shape, dtype=signature.torch_dtype, device=ids.device)) for _ in range(signature.layers))
    return ids, mask, positions, past


def _drop_empty_cats(gm: torch.fx.GraphModule) -> None:
    """Remove the 1-D empty tensors concatenated to the past (identity; see the module docstring)."""
    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != ir.aten.cat.default:
            continue
        tensors = list(node.args[0])
        kept = [t for t in tensors if not _empty_1d(t)]
        if len(kept) == len(tensors) or not kept:
            continue
        if len(kept) == 1:
            node.replace_all_uses_with(kept[0])
            gm.graph.erase_node(node)
        else:
            node.args = (kept, *node.args[1:])
        changed = True
        for dropped in tensors:
            if dropped not in kept:
                _erase_chain(gm, dropped)
    if changed:
        ir.remove_unused_tensors(gm)
        gm.recompile()
        ir.verify(gm)


def _empty_1d(node: Any) -> bool:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return isinstance(value, torch.Tensor) and value.dim() == 1 and isinstance(value.shape[0], int) and (
        value.shape[0] == 0)


def _erase_chain(gm: torch.fx.GraphModule, node: torch.fx.Node) -> None:
    """Erase `node` and the nodes that only fed it, when nothing else uses them."""
    while isinstance(node, torch.fx.Node) and not node.users and node.op in ("call_function", "get_attr"):
        inputs = [a for a in node.all_input_nodes]
        gm.graph.erase_node(node)
        node = inputs[0] if len(inputs) == 1 else None


def _max_positions(model) -> int | None:
    value = getattr(model.config, "max_position_embeddings", None)
    return value if type(value) is int and value > 0 else None


def _special_ids(model) -> tuple[tuple[int, ...], int | None]:
    """(end-of-sequence ids, pad id) from the model's generation config (its config when it has none)."""
    source = getattr(model, "generation_config", None) or model.config
    eos = getattr(source, "eos_token_id", None)
    eos = [eos] if type(eos) is int else list(eos or [])
    pad = getattr(source, "pad_token_id", None)
    valid = [i for i in eos if type(i) is int and 0 <= i < 1 << 31]
    return tuple(valid), pad if type(pad) is int and 0 <= pad < 1 << 31 else None


@contextlib.contextmanager
def _eval(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
