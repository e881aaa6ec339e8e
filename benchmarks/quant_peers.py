"""Peers for benchmarks/quant_quality.py: llm-compressor (GPTQ and RTN, W4A16 group 64) and torchao
(int8 weight-only, int8 dynamic activations) on SmolLM2-135M, on the token ids fxc's benchmark used.

Runs in the peer's OWN venv (never fxc's), e.g.
    python -m venv /tmp/peer-llmc && /tmp/peer-llmc/bin/pip install torch==2.13.0 llmcompressor gguf accelerate
    python -m venv /tmp/peer-torchao && /tmp/peer-torchao/bin/pip install torch==2.13.0 torchao transformers gguf
    /tmp/peer-llmc/bin/python benchmarks/quant_peers.py --gguf PATH.gguf --data tokens.pt --config "..."

quant_quality.py writes tokens.pt ({"calib": [[1, T] ids], "eval": [[1, T] ids]}) and calls this once per
configuration. Prints `RESULT {"ppl", "seconds", "bits", "mb", "note"}`: perplexity computed exactly as
fxc.eval.quality.perplexity does, the quantization call's wall time, nominal stored bits per quantized weight
(these peers keep fake-quantized or tensor-subclass weights in memory, so no in-memory size is
comparable), and a note. Imports nothing from fxc. Reads the GGUF and the token file; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from peer_common import load_gguf, perplexity, prepare_for_oneshot

CONFIGS = (
    "llm-compressor GPTQ W4A16 g64",
    "llm-compressor RTN W4A16 g64",
    "torchao int8 weight-only",
    "torchao int8 dynamic (W8A8)",
)


def llm_compressor(model, tokenizer, calib, config: str) -> tuple[float, str]:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=64)
    groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
    if "GPTQ" in config:
        modifier = GPTQModifier(config_groups=groups, ignore=["lm_head"], dampening_frac=0.01, block_size=128)
    else:
        modifier = QuantizationModifier(config_groups=groups, ignore=["lm_head"])
    prepare_for_oneshot(model)
    seq = calib[0].shape[1]
    dataset = Dataset.from_dict(
        {"input_ids": [c[0].tolist() for c in calib], "attention_mask": [[1] * seq for _ in calib]}
    )
    start = time.perf_counter()
    oneshot(
        model=model,
        processor=tokenizer,
        dataset=dataset,
        recipe=[modifier],
        num_calibration_samples=len(calib),
        max_seq_length=seq,
        shuffle_calibration_samples=False,
    )
    return time.perf_counter() - start, "symmetric int4, fp32 scale per 64 (nominal 4.5 bits)"


def torchao(model, config: str) -> tuple[float, str]:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    chosen = Int8WeightOnlyConfig() if "weight-only" in config else Int8DynamicActivationInt8WeightConfig()
    is_decoder_linear = lambda module, fqn: isinstance(module, torch.nn.Linear) and "lm_head" not in fqn
    start = time.perf_counter()
    quantize_(model, chosen, filter_fn=is_decoder_linear)
    return time.perf_counter() - start, "per-channel int8 (nominal 8 bits + one scale per row)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True, choices=CONFIGS)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    gguf = Path(args.gguf)
    model = load_gguf(gguf)
    data = torch.load(args.data)
    calib, evaluation = data["calib"], data["eval"]
    if args.config.startswith("llm-compressor"):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        seconds, note = llm_compressor(model, tokenizer, calib, args.config)
        bits = "4.5"
    else:
        seconds, note = torchao(model, args.config)
        bits = f"{8 + 32 / model.config.hidden_size:.3f}"  # min over layers' K: the per-row scale's share
    ppl = perplexity(model, evaluation)
    print("RESULT " + json.dumps({"ppl": ppl, "seconds": seconds, "bits": bits, "mb": None, "note": note}), flush=True)


if __name__ == "__main__":
    main()
