"""cm.generate: continue token ids with a causal LM compiled with its KV cache, as transformers' generate does.

    cm = fxc.compile(model, "quantize{bits=4,group-size=32}", calibration=batches)   # a transformers causal LM
    ids = cm.generate(input_ids, attention_mask=None, max_new_tokens=20, do_sample=False, temperature=1.0,
                      top_k=None, top_p=None, eos_token_id=None, pad_token_id=None, generator=None, streamer=None)

The API (stable; `fxc generate` builds on it):
- input_ids [B, S] integer token ids; attention_mask [B, S] of 0/1, None for all ones. Batches are LEFT-padded
  (zeros on the left of a row, as tokenizers give with padding_side="left"); a row whose last column is padding is
  an error (right padding would continue after the pad tokens).
- max_new_tokens: tokens to add (>= 1). The cache holds S + max_new_tokens positions, never more than the model's
  max_position_embeddings: asking for more is a GenerateError naming both numbers and the fix (fxc/api/generate/
  cache.py).
- do_sample=False: greedy. do_sample=True: sampling with temperature, top_k, top_p (fxc/api/generate/sampling.py),
  drawn from `generator` (a torch.Generator; None: torch's global one).
- eos_token_id: an id or a list of ids ending a row; None takes the model's (its generation config, recorded at
  compile and kept by fxc.save). A row that produced one gets pad_token_id from then on (None: the model's pad id,
  else the first eos id), and generation stops when every row has finished.
- streamer: a callable receiving each step's new tokens, a tensor [B] (pad for finished rows), as they come.
- Returns the ids [B, S + n] (the prompt, then n <= max_new_tokens new tokens per row), on input_ids' device.

Each step runs the compiled step graph (fxc/frontend/kv_cache.py) on the new tokens (the whole prompt first, then
one token), the attention mask so far, positions from the mask (cumsum(mask) - 1, pad positions 0, as
transformers computes them) and views of the cache buffers, then writes the step's new keys and values into the
buffers. Runs under torch.no_grad. A model without a KV-cache step graph (compiled with kv_cache=False, or not a
causal LM) is a GenerateError saying so. Reads the compiled module and its inputs; writes only new tensors and its
own cache buffers; preserves the caller's tensors and the compiled module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fxc.api.generate.cache import KVBuffers, cache_capacity
from fxc.api.generate.sampling import check_sampling, next_tokens
from fxc.errors import GenerateError
from fxc.frontend.kv_inputs import positions_from_mask
from fxc.ir.kv_signature import KVSignature


def generate(
    cm: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
    streamer: Callable[[torch.Tensor], Any] | None = None,
) -> torch.Tensor:
    """The prompt followed by the generated tokens, [B, S + n]; see the module docstring."""
    signature = _signature(cm)
    ids, mask = _prompt(input_ids, attention_mask)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise GenerateError(f"generate: max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    check_sampling(do_sample, temperature, top_k, top_p)
    if streamer is not None and not callable(streamer):
        raise GenerateError(f"generate: streamer must be a callable taking a tensor [B], got {type(streamer).__name__}")
    eos = _eos_ids(eos_token_id, signature)
    pad = _pad_id(pad_token_id, signature, eos)
    batch, prompt = ids.shape
    buffers = KVBuffers(signature, batch, cache_capacity(prompt, max_new_tokens, signature), ids.device)
    eos_ids = torch.tensor(eos, dtype=torch.long, device=ids.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=ids.device)
    out, tokens, length = [ids], ids, 0
    with torch.no_grad():
        for step in range(max_new_tokens):
            positions = positions_from_mask(mask)[:, -tokens.shape[1]:]
            logits, present = cm.runner(tokens, mask, positions, buffers.views(length))
            length = buffers.write(length, present)
            scores = torch.as_tensor(logits)[:, -1, :].to(torch.float32)
            chosen = next_tokens(scores, do_sample, temperature, top_k, top_p, generator).to(ids.device)
            if eos:
                chosen = torch.where(finished, torch.full_like(chosen, pad), chosen)
            out.append(chosen[:, None])
            if streamer is not None:
                streamer(chosen)
            if eos:
                finished |= torch.isin(chosen, eos_ids)
                if bool(finished.all()):
                    break
            if step + 1 < max_new_tokens:
                tokens = chosen[:, None]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.cat(out, dim=1)


def _signature(cm: Any) -> KVSignature:
    signature = getattr(cm, "kv_cache", None)
    if isinstance(signature, KVSignature):
        return signature
    graph = getattr(cm, "graph", None)
    config = getattr(graph, "meta", {}).get("fxc.hf_config") if graph is not None else None
    if isinstance(config, dict):
        why = ("this transformers model was compiled without a KV-cache step graph (kv_cache=False, an example with "
               "other inputs than input_ids / attention_mask / position_ids, or a capture that failed with a "
               "KVCacheWarning)")
        fix = "compile it with kv_cache=True (which says why when the cache cannot be captured)"
    else:
        why = "this model is not a transformers causal LM compiled with its KV cache"
        fix = ("generate works on Hugging Face causal LMs (Llama, Mistral, Qwen2, GPT-2, OPT families) compiled with "
               "fxc.compile; call the compiled model directly instead")
    raise GenerateError(f"cm.generate: {why}; {fix}")


def _prompt(input_ids: Any, attention_mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt ids (int64) and mask (int64, all ones when None), checked: 2-D, same shape, 0/1, left padding."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point() or (
            input_ids.is_complex() or input_ids.dtype == torch.bool):
        what = (f"a {input_ids.dtype} tensor of shape {list(input_ids.shape)}" if isinstance(input_ids, torch.Tensor)
                else f"a {type(input_ids).__name__}")
        raise GenerateError(f"generate: input_ids is {what}; give integer token ids [batch, tokens] (one sequence: "
                            "ids[None])")
    if input_ids.shape[0] < 1 or input_ids.shape[1] < 1:
        raise GenerateError(f"generate: input_ids has shape {list(input_ids.shape)}; give at least one token per row")
    ids = input_ids.long()
    if attention_mask is None:
        return ids, torch.ones_like(ids)
    if not isinstance(attention_mask, torch.Tensor) or list(attention_mask.shape) != list(ids.shape):
        shape = list(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask)
        raise GenerateError(f"generate: attention_mask is {shape}; give a tensor of 0/1 shaped like input_ids "
                            f"{list(ids.shape)}")
    mask = attention_mask.to(device=ids.device)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise GenerateError("generate: attention_mask holds values other than 0 and 1")
    mask = mask.long()
    right = (mask[:, -1] == 0).nonzero().flatten().tolist()
    if right:
        raise GenerateError(f"generate: row {right[0]} of attention_mask ends in padding (right padding); generate "
                            "continues each row after its last column: pad on the left (tokenizer.padding_side = "
                            "'left')")
    return ids, mask


def _eos_ids(eos_token_id: Any, signature: KVSignature) -> list[int]:
    if eos_token_id is None:
        return list(signature.eos_token_ids)
    ids = [eos_token_id] if isinstance(eos_token_id, int) and not isinstance(eos_token_id, bool) else eos_token_id
    if not isinstance(ids, (list, tuple)) or not all(type(i) is int and i >= 0 for i in ids):
        raise GenerateError(f"generate: eos_token_id must be a token id or a list of them, got {eos_token_id!r}")
    return list(ids)


def _pad_id(pad_token_id: Any, signature: KVSignature, eos: list[int]) -> int:
    if pad_token_id is not None:
        if type(pad_token_id) is not int or pad_token_id < 0:
            raise GenerateError(f"generate: pad_token_id must be a token id, got {pad_token_id!r}")
        return pad_token_id
    if signature.pad_token_id is not None:
        return signature.pad_token_id
    return eos[0] if eos else 0
