"""Split vs dense linear layer latency on the CPU, side by side with the theoretical FLOP ratio.

    nice -n 10 python benchmarks/low_rank_latency.py              # records to RESULTS.md
    python benchmarks/low_rank_latency.py --reps 20 --no-record   # a quick look

For SmolLM2-135M's layer shapes (q/o 576x576, gate/up 1536x576, down 576x1536) and a few ranks, the
dense layer `x Wᵀ + b` and the split `(x Bᵀ) Aᵀ + b` exactly as the low-rank pass emits it (two
aten.linear, the bias on the second) run alternately in one process on the same input; the table gives
median milliseconds and split/dense against r·(m+n)/(m·n), the FLOP (and weight-byte) ratio. Tokens:
512 (a prefill: compute-bound, where split/dense should follow the FLOP ratio) and 1 (a decode step:
bound by reading the weights; one layer's weights stay cache-warm between repeated calls, so once the
split's factors fit in L2 the ratio falls below the byte ratio, which a whole model's streamed weights
would not see). One thread by default, so that a shared machine's load disturbs the two sides alike.
Reads nothing; appends to RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

SHAPES = {"q_proj 576x576": (576, 576), "up_proj 1536x576": (1536, 576), "down_proj 576x1536": (576, 1536)}
RATIOS = (0.9, 0.8, 0.5, 0.25, 0.1)  # fraction of the layer's weights kept


def median_ms(fn, x, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(m: int, n: int, rank: int, tokens: int, reps: int) -> tuple[float, float]:
    weight, bias = torch.randn(m, n) / n**0.5, torch.randn(m)
    down, up = torch.randn(rank, n) / n**0.5, torch.randn(m, rank) / rank**0.5
    x = torch.randn(tokens, n)
    dense = lambda v: F.linear(v, weight, bias)
    split = lambda v: F.linear(F.linear(v, down), up, bias)
    for fn in (dense, split):  # warm up
        median_ms(fn, x, 3)
    dense_ms, split_ms = [], []
    for _ in range(5):  # alternate so drifting load hits both sides
        dense_ms.append(median_ms(dense, x, reps))
        split_ms.append(median_ms(split, x, reps))
    return statistics.median(dense_ms), statistics.median(split_ms)


def table(args) -> str:
    lines = [f"{'layer':<20} {'tokens':>6} {'rank':>5} {'kept':>6} {'dense ms':>9} {'split ms':>9} "
             f"{'split/dense':>12} {'FLOP ratio':>11}"]
    for label, (m, n) in SHAPES.items():
        for tokens in args.tokens:
            for ratio in RATIOS:
                rank = int(ratio * m * n / (m + n))
                flop_ratio = rank * (m + n) / (m * n)
                dense_ms, split_ms = measure(m, n, rank, tokens, args.reps)
                lines.append(f"{label:<20} {tokens:>6} {rank:>5} {flop_ratio:>6.0%} {dense_ms:>9.3f} "
                             f"{split_ms:>9.3f} {split_ms / dense_ms:>12.2f} {flop_ratio:>11.2f}")
                print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50, help="timed calls per measurement (5 measurements)")
    parser.add_argument("--tokens", type=int, nargs="*", default=[512, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    text = table(args)
    print(text)
    if not args.no_record:
        notes = (f"{args.threads} thread(s), median of 5 x {args.reps} calls, dense and split alternating; "
                 "kept = r(m+n)/(mn) = the FLOP and weight-byte ratio of the split. tokens=1 rows are "
                 "cache-warm (one layer's weights reused call after call).")
        harness.record("Low rank: split vs dense linear latency (CPU)", harness.this_command(), text, notes)


if __name__ == "__main__":
    main()
