"""Tiny random causal LMs of the families fxc captures with a KV cache (no downloads), for the generate tests.

    model = causal_lm("llama")           # seeded: the same weights every call
    prompt = prompt_ids(model, 2, 7)     # [2, 7] token ids of that model's vocabulary

End-of-sequence ids are cleared (eos_token_id None) so greedy runs go the full length unless a test asks for an
eos; max_position_embeddings is 64 for every family (the cache limit test reads it). Weights are drawn 10x wider than
transformers' default (initializer_range 0.2): with the default, a tiny random model's next token hardly depends on
its input and greedy runs repeat one token, which would hide a wrong position or a stale cache entry.
"""

from __future__ import annotations

import torch

VOCAB, POSITIONS = 64, 64
FAMILIES = ("llama", "qwen2", "gpt2", "opt", "mistral")


def causal_lm(family: str, seed: int = 0, **overrides):
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, bos_token_id=None, eos_token_id=None, pad_token_id=None, initializer_range=0.2)
    decoder = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=POSITIONS)
    if family == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**common, **{**decoder, **overrides}))
    elif family == "qwen2":
        model = tf.Qwen2ForCausalLM(tf.Qwen2Config(**common, **{**decoder, **overrides}))
    elif family == "mistral":  # a window shorter than prompt + new tokens: the mask applies it
        model = tf.MistralForCausalLM(tf.MistralConfig(**common, **{**decoder, "sliding_window": 6, **overrides}))
    elif family == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(**common, n_positions=POSITIONS, n_embd=32, n_layer=2, n_head=4,
                                                 **overrides))
    elif family == "opt":
        model = tf.OPTForCausalLM(tf.OPTConfig(**common, init_std=0.2, max_position_embeddings=POSITIONS,
                                               hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                               num_attention_heads=4, word_embed_proj_dim=32, **overrides))
    else:
        raise ValueError(family)
    return model.eval()


def prompt_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def hf_greedy(model, ids: torch.Tensor, new: int, **kwargs) -> torch.Tensor:
    """transformers' own greedy generate (the reference)."""
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=new, do_sample=False, **kwargs)
