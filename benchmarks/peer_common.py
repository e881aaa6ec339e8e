"""What the peer scripts (prune_peers.py, quant_peers.py) share; they run in the peers' own venvs, so this
imports nothing from fxc. Reads the SmolLM2 GGUF; writes a temporary config folder for llm-compressor.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F


def perplexity(model, batches) -> float:
    """exp of the mean next-token NLL over every position, exactly as fxc.eval.quality.perplexity computes it."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in batches:
            logits = model(ids).logits.float()
            nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
            total += nll.item()
            count += ids[:, 1:].numel()
    return math.exp(total / count)


def load_gguf(gguf: Path):
    """SmolLM2 from its GGUF as fp32 LlamaForCausalLM (cache off), as fxc loads it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    model.config.use_cache = False
    return model


def prepare_for_oneshot(model) -> None:
    """llm-compressor's oneshot re-reads the config from name_or_path (a GGUF folder has none) and refuses the
    "gguf" quantization_config; the weights are already dequantized to fp32, so point it at a plain config."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    config_dir = tempfile.mkdtemp()
    model.config.save_pretrained(config_dir)
    model.config.name_or_path = config_dir
