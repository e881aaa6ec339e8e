"""Compressed models against fp32 eager on the CPU, torch backend, per instruction-set family (issue #26).

    python benchmarks/cpu_speed.py                                     # the whole grid -> RESULTS.md
    python benchmarks/cpu_speed.py --models smollm2 --threads 1 --tokens 1,128 --no-record   # a subset
    python benchmarks/cpu_speed.py --layers --no-record                # the kernels alone, layer by layer

Models: SmolLM2-135M and all-MiniLM-L6-v2 (fxc.eval.realdata), 1 x T tokens, no KV cache. Variants:
    fp32        the Hugging Face model itself, eager (every ratio's denominator)
    fxc fp32    the control: the dense model through fxc's traced graph on the torch backend, so what the
                graph itself costs shows apart from the kernels
    w8, w4g64   quantize{bits=8}, quantize{bits=4,group-size=64}
    w8a8        quantize{act-bits=8} (dynamic activation scales)
    2:4, 50%    prune{method=magnitude,pattern=2:4,lower=true}, prune{method=magnitude,sparsity=0.5}
    w8 all, w4g64 all   the same with skip=[]: the LM head quantized too (the default skip keeps the LM head and
                embeddings fp32; SmolLM2's LM head is a fifth of its linear weights)
Each variant runs on the torch backend; every variant of one (model, threads, tokens) is timed in the same loop,
interleaved, and the table gives fp32 eager time / variant time (above 1: faster than fp32), medians of the rounds.

ISA sections (--isa): `machine` runs the backend with this CPU's family; `avx2` with backend_options
{"isa": "avx2"}, the kernels an AVX2-only CPU gets. In the avx2 section torch's own kernels are capped to AVX2
too (MKL_ENABLE_INSTRUCTIONS=AVX2, ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2 in a child process), so
the fp32 baseline is the one such a CPU runs; --no-emulate leaves torch at this CPU's ISA. Each section runs in
its own child process. Before timing, each variant's output is compared with its graph's reference ops.
--layers times the weight-only and W8A8 kernels alone on SmolLM2's layer shapes against F.linear (the rule
of native/avx2.py's GEMV_ROWS / OUTER_ROWS and of the backend's W8A8 choice comes from these rows).
Reads the real models from their packages; appends a dated section to benchmarks/RESULTS.md (unless
--no-record), with the CPU's model name and flags from lscpu.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from functools import partial

import torch
import torch.nn.functional as F
from cpu_backends import interleaved_ms
from harness import record, this_command

VARIANTS = {  # name -> pipeline ("" = fp32 eager)
    "fp32": "",
    "fxc fp32": "dce",  # the control: the same dense model through fxc's graph (no compression, no fxc op)
    "w8": "quantize{bits=8}",
    "w4g64": "quantize{bits=4,group-size=64}",
    "w8a8": "quantize{act-bits=8}",
    "2:4": "prune{method=magnitude,pattern=2:4,lower=true}",
    "50%": "prune{method=magnitude,sparsity=0.5}",
    "w8 all": "quantize{bits=8,skip=[]}",  # the LM head too (the default skip keeps it fp32)
    "w4g64 all": "quantize{bits=4,group-size=64,skip=[]}",
}
EMULATE_AVX2 = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
FLAGS_SHOWN = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile",
               "amx_int8")


def lscpu_line() -> str:
    """The CPU's model name and the ISA flags that matter here."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    name = fields.get("Model name", "?").strip()
    flags = set(fields.get("Flags", "").split())
    shown = [flag for flag in FLAGS_SHOWN if flag in flags]
    return f"{name}; flags: {' '.join(shown) or 'none of ' + ' '.join(FLAGS_SHOWN)}"


def load(name: str, tokens: int):
    from fxc.eval.realdata import load_minilm, load_smollm2

    model, tokenizer = load_minilm() if name == "minilm" else load_smollm2()
    ids = torch.randint(100, tokenizer.vocab_size - 100, (1, tokens), generator=torch.Generator().manual_seed(0))
    if name == "minilm":
        return model, lambda t: {"input_ids": ids[:, :t], "attention_mask": torch.ones_like(ids[:, :t])}
    return model, lambda t: {"input_ids": ids[:, :t]}


def main_output(output) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output.last_hidden_state


# --- one ISA section (child process) ----------------------------------------------------------------------------


