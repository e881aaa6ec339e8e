"""Decoding speed on the CPU (issue #21): SmolLM2-135M generating with its KV cache, fxc beside transformers and
llama.cpp.

    python benchmarks/decode_speed.py                                          # the whole grid -> RESULTS.md
    python benchmarks/decode_speed.py --threads 1 --variants w8,w4g64 --modes eager --peers none --no-record
    python benchmarks/decode_speed.py --profile w8,w4g64                       # + one decode step, op by op

A prompt of --prompt tokens (the held-out Wikipedia text of fxc.eval.realdata.wiki_splits) and --new new tokens,
greedy, batch 1, with no end-of-sequence stop (every run makes exactly --new tokens). Each row: prefill ms (the call
until the first new token: the prompt's forward and the first choice) and decode tokens/s ((new - 1) over the time
from the first new token to the last). Candidates:
    transformers eager          model.generate with its DynamicCache (the fp32 model: every ratio's denominator)
    transformers static+compile model.generate(cache_implementation="static") with transformers' own torch.compile
                                of the decoding step (CompileConfig, on the CPU too)
    fxc <variant> [compile]     fxc.compile(model, PIPELINE) (a causal LM: its KV-cache step graph) on the torch
                                backend, cm.generate; "compile": the same graph with backend_options torch_compile
    llama.cpp Q8_0/Q4_0/Q4_1    llama-cpp-python in its own venv (--llama-python; decode_speed_llamacpp.py): the
                                package's Q4_1 GGUF of SmolLM2 and Q8_0 / Q4_0 made from it by llama.cpp's quantizer
fxc variants: fp32 (dce), w8 (quantize{bits=8}), w4g64 (quantize{bits=4,group-size=64}), w8a8
(quantize{act-bits=8}), and "w8 all" / "w4g64 all" (skip=[]: the LM head quantized too, as llama.cpp's files hold it;
fxc's default keeps it fp32). All candidates run in one process per thread count's rounds, interleaved (one run of
each per round, the order rotated each round), after one warm-up run each (compilation happens there); the table
gives medians over --rounds. Columns: "x hf" is decode tokens/s over transformers eager's; "x llama.cpp" is over
llama.cpp's at the same bits (w8: Q8_0; w4g64: Q4_0 and Q4_1); "= hf" is how many leading new tokens equal
transformers eager's greedy tokens (quantized models may part ways at a near tie; fxc fp32 should not).
--profile adds, for each named fxc variant (eager, the first thread count), a torch.profiler breakdown of decode
steps (decode_profile.py). Reads the real model and text from their packages; writes GGUF files into a temporary
folder; appends a dated section to benchmarks/RESULTS.md (CPU model and ISA flags, command, table, notes) unless
--no-record.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from cpu_speed import lscpu_line
from harness import record, this_command

PIPELINES = {"fp32": "dce", "w8": "quantize{bits=8}", "w4g64": "quantize{bits=4,group-size=64}",
             "w8a8": "quantize{act-bits=8}", "w8 all": "quantize{bits=8,skip=[]}",
             "w4g64 all": "quantize{bits=4,group-size=64,skip=[]}"}
SAME_BITS = {"w8": ("Q8_0",), "w8 all": ("Q8_0",), "w4g64": ("Q4_0", "Q4_1"), "w4g64 all": ("Q4_0", "Q4_1")}
GGUF_KINDS = {"Q8_0": "q8_0", "Q4_0": "q4_0", "Q4_1": None}  # None: the package's own file
PEER_SCRIPT = Path(__file__).with_name("decode_speed_llamacpp.py")
HF = "transformers eager"


def prompt_ids(tokenizer, length: int) -> torch.Tensor:
    from fxc.eval.realdata import wiki_splits

    _, evaluation = wiki_splits(tokenizer, seq_len=length, n_calib=1, n_eval=1)
    return evaluation[0]


# --- the candidates: each a function of nothing returning (prefill ms, decode tokens/s, new tokens) ----------------


def fxc_candidates(model, ids, new: int, variants: list[str], modes: list[str]) -> tuple[dict, dict]:
    """The fxc candidates, and each variant's eager compiled model (for --profile)."""
    import fxc
    from fxc.cli.stream import TokenClock

    def run(cm):
        def once():
            clock = TokenClock()
            clock.start()
            out = cm.generate(ids, max_new_tokens=new, eos_token_id=[], streamer=clock)
            return clock.prefill_ms, clock.decode_tokens_per_s, out[0, ids.shape[1]:].tolist()
        return once

    found, eager_modules = {}, {}
    for variant in variants:
        started = time.perf_counter()
        eager = fxc.compile(model, PIPELINES[variant], example_inputs={"input_ids": ids[:, :16]}, backend="torch")
        if eager.kv_cache is None:
            raise SystemExit(f"fxc {variant}: compiled without its KV cache; cm.generate cannot run it")
        seconds = time.perf_counter() - started
        print(f"# fxc {variant} ({PIPELINES[variant]}): compiled in {seconds:.0f} s; {eager.backend_summary()}",
              flush=True)
        eager_modules[variant] = eager
        if "eager" in modes:
            found[f"fxc {variant}"] = run(eager)
        if "compile" in modes:
            compiled = fxc.compile(eager.graph, example_inputs={"input_ids": ids[:, :16]}, backend="torch",
                                   backend_options={"torch_compile": True})
            found[f"fxc {variant} compile"] = run(compiled)
    return found, eager_modules


