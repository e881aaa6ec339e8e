"""SmolLM2-135M, 1 x 512 tokens, forward on the CPU: fxc W8A8 and W8 weight-only (torch backend,
fast path) against fp32 eager and against torchao (Int8DynamicActivationInt8WeightConfig,
Int8WeightOnlyConfig; eager and torch.compile), in one run, one table.

    nice -n 10 python benchmarks/cpu_w8a8_vs_torchao.py --peer-python /tmp/peer-torchao/bin/python

torchao runs in its own venv (see benchmarks/torchao_peer.py for the set-up line) as a subprocess,
after the fxc side has finished, on the same token ids and thread count. Each process times its own
fp32 eager model, so the table gives every variant's speed-up against the fp32 eager of its own
process as well as raw milliseconds. Error: ||logits - fp32 logits|| / ||fp32 logits||. Every linear
is quantized, the LM head included (`skip=[]`), as torchao's quantize_ does.
Reads the SmolLM2 package; appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch
from cpu_backends import interleaved_ms
from harness import record, this_command

import fxc
from fxc.eval.realdata import load_smollm2, smollm2_gguf


def fxc_side(tokens: int, repeats: int) -> list[dict]:
    model, _ = load_smollm2()
    ids = torch.randint(100, 40000, (1, tokens), generator=torch.Generator().manual_seed(0))
    traced = fxc.trace(model, (ids,))
    w8a8 = fxc.compile(traced, passes="quantize{act-bits=8,skip=[]}", example_inputs=(ids,), backend="torch")
    w8 = fxc.compile(traced, passes="quantize{bits=8,skip=[]}", example_inputs=(ids,), backend="torch")
    w8a8_compiled = fxc.compile(w8a8.graph, example_inputs=(ids,), backend="torch",
                                backend_options={"torch_compile": True})
    reference = model(ids).logits
    first_call = {"fxc W8A8, compiled": _first_call_s(w8a8_compiled, ids)}
    variants = {"fxc W8A8": w8a8, "fxc W8": w8, "fxc W8A8, compiled": w8a8_compiled}
    errors = {name: _error(m(ids).logits, reference) for name, m in variants.items()}
    ms = interleaved_ms({"fp32 eager": lambda: model(ids)} | {n: (lambda m=m: m(ids)) for n, m in variants.items()},
                        repeats)
    return [{"variant": name, "process": "fxc", "ms": value, "rel_error": errors.get(name, 0.0)}
            | ({"first_call_s": first_call[name]} if name in first_call else {}) for name, value in ms.items()]


def _first_call_s(module, ids) -> float:
    start = time.perf_counter()
    module(ids)
    return time.perf_counter() - start


def peer_side(python: str, tokens: int, threads: int, repeats: int) -> list[dict]:
    script = Path(__file__).with_name("torchao_peer.py")
    command = [python, str(script), "--gguf", str(smollm2_gguf()), "--tokens", str(tokens), "--threads",
               str(threads), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"torchao peer failed:\n{done.stderr[-3000:]}")
    names = {
        "fp32": "fp32 eager", "int8-dyn": "torchao int8 dynamic (W8A8)", "int8-wo": "torchao int8 weight-only",
        "int8-dyn-compiled": "torchao int8 dynamic, compiled", "int8-wo-compiled": "torchao int8 weight-only, compiled",
    }
    rows = []
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line.removeprefix("RESULT "))
            rows.append({"variant": names[result["variant"]], "process": "torchao", "ms": result["ms"],
                         "rel_error": result["rel_error"], "first_call_s": result["first_call_s"]})
    return rows


def _error(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return ((logits - reference).norm() / reference.norm()).item()


def table(rows: list[dict]) -> str:
    own_fp32 = {r["process"]: r["ms"] for r in rows if r["variant"] == "fp32 eager"}
    header = f"{'variant':<38} {'process':<8} {'ms':>8} {'vs own fp32':>11} {'rel error':>10} {'1st call s':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        speedup = own_fp32[r["process"]] / r["ms"] if r["process"] in own_fp32 else float("nan")
        first = f"{r['first_call_s']:.1f}" if "first_call_s" in r else ""
        lines.append(f"{r['variant']:<38} {r['process']:<8} {r['ms']:>8.1f} {speedup:>10.2f}x "
                     f"{r['rel_error']:>10.2e} {first:>10}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peer-python", default=None, help="python of a venv with torchao (omit: fxc side only)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        rows = fxc_side(args.tokens, args.repeats)
    if args.peer_python:
        rows += peer_side(args.peer_python, args.tokens, args.threads, args.repeats)
    text = table(rows)
    title = f"SmolLM2 1x{args.tokens} CPU int8: fxc vs torchao, {args.threads} threads (median of {args.repeats})"
    if args.no_record:
        print(text)
    else:
        record(title, this_command(), text)


if __name__ == "__main__":
    main()
