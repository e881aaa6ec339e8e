"""The timing part of benchmarks/gpu_suite.py: every scheme's kernel against torch bf16 F.linear (cuBLAS) at
decode and prefill shapes, each row next to its roofline limit.

    rows = timings(Bench(timer, device), cache, shapes, budget_s, started)   # -> the table's text

Shapes: `SHAPES` (M = 1, 16, 2048 at N = K = 8192 and at the MLP shapes 4096 -> 11008 / 11008 -> 4096,
plus W8A8 at 8192^3), `QUICK_SHAPES` (a short lease: N = K = 8192 and 8192^3) or `DRY_SHAPES` (tiny,
for the interpreter). Weights are not left in L2: when one copy of a weight (the bf16 baseline's or the
scheme's) is smaller than ROTATE_L2_FACTOR times the GPU's L2, the timed call runs over enough copies
of it, one after the other, that their total is not, and the time is divided by the number of copies
(a CUDA graph replays the same call, so a single copy would stay in L2 and flatter small weights).
Roofline: each row's ideal time is the larger of its bytes (weight, x, out) over the measured copy
bandwidth and its FLOPs over the measured peak (bf16 matmul; int8 torch._int_mm for W8A8; the
block-sparse scheme counts only its non-zero tiles); "of limit" is ideal / measured time.
Reads nothing; writes nothing (gpu_suite.py records).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gpu_suite_peers
import torch
from gpu_suite_cases import SCHEMES, make_case

from fxc.codegen.triton.epilogue import Epilogue
from fxc.codegen.triton.picker import FusedLinear

MLP = ((11008, 4096), (4096, 11008))  # (N, K): Llama-7B's up / gate and down projections
SHAPES = [(m, n, k) for n, k in ((8192, 8192), *MLP) for m in (1, 16, 2048)] + [(8192, 8192, 8192)]
QUICK_SHAPES = [(m, 8192, 8192) for m in (1, 16, 2048)] + [(8192, 8192, 8192)]
DRY_SHAPES = [(1, 256, 128), (40, 256, 128)]  # the GEMV and the GEMM templates
TARGETS = {("w8a16", 1): 1.8, ("w4a16", 1): 3.0, ("w8a8", 8192): 1.6, ("w4a16", 2048): 0.9,  # (scheme, M) ->
           ("sparse24", 2048): 1.1, **{("block50", m): 1.5 for m in (1, 16, 2048)}}  # speed-up over bf16
ROTATE_L2_FACTOR = 4
MAX_COPIES = 32


@dataclass
class Bench:
    """How to time a call (`timer(fn)` -> ms) on which device, and that device's L2 size in bytes."""

    timer: Callable[[Callable[[], None]], float]
    device: str
    l2_bytes: int = 50 * 2**20

    @classmethod
    def on_gpu(cls, timer) -> Bench:
        return cls(timer, "cuda", torch.cuda.get_device_properties(0).L2_cache_size)

    @classmethod
    def wall_clock(cls) -> Bench:
        """For --dry-run: the wall time of one call (Triton's interpreter on the CPU; meaningless numbers), and
        an "L2" of 8 KiB, so that the tiny weights still rotate through a few copies."""
        def timer(fn):
            started = time.perf_counter()
            fn()
            return (time.perf_counter() - started) * 1e3

        return cls(timer, "cpu", 8 << 10)

    def copies(self, weight_bytes: int) -> int:
        """How many copies of a weight of this size keep it out of L2 when called one after the other."""
        return max(1, min(MAX_COPIES, -(-ROTATE_L2_FACTOR * self.l2_bytes // max(weight_bytes, 1))))


@dataclass
class Peaks:
    copy_tbs: float  # device-to-device copy, TB/s (read + write)
    bf16_tflops: float  # torch bf16 matmul at 8192^3 (dry run: 512^3)
    int8_tops: float  # torch._int_mm at the same size (the bf16 rate where _int_mm is absent)

    def describe(self) -> str:
        return (f"copy bandwidth {self.copy_tbs:.2f} TB/s, bf16 matmul {self.bf16_tflops:.0f} TFLOP/s, "
                f"int8 matmul {self.int8_tops:.0f} TOP/s")


def peaks(bench: Bench) -> Peaks:
    big = bench.device == "cuda"
    src = torch.empty(2**30 if big else 2**24, dtype=torch.uint8, device=bench.device)
    dst = torch.empty_like(src)
    copy_tbs = 2 * src.numel() / (bench.timer(lambda: dst.copy_(src)) * 1e-3) / 1e12
    size = 8192 if big else 512
    a = torch.randn(size, size, device=bench.device, dtype=torch.bfloat16 if big else torch.float32)
    flops = 2 * size**3
    bf16 = flops / (bench.timer(lambda: a @ a) * 1e-3) / 1e12
    try:
        q = torch.randint(-128, 127, (size, size), dtype=torch.int8, device=bench.device)
        int8 = flops / (bench.timer(lambda: torch._int_mm(q, q)) * 1e-3) / 1e12
    except (RuntimeError, AttributeError):
        int8 = bf16
    return Peaks(copy_tbs, bf16, int8)


def limit_ms(peaks: Peaks, scheme: str, m: int, n: int, k: int, weight_bytes: int) -> float:
    """The roofline time of one call: bytes over copy bandwidth or FLOPs over the peak, the larger."""
    moved = weight_bytes + 2 * m * k + 2 * m * n
    flops = 2 * m * n * k * (0.5 if scheme == "block50" else 1.0)
    peak = peaks.int8_tops if scheme == "w8a8" else peaks.bf16_tflops
    return max(moved / (peaks.copy_tbs * 1e12), flops / (peak * 1e12)) * 1e3


def timings(bench: Bench, cache, shapes: list[tuple], budget_s: float, started: float, peers: bool = True) -> str:
    """The timing table (text) of every scheme at every shape, the bf16 baseline first at each shape."""
    found = peaks(bench)
    rows = []
    for m, n, k in shapes:
        x = torch.randn(m, k, device=bench.device, dtype=torch.bfloat16)
        dense = [torch.randn(n, k, device=bench.device, dtype=torch.bfloat16)
                 for _ in range(bench.copies(n * k * 2))]
        t_bf16 = bench.timer(lambda x=x, dense=dense: [torch.nn.functional.linear(x, d) for d in dense]) / len(dense)
        rows.append(_row("bf16 cuBLAS", m, n, k, t_bf16, t_bf16, limit_ms(found, "bf16", m, n, k, n * k * 2),
                         len(dense), ""))
        print(*rows[-1], flush=True)
        for scheme in SCHEMES if m != 8192 else ("w8a8",):
            if time.perf_counter() - started > budget_s:
                rows.append((scheme, m, n, k, "skipped: time budget", "", "", "", "", ""))
                continue
            first = make_case(scheme, n, k, bench.device)
            cases = [first] + [make_case(scheme, n, k, bench.device, seed=i) for i in
                               range(1, bench.copies(first.weight_bytes))]
            fused = FusedLinear(first.op, Epilogue(()), cache)
            calls = [c.args(x) for c in cases]
            fused(*calls[0])  # autotunes once for this shape
            t = bench.timer(lambda fused=fused, calls=calls: [fused(*args) for args in calls]) / len(calls)
            target = TARGETS.get((scheme, m))
            mark = "" if target is None else f"target {target}x: {'met' if t_bf16 / t >= target else 'MISSED'}"
            rows.append(_row(f"{scheme} ({fused.last[0]})", m, n, k, t, t_bf16,
                             limit_ms(found, scheme, m, n, k, first.weight_bytes), len(calls), mark))
            print(*rows[-1], flush=True)
            if peers:
                for peer, t_peer in gpu_suite_peers.times(scheme, first, x, bench.timer):
                    rows.append((f"  {peer} (1 copy)", m, n, k, f"{t_peer * 1e3:.1f}" if t_peer else "n/a",
                                 f"{t_bf16 / t_peer:.2f}" if t_peer else "", "", "", "",
                                 f"fxc {t_peer / t:.2f}x faster" if t_peer else ""))
    header = ("kernel", "M", "N", "K", "us", "vs bf16", "limit us", "of limit", "copies", "note")
    return found.describe() + "\n" + table(header, rows)


def _row(name, m, n, k, ms, bf16_ms, limit, copies, note) -> tuple:
    return (name, m, n, k, f"{ms * 1e3:.1f}", f"{bf16_ms / ms:.2f}", f"{limit * 1e3:.1f}", f"{limit / ms:.0%}",
            copies, note)


def table(header: tuple, rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(c).rjust(w) for c, w in zip(row, widths))
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, rows)])
