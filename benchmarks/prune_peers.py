"""llm-compressor's SparseGPT and Wanda on SmolLM2-135M, on the token ids fxc's benchmark used.

Runs in its OWN venv (never fxc's), e.g.
    python -m venv /tmp/peer-llmc
    /tmp/peer-llmc/bin/pip install torch==2.13.0 llmcompressor transformers gguf accelerate
    /tmp/peer-llmc/bin/python benchmarks/prune_peers.py --gguf PATH.gguf --data tokens.pt --config "sparsegpt 50%"

benchmarks/prune_quality.py --peer /tmp/peer-llmc/bin/python writes tokens.pt ({"calib": [[1, T] ids],
"eval": [[1, T] ids]}) and calls this once with every configuration. Prints one RESULT line per
--config (the original weights are restored between configs) with the config, the perplexity
(computed exactly as fxc.eval.quality.perplexity does), the prune wall time (oneshot) and the peak RSS so
far. Imports nothing from fxc. Reads the GGUF and the token file; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
from peer_common import load_gguf, perplexity, prepare_for_oneshot

CONFIGS = {
    "sparsegpt 50%": ("sparsegpt", 0.5, "0:0"),
    "wanda 50%": ("wanda", 0.5, "0:0"),
    "sparsegpt 2:4": ("sparsegpt", 0.5, "2:4"),
    "wanda 2:4": ("wanda", 0.5, "2:4"),
}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", action="append", required=True, choices=list(CONFIGS), help="repeatable")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from transformers import AutoTokenizer

    gguf = Path(args.gguf)
    model = load_gguf(gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    prepare_for_oneshot(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    data = torch.load(args.data)
    calib, evaluation = data["calib"], data["eval"]
    seq = calib[0].shape[1]
    dataset = Dataset.from_dict(
        {"input_ids": [c[0].tolist() for c in calib], "attention_mask": [[1] * seq for _ in calib]}
    )
    for config in args.config:
        model.load_state_dict(original)
        method, sparsity, structure = CONFIGS[config]
        modifier_class = SparseGPTModifier if method == "sparsegpt" else WandaPruningModifier
        modifier = modifier_class(sparsity=sparsity, mask_structure=structure, targets=["Linear"], ignore=["lm_head"])
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        oneshot(
            model=model,
            processor=tokenizer,
            dataset=dataset,
            recipe=[modifier],
            num_calibration_samples=len(calib),
            max_seq_length=seq,
            shuffle_calibration_samples=False,
        )
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        ppl = perplexity(model, evaluation)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result = {"config": config, "ppl": ppl, "seconds": seconds, "cpu": cpu, "peak_rss_mb": peak}
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
