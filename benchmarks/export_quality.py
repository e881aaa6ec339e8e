"""Export quality on SmolLM2-135M: fxc's own perplexity against the exported model's in the engine that loads it.

    python benchmarks/export_quality.py --calib 16 --eval 8 --seq 512
    python benchmarks/export_quality.py --passes "quantize{bits=8,group-size=32}" --no-record

One compile (default W4 g64 GPTQ, calibrated on wiki_splits' first 60%), scored on the held-out windows by fxc's
torch backend, then exported with fxc.export as compressed-tensors (loaded by transformers with the
compressed-tensors package, which decompresses the packed int4 weights), GGUF (read back by transformers' GGUF
loader, which dequantizes the blocks) and dense hf, each scored on the same windows. A faithful export matches fxc's
perplexity to float rounding (compressed-tensors, hf) or to GGUF's float16 block scales. Reads the real-model
packages; writes the exports into a temporary folder; appends to benchmarks/RESULTS.md unless --no-record.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

import fxc  # noqa: E402


def cpu() -> str:
    """lscpu's model name and the SIMD flags that decide fxc's kernels."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile") if f in flags]
    return f"{fields.get('Model name', 'unknown').strip()} (flags: {' '.join(simd) or 'none of avx2/avx512/amx'})"


def folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", default="quantize{method=gptq,bits=4,group-size=64}")
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--eval", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    import transformers

    model, tokenizer = harness.load_smollm2()
    calib, evaluation = harness.wiki_splits(tokenizer, args.seq, args.calib, args.eval)
    dense_ppl = harness.perplexity(model, evaluation)
    with harness.timed() as t:
        cm = fxc.compile(model, args.passes, example_inputs=calib[0], calibration=calib, backend="torch")
    compile_s = t.seconds
    del model
    fxc_ppl = harness.perplexity(cm, evaluation)
    rows = [("fp32 dense (transformers)", dense_ppl, None, None, None), (f"fxc {args.passes}", fxc_ppl, None, None,
                                                                         compile_s)]
    print(rows, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, load in (
            ("compressed-tensors", lambda p: transformers.AutoModelForCausalLM.from_pretrained(p)),
            ("gguf", lambda p: transformers.AutoModelForCausalLM.from_pretrained(p, gguf_file="model.gguf")),
            ("hf", lambda p: transformers.AutoModelForCausalLM.from_pretrained(p)),
        ):
            out = Path(tmp) / fmt
            with harness.timed() as t:
                result = fxc.export(cm, out, format=fmt)
            print(result, flush=True)
            loaded = load(out).eval()
            rows.append((f"{fmt} -> transformers", harness.perplexity(loaded, evaluation), folder_mib(out),
                         result, t.seconds))
            del loaded
            print(rows[-1][:2], flush=True)
    lines = [f"{'model':<52} {'ppl':>8} {'vs fxc':>8} {'MiB':>7} {'seconds':>8}", "-" * 87]
    for name, ppl, mib, _, seconds in rows:
        delta = "" if name.startswith(("fp32", "fxc")) else f"{100 * (ppl / fxc_ppl - 1):+.3f}%"
        lines.append(f"{name:<52} {ppl:>8.3f} {delta:>8} {'' if mib is None else f'{mib:7.1f}':>7} "
                     f"{'' if seconds is None else f'{seconds:8.1f}':>8}")
    table = "\n".join(lines)
    gguf_errors = next(r[3] for r in rows if r[0].startswith("gguf"))
    values = list(gguf_errors.errors.values())
    notes = (f"CPU: {cpu()}. Calibration {args.calib} x {args.seq} tokens, evaluation {args.eval} x {args.seq} "
             f"held-out tokens. seconds: compile (fxc row) or export (format rows), on a 2-core machine shared with "
             f"other jobs. MiB: the exported folder (the tied embedding stays fp32 in every format). GGUF weight "
             f"error from float16 block scales: max {max(values):.2g}, mean {sum(values) / len(values):.2g} "
             f"(relative, {len(values)} layers).")
    harness.publish(table, "Export quality: SmolLM2-135M, fxc vs its exports loaded in transformers", notes,
                    record_it=not args.no_record)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