def hf_candidates(model, ids, new: int, static: bool) -> dict:
    from transformers import CompileConfig

    class Clock:  # transformers' streamer protocol: put(prompt) first, then put(token) for each new token
        def __init__(self):
            self.times = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    def run(**options):
        def once():
            clock, started = Clock(), time.perf_counter()
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, use_cache=True, streamer=clock, pad_token_id=0, **options)
            times = clock.times[1:]
            return ((times[0] - started) * 1e3, (len(times) - 1) / (times[-1] - times[0]),
                    out[0, ids.shape[1]:].tolist())
        return once

    found = {HF: run()}
    if static:
        config = CompileConfig()
        config._compile_all_devices = True  # transformers compiles the decoding step on GPUs only unless told
        found["transformers static+compile"] = run(cache_implementation="static", compile_config=config)
    return found


class LlamaCpp:
    """The peer process (decode_speed_llamacpp.py serve) and the GGUF files it times."""

    def __init__(self, python: str, ids, new: int, folder: Path) -> None:
        from fxc.eval.realdata import smollm2_gguf

        self.files = {}
        for name, kind in GGUF_KINDS.items():
            path = smollm2_gguf() if kind is None else folder / f"smollm2-{kind}.gguf"
            if kind is not None:
                subprocess.run([python, str(PEER_SCRIPT), "quantize", str(smollm2_gguf()), str(path), kind], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.files[name] = path
        command = [python, str(PEER_SCRIPT), "serve", "--prompt-ids", ",".join(map(str, ids[0].tolist())),
                   "--new", str(new)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        stderr=subprocess.DEVNULL)
        self.info = json.loads(self.process.stdout.readline())
        self.threads = 1
        self.warm: set = set()

    def candidates(self) -> dict:
        def run(name):
            def once():
                request = {"model": str(self.files[name]), "threads": self.threads,
                           "warmup": (name, self.threads) not in self.warm}
                self.warm.add((name, self.threads))
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
                answer = json.loads(self.process.stdout.readline())
                return answer["prefill_ms"], answer["decode_tokens_per_s"], answer["tokens"]
            return once
        return {f"llama.cpp {name}": run(name) for name in self.files}

    def types(self) -> str:
        """Each file's tensor types, counted (read with the gguf package)."""
        import collections

        import gguf

        parts = []
        for name, path in self.files.items():
            count = collections.Counter(t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors)
            parts.append(f"{name}: " + ", ".join(f"{n} {kind}" for kind, n in count.most_common()))
        return "; ".join(parts)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


# --- timing and the table --------------------------------------------------------------------------------------------


def timed_rounds(candidates: dict, rounds: int) -> dict[str, dict]:
    """Median prefill ms and decode tokens/s of each candidate over interleaved rounds (after one warm-up run each)."""
    tokens = {}
    for name, once in candidates.items():
        started = time.perf_counter()
        tokens[name] = once()[2]
        print(f"# warm-up {name}: {time.perf_counter() - started:.0f} s", flush=True)
    samples: dict[str, list] = {name: [] for name in candidates}
    names = list(candidates)
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            prefill_ms, tokens_per_s, _ = candidates[name]()
            samples[name].append((prefill_ms, tokens_per_s))
            print(f"# round {round_} {name}: prefill {prefill_ms:.1f} ms, decode {tokens_per_s:.2f} tokens/s",
                  flush=True)
    return {name: {"prefill_ms": statistics.median(s[0] for s in samples[name]),
                   "tokens_per_s": statistics.median(s[1] for s in samples[name]), "tokens": tokens[name]}
            for name in candidates}


def same_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def table(rows: dict[int, dict[str, dict]], new: int) -> str:
    head = (f"{'thr':>3}  {'candidate':<30}{'prefill ms':>11}{'decode tok/s':>14}{'x hf':>7}  {'x llama.cpp':<24}"
            f"{'= hf':>6}")
    lines = [head, "-" * len(head)]
    for threads, results in rows.items():
        base = results.get(HF)
        for name, r in results.items():
            vs_hf = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else ""
            variant = name.removeprefix("fxc ").removesuffix(" compile")
            peers = [(kind, results.get(f"llama.cpp {kind}")) for kind in SAME_BITS.get(variant, ())]
            vs_llama = " ".join(f"{kind} {r['tokens_per_s'] / p['tokens_per_s']:.2f}x" for kind, p in peers if p)
            agree = f"{same_prefix(r['tokens'], base['tokens'])}/{new}" if base else ""
            lines.append(f"{threads:>3}  {name:<30}{r['prefill_ms']:>11.1f}{r['tokens_per_s']:>14.2f}{vs_hf:>7}  "
                         f"{vs_llama:<24}{agree:>6}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens (default 128)")
    parser.add_argument("--new", type=int, default=128, help="new tokens (default 128)")
    parser.add_argument("--variants", default=",".join(PIPELINES), help=f"fxc variants: {', '.join(PIPELINES)}")
    parser.add_argument("--modes", default="eager,compile", help="fxc modes: eager (torch backend), compile "
                        "(backend_options torch_compile=True)")
    parser.add_argument("--peers", default="hf,hf-static,llama.cpp", help="peers: hf, hf-static, llama.cpp, none")
    parser.add_argument("--llama-python", default="/work/peers/llamacpp/bin/python",
                        help="python of the venv with llama-cpp-python")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default="", help="fxc variants whose decode step to profile, e.g. w8,w4g64")
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args()
    from fxc.eval.realdata import load_smollm2

    model, tokenizer = load_smollm2()
    ids = prompt_ids(tokenizer, args.prompt)
    peers, notes = args.peers.split(","), []
    candidates = {}
    if "hf" in peers or "hf-static" in peers:
        candidates |= hf_candidates(model, ids, args.new, static="hf-static" in peers)
    modes = args.modes.split(",")
    profiled = [v for v in args.profile.split(",") if v]
    timed, eager_modules = fxc_candidates(model, ids, args.new, [v for v in args.variants.split(",") if v], modes)
    candidates |= timed
    llama, folder = None, tempfile.TemporaryDirectory(prefix="decode-speed-")
    if "llama.cpp" in peers:
        if Path(args.llama_python).is_file():
            llama = LlamaCpp(args.llama_python, ids, args.new, Path(folder.name))
            candidates |= llama.candidates()
            notes.append(f"llama.cpp: llama-cpp-python {llama.info['llama_cpp_python']}, system info "
                         f"`{llama.info['system_info']}`; GGUF tensor types: {llama.types()}.")
        else:
            notes.append(f"llama.cpp: not run ({args.llama_python} does not exist; give --llama-python).")
    rows = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        if llama is not None:
            llama.threads = threads
        rows[threads] = timed_rounds(candidates, args.rounds)
        print(json.dumps({str(threads): {k: {**v, "tokens": v["tokens"][:8]} for k, v in rows[threads].items()}}),
              flush=True)
    if llama is not None:
        llama.close()
    text = f"CPU: {lscpu_line()}\n\n" + table(rows, args.new)
    load = os.getloadavg()
    notes.append(f"Load average at the end of the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) "
                 f"on {os.cpu_count()} cores: the box was shared with other jobs, so absolute speeds vary; rows of one "
                 "thread count were timed in the same interleaved rounds and compare.")
    if profiled:
        from decode_profile import profile_variants

        torch.set_num_threads(int(args.threads.split(",")[0]))
        missing = [v for v in profiled if v not in eager_modules]
        eager_modules |= fxc_candidates(model, ids, args.new, missing, [])[1]
        text += "\n\n" + profile_variants({f"fxc {v} ({PIPELINES[v]})": eager_modules[v] for v in profiled}, ids)
    print(text)
    print("\n".join(notes))
    if args.record:
        record(f"Decoding speed, SmolLM2-135M, {args.prompt} + {args.new} tokens greedy (median of {args.rounds} "
               "interleaved rounds)", this_command(), text, "\n\n".join(notes))


if __name__ == "__main__":
    main()
