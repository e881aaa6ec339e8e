"""The KV cache of one generate call: preallocated key/value buffers outside the graph.

    buffers = KVBuffers(signature, batch=2, capacity=cache_capacity(prompt, max_new_tokens, signature), device=dev)
    logits, present = runner(ids, mask, positions, buffers.views(length))   # the past: views, no copy
    buffers.write(length, present)                                         # the step's new positions, in place

Per layer, keys and values of [B, Hkv, capacity, D] in the cache's dtype (KVSignature.dtype). `views(P)` hands the
step graph buf[:, :, :P] of each (views of the buffers, no copy); `write(P, present)` copies the step's new keys and
values (T positions) into [P, P + T). The capacity is the prompt plus the new tokens, never more than the model's
positions (KVSignature.max_positions, its config's max_position_embeddings): `cache_capacity` raises GenerateError
naming both numbers and the fix before anything is allocated. Reads the step's outputs; writes only its own buffers;
preserves the caller's tensors.
"""

from __future__ import annotations

import torch

from fxc.errors import GenerateError
from fxc.ir.kv_signature import KVSignature


def cache_capacity(prompt: int, max_new_tokens: int, signature: KVSignature) -> int:
    """Positions the cache needs for a prompt of `prompt` tokens (its padded length) and `max_new_tokens` more."""
    needed = prompt + max_new_tokens
    limit = signature.max_positions
    if limit is not None and needed > limit:
        fix = (f"lower max_new_tokens to at most {limit - prompt}" if prompt < limit
               else f"shorten the prompt to fewer than {limit} tokens")
        raise GenerateError(
            f"generate: the prompt ({prompt} tokens, padding included) plus max_new_tokens ({max_new_tokens}) need "
            f"{needed} cache positions, more than the model's {limit} (its config's max_position_embeddings); {fix}"
        )
    return needed


class KVBuffers:
    """Preallocated keys and values per layer; see the module docstring."""

    def __init__(self, signature: KVSignature, batch: int, capacity: int, device: torch.device | str | None = None):
        shape = (batch, signature.kv_heads, capacity, signature.head_dim)
        self.capacity = capacity
        self.keys = [torch.zeros(shape, dtype=signature.torch_dtype, device=device) for _ in range(signature.layers)]
        self.values = [torch.zeros(shape, dtype=signature.torch_dtype, device=device) for _ in range(signature.layers)]

    def views(self, length: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """The first `length` positions of every layer, as views (the step graph's `past`)."""
        return tuple((k[:, :, :length], v[:, :, :length]) for k, v in zip(self.keys, self.values))

    def write(self, start: int, present) -> int:
        """Copy each layer's new keys and values to positions [start, start + T); returns start + T."""
        if len(present) != len(self.keys):
            raise GenerateError(f"generate: the step returned {len(present)} layers of keys and values; the cache has "
                                f"{len(self.keys)} (the compiled graph does not match its KV-cache record)")
        new = int(present[0][0].shape[2])
        if start + new > self.capacity:
            raise GenerateError(f"generate: writing positions {start}..{start + new - 1} past the cache's "
                                f"{self.capacity}")
        for (keys, values), (k, v) in zip(zip(self.keys, self.values), present):
            keys[:, :, start:start + new].copy_(torch.as_tensor(k))
            values[:, :, start:start + new].copy_(torch.as_tensor(v))
        return start + new
