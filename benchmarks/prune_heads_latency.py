"""Latency of attention-head pruning, dense vs pruned side by side, on a random-weight Llama whose attention
has SmolLM2-135M's shape (hidden 576, 9 query heads, 3 kv heads, head_dim 64); no download.

    nice -n 10 python benchmarks/prune_heads_latency.py [--layers 4] [--seq 256] [--reps 15] [--no-record]

Times the whole model forward (torch backend) on 1 x seq tokens, alternating the variants every repetition,
and prints the median. The pruned variants remove 1 and 2 of the 3 query heads of every kv group
(prune{pattern=head,sparsity=0.34|0.67}); kv heads stay. Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

import fxc  # noqa: E402

VARIANTS = {
    "dense": None,
    "heads 33% (magnitude)": "prune{method=magnitude,pattern=head,sparsity=0.34}",
    "heads 67% (magnitude)": "prune{method=magnitude,pattern=head,sparsity=0.67}",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1024, hidden_size=576, intermediate_size=1536, num_hidden_layers=args.layers,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=args.seq,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 1024, (1, args.seq))
    compiled = {name: fxc.compile(model, passes, example_inputs=(ids,)) for name, passes in VARIANTS.items()}
    params = {name: sum(t.numel() for t in fn.graph.state_dict().values()) for name, fn in compiled.items()}
    timings: dict[str, list[float]] = {name: [] for name in compiled}
    with torch.no_grad():
        for fn in compiled.values():
            fn(ids)
        for _ in range(args.reps):
            for name, fn in compiled.items():
                start = time.perf_counter()
                fn(ids)
                timings[name].append(time.perf_counter() - start)
    median = {name: sorted(t)[len(t) // 2] * 1000 for name, t in timings.items()}
    lines = [f"{'variant':24} {'params':>11} {'forward ms':>11} {'speed-up':>9}"]
    for name in compiled:
        speedup = median["dense"] / median[name]
        lines.append(f"{name:24} {params[name]:>11,} {median[name]:>11.1f} {speedup:>8.2f}x")
    table = "\n".join(lines)
    shape = f"random Llama, SmolLM2 attention shape, {args.layers} layers, 1x{args.seq} tokens"
    title = f"Attention-head pruning latency ({shape})"
    if args.no_record:
        print(table)
    else:
        harness.record(title, harness.this_command(), table, notes=f"median of {args.reps} alternating runs")


if __name__ == "__main__":
    main()
