"""Token generation for causal LMs compiled with their KV cache: `cm.generate(...)` (CompiledModule.generate).

    ids = cm.generate(input_ids, attention_mask=None, max_new_tokens=20, do_sample=False, temperature=1.0,
                      top_k=None, top_p=None, eos_token_id=None, pad_token_id=None, generator=None, streamer=None)

loop.py is the decoding loop and the API (its docstring states the semantics, which follow transformers' generate);
sampling.py picks each next token from the logits (greedy, or temperature / top-k / top-p sampling); cache.py owns
the preallocated key/value buffers the step graph reads as views and whose new positions it returns. The step graph
itself is fxc/frontend/kv_cache.py's capture (contract: fxc/ir/kv_signature.py). Reads and writes nothing itself.
"""

from fxc.api.generate.loop import generate

__all__ = ["generate"]