def section(args) -> list[dict]:
    import fxc
    from fxc.codegen.torch.native import isa as cpu_isa

    options = {} if args.isa == "machine" else {"isa": args.isa}
    tokens_list = [int(t) for t in args.tokens.split(",")]
    rows = []
    for name in args.models.split(","):
        model, example = load(name, max(tokens_list + [16]))
        traced = fxc.trace(model, example(16))
        compiled = {}
        for variant in args.variants.split(","):
            if variant == "fp32":
                continue
            reference = fxc.compile(traced, passes=VARIANTS[variant], example_inputs=example(16), backend="torch",
                                    backend_options={"fast": False})  # fmt: skip
            fast = fxc.compile(reference.graph, example_inputs=example(16), backend="torch", backend_options=options)
            with torch.no_grad():
                want, got = main_output(reference(**example(7))), main_output(fast(**example(7)))
            error = ((got - want).norm() / want.norm()).item()
            if not error < 1e-3:
                raise AssertionError(f"{name} {variant}: fast kernels differ from the reference ops by {error:.1e}")
            compiled[variant] = fast
            summary = getattr(fast.runner, "summary_note", lambda: "no fxc op in the graph")()
            print(f"# {name} {variant}: {summary}; error vs reference ops {error:.1e}", flush=True)
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            for tokens in tokens_list:
                inputs = example(tokens)
                candidates = {"fp32": partial(model, **inputs)}
                candidates |= {variant: partial(module, **inputs) for variant, module in compiled.items()}
                with torch.no_grad():
                    ms = interleaved_ms(candidates, args.repeats)
                row = {"isa": cpu_isa.describe(options.get("isa", "auto")), "model": name, "threads": threads,
                       "tokens": tokens, "fp32_ms": ms["fp32"],
                       **{variant: ms["fp32"] / ms[variant] for variant in compiled}}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def run_section(args, isa: str) -> list[dict]:
    """One ISA section in a child process (torch's own ISA capped too for avx2 unless --no-emulate)."""
    env = dict(os.environ)
    if isa == "avx2" and args.emulate:
        env.update(EMULATE_AVX2)
    command = [sys.executable, __file__, "--child", "--isa", isa, "--models", args.models, "--threads", args.threads,
               "--tokens", args.tokens, "--variants", args.variants, "--repeats", str(args.repeats)]
    rows = []
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as child:
        for line in child.stdout:
            print(line.rstrip(), flush=True)
            if line.startswith("{"):
                rows.append(json.loads(line))
    if child.returncode != 0:
        raise SystemExit(f"the {isa} section failed (exit status {child.returncode})")
    return rows


def table(rows: list[dict], variants: list[str], emulated: bool) -> str:
    """One line per (section, model, threads, tokens); the section's family in short ('avx2 cap' for the cap)."""
    names = [v for v in variants if v != "fp32"]
    head = f"{'kernels':<16}{'model':<9}{'thr':>4}{'tokens':>7}{'fp32 ms':>9}" + "".join(f"{n:>10}" for n in names)
    lines = [head, "-" * len(head)]
    for r in rows:
        family = r["isa"].split(" (")[0] + (" cap" if "capped" in r["isa"] else "")
        family += "+torch" if emulated and "capped" in r["isa"] and family.startswith("avx2") else ""
        line = f"{family:<16}{r['model']:<9}{r['threads']:>4}{r['tokens']:>7}{r['fp32_ms']:>9.1f}"
        lines.append(line + "".join(f"{r[name]:>9.2f}x" if name in r else f"{'':>10}" for name in names))
    return "\n".join(lines)


# --- the kernels alone, layer by layer --------------------------------------------------------------------------


def layer_candidates(x: torch.Tensor, weights: list, quantized: dict) -> dict:
    """One call round per candidate over the distinct weights: fp32 F.linear and each kernel."""
    from fxc.codegen.torch import fast_ops, weight_only

    def each(fn, qs):
        return lambda: [fn(x, q) for q in qs]

    def weight_only_on(family):
        return lambda x, q: weight_only.weight_only_linear(x, *q[:3], None, q.bits, None, True, family)

    def w8a8(fn):
        return lambda x, q: fn(x, q.qweight, q.scale.reshape(-1), None, None)

    def loop(name, qs):  # one loop of avx2_weight_only.c forced at any number of rows (native/avx2.py's rule aside)
        from fxc.codegen.torch.native import avx2

        gemv, outer = {"gemv": (10**9, 10**9), "dot": (0, 10**9), "outer": (0, 0)}[name]

        def run():
            rule = avx2.GEMV_ROWS, avx2.OUTER_ROWS
            avx2.GEMV_ROWS, avx2.OUTER_ROWS = {8: gemv, 4: gemv}, outer
            try:
                return [avx2.weight_only_linear(x, q, None) for q in qs]
            finally:
                avx2.GEMV_ROWS, avx2.OUTER_ROWS = rule

        return run

    w8, w4, a8 = quantized["w8"], quantized["w4g64"], quantized["w8a8"]
    candidates = {
        "fp32": lambda: [F.linear(x, w) for w in weights],
        "w8 avx2": each(weight_only_on("avx2"), w8),
        "w8 torch": each(weight_only_on("generic"), w8),
        "w4g64 avx2": each(weight_only_on("avx2"), w4),
        "w4g64 torch": each(weight_only_on("generic"), w4),
        **{f"w8 {name}": loop(name, w8) for name in ("gemv", "dot", "outer")},
        **{f"w4g64 {name}": loop(name, w4) for name in ("gemv", "dot", "outer")},
        "w8a8 avx2": each(w8a8(fast_ops.int8_linear_avx2), a8),
        "w8a8 _int_mm": each(w8a8(fast_ops.int8_linear_int_mm), a8),
    }
    if weight_only.has_int8_dot():  # torch._int_mm's VNNI/AMX kernels: the int8 planes of the torch kernels
        candidates["w8 planes"] = each(weight_only_on("avx512_vnni"), w8)
    return candidates


