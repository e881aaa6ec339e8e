"""torchao's int8 CPU paths on SmolLM2-135M: the peer side of benchmarks/cpu_w8a8_vs_torchao.py.

Runs in its OWN venv (never fxc's), e.g.
    python -m venv /tmp/peer-torchao && /tmp/peer-torchao/bin/pip install torch==2.13.0 torchao transformers gguf
    /tmp/peer-torchao/bin/python benchmarks/torchao_peer.py --gguf PATH.gguf --tokens 512 --threads 2

Variants: fp32 eager (the cross-check against the fxc process), Int8DynamicActivationInt8WeightConfig
and Int8WeightOnlyConfig, each eager and under torch.compile. Timing: warm-up calls (compilation
included there), then the median of --repeats calls. Prints one `RESULT {...}` JSON line per variant.
Imports nothing from fxc. Reads the GGUF; writes nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch


def median_ms(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=["fp32", "int8-dyn", "int8-wo", "int8-dyn-compiled",
                                                          "int8-wo-compiled"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
    from transformers import AutoModelForCausalLM

    path = Path(args.gguf)
    base = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    base.config.use_cache = False
    ids = torch.randint(100, 40000, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    configs = {"int8-dyn": Int8DynamicActivationInt8WeightConfig, "int8-wo": Int8WeightOnlyConfig}
    with torch.no_grad():
        reference = base(ids).logits
        for variant in args.variants:
            model = base
            if variant != "fp32":
                model = copy.deepcopy(base)
                quantize_(model, configs[variant.removesuffix("-compiled")]())
            run = torch.compile(model) if variant.endswith("-compiled") else model
            start = time.perf_counter()
            logits = run(ids).logits
            first_s = time.perf_counter() - start
            error = ((logits - reference).norm() / reference.norm()).item()
            ms = median_ms(lambda run=run: run(ids), args.repeats, warmup=1)
            print("RESULT " + json.dumps({"variant": variant, "ms": ms, "first_call_s": first_s, "rel_error": error}),
                  flush=True)


if __name__ == "__main__":
    main()
