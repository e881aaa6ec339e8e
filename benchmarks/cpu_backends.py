"""CPU backends side by side: forward latency of MiniLM and SmolLM2 (1 x 128 tokens), dense and int8
weight-only, numpy backend vs torch eager on the same number of threads; and (--sparse) the
sparse-vs-dense crossover the backends' N:M kernel choice uses.

    nice -n 10 python benchmarks/cpu_backends.py                  # latency table -> RESULTS.md
    nice -n 10 python benchmarks/cpu_backends.py --sparse         # crossover table -> RESULTS.md
    python benchmarks/cpu_backends.py --threads 1 --repeats 5 --models minilm

Every variant of one model is timed in the same loop, interleaved (one call of each per round), so
machine load hits them alike; the table shows the median of the rounds. Threads: torch's intra-op
pool and numpy's BLAS (threadpoolctl) are both limited to --threads. Reads the real models from
their packages (fxc.eval.realdata); appends a section to benchmarks/RESULTS.md. int8 weight-only: every
linear, the LM head included (quantize{bits=8,skip=[]}), per-channel round-to-nearest.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from harness import record, this_command
from threadpoolctl import threadpool_limits

import fxc


def interleaved_ms(candidates: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median milliseconds per call of each candidate, timed in interleaved rounds."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def load(name: str, tokens: int):
    from fxc.eval.realdata import load_minilm, load_smollm2

    model, tokenizer = load_minilm() if name == "minilm" else load_smollm2()
    ids = torch.randint(100, tokenizer.vocab_size - 100, (1, tokens), generator=torch.Generator().manual_seed(0))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)} if name == "minilm" else {"input_ids": ids}
    return model, example


def latency_rows(name: str, tokens: int, repeats: int) -> list[tuple]:
    model, example = load(name, tokens)
    traced = fxc.trace(model, example)
    dense_numpy = fxc.compile(traced, example_inputs=example, backend="numpy")
    w8_torch = fxc.compile(traced, passes="quantize{bits=8,skip=[]}", example_inputs=example, backend="torch")
    w8_numpy = fxc.compile(w8_torch.graph, example_inputs=example, backend="numpy")
    want = _main(model(**example))
    for compiled in (dense_numpy, w8_torch, w8_numpy):  # a benchmark of wrong results is worthless
        error = ((_main(compiled(**example)) - want).abs().max() / want.abs().max()).item()
        assert error < (1e-5 if compiled is dense_numpy else 5e-2), f"{name}: relative error {error:.1e}"
    ms = interleaved_ms(
        {
            "eager": lambda: model(**example),
            "numpy": lambda: dense_numpy(**example),
            "w8 torch": lambda: w8_torch(**example),
            "w8 numpy": lambda: w8_numpy(**example),
        },
        repeats,
    )
    label = f"{'MiniLM' if name == 'minilm' else 'SmolLM2'} 1x{tokens}"
    return [
        (label, "fp32 dense", "torch eager", ms["eager"], ms["numpy"], ms["numpy"] / ms["eager"], 1.0),
        (label, "int8 weight-only", "fxc torch backend", ms["w8 torch"], ms["w8 numpy"],
         ms["w8 numpy"] / ms["w8 torch"], ms["w8 numpy"] / ms["numpy"]),
    ]


def _main(output) -> torch.Tensor:
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output.logits


def latency_table(rows: list[tuple]) -> str:
    header = (f"{'model':<14} {'graph':<17} {'torch side':<18} {'torch ms':>9} {'numpy ms':>9} {'numpy/torch':>11} "
              f"{'vs numpy fp32':>13}")
    lines = [header, "-" * len(header)]
    for label, graph, side, torch_ms, numpy_ms, ratio, own in rows:
        lines.append(f"{label:<14} {graph:<17} {side:<18} {torch_ms:>9.1f} {numpy_ms:>9.1f} {ratio:>10.2f}x "
                     f"{own:>12.2f}x")
    return "\n".join(lines)


# --- sparse crossover ---------------------------------------------------------------------------------


def crossover_rows(repeats: int) -> list[tuple]:
    import scipy.sparse

    rows_out = []
    for outputs, columns in [(1536, 576), (576, 1536)]:
        for rows in (1, 8, 128):
            for density in (1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32):
                generator = torch.Generator().manual_seed(0)
                weight = torch.randn(outputs, columns, generator=generator)
                weight *= torch.rand(outputs, columns, generator=generator) < density
                x = torch.randn(rows, columns, generator=generator)
                ms = interleaved_ms(_sparse_candidates(weight, x, scipy.sparse.csr_array(weight.numpy())), repeats)
                rows_out.append((f"{outputs}x{columns}", rows, density, ms))
    return rows_out


def _sparse_candidates(weight: torch.Tensor, x: torch.Tensor, csr_np) -> dict:
    csr, xt = weight.to_sparse_csr(), x.t().contiguous()
    w_np, x_np, xt_np = weight.numpy(), x.numpy(), x.numpy().T.copy()
    return {
        "numpy dense": lambda: x_np @ w_np.T,
        "scipy csr": lambda: (csr_np @ xt_np).T,
        "torch dense": lambda: x @ weight.t(),
        "torch csr": lambda: (csr @ xt).t(),
    }


def crossover_table(rows: list[tuple]) -> str:
    header = f"{'weight':<9} {'rows':>4} {'density':>7} {'np dense':>9} {'scipy csr':>9} {'th dense':>9} {'th csr':>9}"
    lines = [header, "-" * len(header)]
    for shape, count, density, ms in rows:
        lines.append(
            f"{shape:<9} {count:>4} {density:>7.4f} {ms['numpy dense']:>9.3f} {ms['scipy csr']:>9.3f} "
            f"{ms['torch dense']:>9.3f} {ms['torch csr']:>9.3f}"
        )
    for sparse, dense, label in (("scipy csr", "numpy dense", "numpy"), ("torch csr", "torch dense", "torch")):
        for count in (1, 8, 128):
            limit = crossover_density(rows, count, sparse, dense)
            lines.append(f"crossover {label} at {count:>3} rows: sparse wins at density <= {limit or 'never'} "
                         "(for every shape, at that density and every sparser one)")
    return "\n".join(lines)


def crossover_density(rows: list[tuple], count: int, sparse: str, dense: str) -> float | None:
    """The largest density at which the sparse kernel won for every shape, and at every lower density."""
    densities = sorted({d for _, c, d, _ in rows if c == count})
    limit = None
    for density in densities:
        if not all(ms[sparse] < ms[dense] for _, c, d, ms in rows if c == count and d == density):
            break
        limit = density
    return limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--models", nargs="+", default=["minilm", "smollm2"], choices=["minilm", "smollm2"])
    parser.add_argument("--sparse", action="store_true", help="measure the sparse-vs-dense crossover instead")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    np.random.seed(0)
    with threadpool_limits(args.threads), torch.no_grad():
        if args.sparse:
            title = f"Sparse vs dense linear crossover, CPU, {args.threads} threads (ms, median of {args.repeats})"
            table = crossover_table(crossover_rows(args.repeats))
        else:
            rows = [row for name in args.models for row in latency_rows(name, args.tokens, args.repeats)]
            title = f"CPU backends: numpy vs torch, {args.threads} threads (ms, median of {args.repeats} interleaved)"
            table = latency_table(rows)
    if args.no_record:
        print(table)
    else:
        record(title, this_command(), table)


if __name__ == "__main__":
    main()
