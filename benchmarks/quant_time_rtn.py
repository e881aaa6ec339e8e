"""Wall time of one-pass int8 quantization on SmolLM2-135M: fxc's passes vs torchao's quantize_, side by side.

    python benchmarks/quant_time_rtn.py --peer-torchao /tmp/peer-torchao/bin/python [--repeats 3] [--no-record]

fxc: quantize{bits=8} and quantize{act-bits=8} on a fresh copy of one traced graph (the copy is not timed; the
pass's graph rewrite and recompile are). torchao: Int8WeightOnlyConfig / Int8DynamicActivationInt8WeightConfig
through quantize_ on a freshly loaded model (decoder linears, lm_head left fp32 as fxc leaves it), in its own
venv. Both on one thread, one after the other (not at the same time), medians of --repeats. Reads the SmolLM2
package; appends to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

import fxc  # noqa: E402

PEER = """
import json, sys, time, torch
from pathlib import Path
sys.path.insert(0, {folder!r})
from peer_common import load_gguf
from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
torch.set_num_threads(1)
out = {{}}
configs = {{"int8 weight-only": Int8WeightOnlyConfig, "int8 dynamic (W8A8)": Int8DynamicActivationInt8WeightConfig}}
for name, config in configs.items():
    times = []
    for _ in range({repeats}):
        model = load_gguf(Path({gguf!r}))
        start = time.perf_counter()
        quantize_(model, config(), filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and "lm_head" not in fqn)
        times.append(time.perf_counter() - start)
    out[name] = sorted(times)[len(times) // 2]
print("RESULT " + json.dumps(out))
"""


def fxc_seconds(repeats: int) -> dict[str, float]:
    model, tokenizer = harness.load_smollm2()
    ids = tokenizer("fxc times its quantization passes", return_tensors="pt")["input_ids"]
    base = fxc.trace(model, (ids,))
    out = {}
    for name, text in (("int8 weight-only", "quantize{bits=8}"), ("int8 dynamic (W8A8)", "quantize{act-bits=8}")):
        times = []
        for _ in range(repeats):
            gm = copy.deepcopy(base)
            start = time.perf_counter()
            fxc.Pipeline.parse(text).run(gm, fxc.AnalysisManager(gm, None))
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
    return out


def torchao_seconds(python: str, repeats: int) -> dict[str, float]:
    from fxc.eval.realdata import smollm2_gguf

    script = PEER.format(folder=str(Path(__file__).parent), gguf=str(smollm2_gguf()), repeats=repeats)
    done = subprocess.run([python, "-c", script], capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"torchao peer failed:\n{done.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer-torchao", required=True, help="python of a venv with torchao")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ours = fxc_seconds(args.repeats)
    theirs = torchao_seconds(args.peer_torchao, args.repeats)
    lines = [f"{'scheme':<22} {'fxc s':>8} {'torchao s':>10} {'fxc / torchao':>14}", "-" * 57]
    for name, seconds in ours.items():
        lines.append(f"{name:<22} {seconds:>8.2f} {theirs[name]:>10.2f} {seconds / theirs[name]:>13.2f}x")
    notes = (
        f"1 thread each, medians of {args.repeats}; fxc's time is the pass on a traced graph (rewrite and "
        "recompile included), torchao's its quantize_ call."
    )
    title = "One-pass int8 quantization time on SmolLM2-135M"
    harness.publish("\n".join(lines), title, notes, record_it=not args.no_record)


if __name__ == "__main__":
    main()