def layer_rows(repeats: int, tokens_list: list[int], layers: int) -> list[dict]:
    from fxc.ir import qformat

    rows = []
    generator = torch.Generator().manual_seed(0)
    for n, k in [(576, 576), (192, 576), (1536, 576), (576, 1536)]:  # SmolLM2: q/o, k/v, gate/up, down
        weights = [torch.randn(n, k, generator=generator) * 0.05 for _ in range(layers)]
        quantized = {
            "w8": [qformat.quantize_rtn(w, 8) for w in weights],
            "w4g64": [qformat.quantize_rtn(w, 4, 64, symmetric=False) for w in weights],
            "w8a8": [qformat.quantize_rtn(w, 8, full_range=False) for w in weights],
        }
        for tokens in tokens_list:
            x = torch.randn(tokens, k, generator=generator)
            count = layers if tokens <= 16 else max(2, layers // 10)  # decode reads weights that are not cache-hot
            candidates = layer_candidates(x, weights[:count], {name: qs[:count] for name, qs in quantized.items()})
            ms = interleaved_ms(candidates, repeats)
            row = {"layer": f"{n}x{k}", "tokens": tokens, "fp32_ms": ms["fp32"] / count}
            rows.append(row | {name: ms["fp32"] / value for name, value in ms.items() if name != "fp32"})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def layer_table(rows: list[dict]) -> str:
    names = [name for name in rows[0] if name not in ("layer", "tokens", "fp32_ms")]
    head = f"{'layer [N x K]':<14}{'tokens':>7}{'fp32 ms':>9}" + "".join(f"{n:>13}" for n in names)
    lines = [head, "-" * len(head)]
    for r in rows:
        ratios = "".join(f"{r[n]:>12.2f}x" for n in names)
        lines.append(f"{r['layer']:<14}{r['tokens']:>7}{r['fp32_ms']:>9.3f}" + ratios)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,minilm")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--tokens", default="1,16,128,512")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--isa", default="machine,avx2", help="sections: machine and/or a family cap (avx2, ...)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-emulate", dest="emulate", action="store_false",
                        help="leave torch's own kernels at this CPU's ISA in the avx2 section")
    parser.add_argument("--layers", action="store_true", help="time the kernels alone on SmolLM2's layer shapes")
    parser.add_argument("--no-record", dest="record", action="store_false")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        section(args)
        return
    cpu = lscpu_line()
    if args.layers:
        torch.set_num_threads(int(args.threads.split(",")[0]))
        text = f"CPU: {cpu}\n\n" + layer_table(layer_rows(args.repeats, [int(t) for t in args.tokens.split(",")], 30))
        print(text)
        if args.record:
            threads = args.threads.split(",")[0]
            record(f"CPU kernels alone, SmolLM2 layer shapes, fp32 F.linear / kernel time, {threads} thread(s) "
                   f"(median of {args.repeats} interleaved)", this_command(), text,
                   "avx2: native/avx2_weight_only.c, avx2_int8.c by native/avx2.py's rule; gemv / dot / outer: one "
                   "loop of avx2_weight_only.c forced; torch: dequantized tiles + BLAS; planes: int8 planes through "
                   "torch._int_mm; w8a8 avx2: the AVX2 int8 kernel alone. The box was shared with other jobs; only "
                   "same-row ratios compare.")
        return
    rows = []
    for isa in args.isa.split(","):
        rows += run_section(args, isa)
    text = f"CPU: {cpu}\n\n" + table(rows, args.variants.split(","), args.emulate)
    print(text)
    if args.record:
        sections = "; ".join(sorted({r["isa"] for r in rows}))
        notes = (f"Sections: {sections}. Ratios: fp32 eager time / variant time, medians of interleaved rounds in "
                 "one process per section. 'avx2 cap+torch': the backend option isa=avx2 and torch's own kernels "
                 "capped to AVX2 in that section (" +
                 " ".join(f"{k}={v}" for k, v in EMULATE_AVX2.items()) + "), so fp32 is what an AVX2-only CPU runs. "
                 "The box was shared with other jobs during the run; only ratios within a row compare.")
        record(f"Compressed vs fp32 eager on the CPU by ISA family (median of {args.repeats} interleaved)",
               this_command(), text, notes)


if __name__ == "__main__":
    main()
