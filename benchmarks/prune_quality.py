"""Pruning quality on real models: SmolLM2-135M perplexity, MiniLM embeddings, structured-pruning latency,
and llm-compressor's SparseGPT / Wanda on the same data (benchmarks/prune_peers.py, its own venv).

    python benchmarks/prune_quality.py --calib 128 --eval 40 --seq 512 [--peer /tmp/peer-llmc/bin/python]
    python benchmarks/prune_quality.py --calib 16 --eval 8 --no-record        # a quick look

Each model runs in its own subprocess (`--worker KIND`): it loads the model, takes wiki_splits
(calibration from the first 60% of the dump, evaluation from the last 40%), traces once, then prunes
each configuration with fxc.compile (a fresh copy of the traced graph each) and measures. Peak RSS is
the process's peak so far; sparse-gpt 50% runs first, so its number is sparse-gpt's own peak (model,
graph copy and layer-by-layer calibration). The peer runs on the very same token ids. The parent prints one table per
model and appends them to benchmarks/RESULTS.md. Reads the real-model packages; writes RESULTS.md and a
temporary token file for the peer script.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

import fxc  # noqa: E402

SMOLLM = {
    "dense": None,
    "magnitude 50%": "prune{method=magnitude,sparsity=0.5}",
    "wanda 50%": "prune{method=wanda,sparsity=0.5}",
    "sparse-gpt 50%": "prune{method=sparse-gpt,sparsity=0.5}",
    "sparse-gpt 50% (stages=3)": "prune{method=sparse-gpt,sparsity=0.5,stages=3}",  # gradual: better, slower
    "sparse-gpt 50% (stages=5)": "prune{method=sparse-gpt,sparsity=0.5,stages=5}",
    "sparse-gpt 50% (owl)": "prune{method=sparse-gpt,sparsity=0.5,allocation=owl}",
    "sparse-gpt 50% (fit=dense)": "prune{method=sparse-gpt,sparsity=0.5,fit=dense}",  # no residual-stream fit
    "sparse-gpt 50% (fit=layer)": "prune{method=sparse-gpt,sparsity=0.5,fit=layer}",  # classic SparseGPT target
    "wanda 2:4": "prune{method=wanda,pattern=2:4}",
    "sparse-gpt 2:4": "prune{method=sparse-gpt,pattern=2:4}",
    "sparse-gpt 2:4 (fit=layer)": "prune{method=sparse-gpt,pattern=2:4,fit=layer}",
    "channel 25% (wanda)": "prune{method=wanda,pattern=channel,sparsity=0.25}",
    "heads 25% (wanda)": "prune{method=wanda,pattern=head,sparsity=0.25}",
}
MINILM = {
    "dense": None,
    "magnitude 50%": "prune{method=magnitude,sparsity=0.5}",
    "wanda 50%": "prune{method=wanda,sparsity=0.5}",
    "sparse-gpt 50%": "prune{method=sparse-gpt,sparsity=0.5}",
    "sparse-gpt 50% (fit=dense)": "prune{method=sparse-gpt,sparsity=0.5,fit=dense}",
    "wanda 2:4": "prune{method=wanda,pattern=2:4}",
    "sparse-gpt 2:4": "prune{method=sparse-gpt,pattern=2:4}",
    "heads 25% (wanda)": "prune{method=wanda,pattern=head,sparsity=0.25}",
}


# -- workers (a fresh process each; configurations run in order on one traced graph) --------------------------


def smollm_worker(names: list[str], args) -> list[dict]:
    """Perplexity of each configuration; peak RSS is the process's peak so far (sparse-gpt runs first)."""
    model, tokenizer = harness.load_smollm2()
    calib, evaluation = harness.wiki_splits(tokenizer, args.seq, args.calib, args.eval)
    graph = fxc.trace(model, (calib[0],))
    results = []
    for name in names:
        passes, seconds, cpu, pruned = SMOLLM[name], 0.0, 0.0, model
        if passes is not None:
            cpu_start = _cpu_seconds()
            with harness.timed() as t:
                pruned = fxc.compile(graph, passes, example_inputs=(calib[0],), calibration=[(c,) for c in calib])
            seconds, cpu = t.seconds, _cpu_seconds() - cpu_start
        ppl = harness.perplexity(pruned, evaluation)
        results.append({"name": name, "ppl": ppl, "seconds": seconds, "cpu": cpu, "peak_rss_mb": harness.peak_rss_mb()})
        print("PARTIAL " + json.dumps(results[-1]), flush=True)
        del pruned
        gc.collect()  # graph modules hold reference cycles: free the last configuration's weights now
    return results


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def latency_worker(args) -> dict:
    """Dense vs 25%-channel-pruned SmolLM2 (whole model and one MLP), alternating runs in one process."""
    model, tokenizer = harness.load_smollm2()
    calib, evaluation = harness.wiki_splits(tokenizer, args.seq, 4, 1)
    dense = fxc.compile(model, None, example_inputs=(calib[0],))
    pruned = fxc.compile(
        model, SMOLLM["channel 25% (wanda)"], example_inputs=(calib[0],), calibration=[(c,) for c in calib]
    )
    ids = evaluation[0]
    mlp = model.model.layers[0].mlp
    hidden = torch.randn(1, args.seq, mlp.gate_proj.in_features)
    small = _shrunk_mlp(pruned.graph, mlp)
    timings = {"model dense": [], "model channel 25%": [], "mlp dense": [], "mlp channel 25%": []}
    with torch.no_grad():
        for fn in (dense, pruned):
            fn(ids)
        for _ in range(args.reps):
            for key, fn, x in (
                ("model dense", dense, ids),
                ("model channel 25%", pruned, ids),
                ("mlp dense", mlp, hidden),
                ("mlp channel 25%", small, hidden),
            ):
                start = time.perf_counter()
                fn(x)
                timings[key].append(time.perf_counter() - start)
    return {k: sorted(v)[len(v) // 2] * 1000 for k, v in timings.items()} | {"peak_rss_mb": harness.peak_rss_mb()}


def _shrunk_mlp(gm, mlp):
    """The layer-0 MLP rebuilt from the pruned graph's (smaller) weights."""
    import copy

    from fxc import ir

    small = copy.deepcopy(mlp)
    prefix = "model.layers.0.mlp."
    for part in ("gate_proj", "up_proj", "down_proj"):
        weight = ir.get_tensor(gm, prefix + part + ".weight")
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        layer.weight = torch.nn.Parameter(weight.detach().clone(), requires_grad=False)
        setattr(small, part, layer)
    return small


def minilm_worker(names: list[str], args) -> list[dict]:
    model, tokenizer = harness.load_minilm()
    sentences = harness.wiki_sentences(harness.wiki_text(), count=2 * args.sentences)
    calib_text, eval_text = sentences[: args.sentences], sentences[args.sentences :]
    reference = harness.embed(model, tokenizer, eval_text)
    batches = [
        dict(tokenizer(calib_text[i : i + 16], padding=True, truncation=True, max_length=128, return_tensors="pt"))
        for i in range(0, len(calib_text), 16)
    ]
    graph = fxc.trace(model, batches[0])
    results = []
    for name in names:
        passes, seconds, pruned = MINILM[name], 0.0, model
        if passes is not None:
            with harness.timed() as t:
                pruned = fxc.compile(graph, passes, example_inputs=batches[0], calibration=batches)
            seconds = t.seconds
        cosine = harness.mean_cosine(harness.embed(pruned, tokenizer, eval_text), reference)
        rho = harness.wordsim_spearman(pruned, tokenizer, harness.wordsim353())
        results.append(
            {"name": name, "cosine": cosine, "wordsim": rho, "seconds": seconds, "peak_rss_mb": harness.peak_rss_mb()}
        )
        print("PARTIAL " + json.dumps(results[-1]), flush=True)
    return results


# -- the parent: run every worker, print and record the tables --------------------------------------------------


def run_worker(kind: str, names: list[str], args) -> list[dict] | dict:
    """Run a worker; a worker that dies part-way (out of memory, ...) still yields the configurations
    it finished (its PARTIAL lines), with a warning."""
    command = [sys.executable, __file__, "--worker", kind, "--name", ",".join(names), *_shared_flags(args)]
    done = subprocess.run(command, capture_output=True, text=True)
    partial = []
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
        if line.startswith("PARTIAL "):
            partial.append(json.loads(line[len("PARTIAL ") :]))
    if not partial:
        raise RuntimeError(f"worker {kind} {names} failed:\n{done.stderr[-3000:]}")
    print(f"worker {kind} died after {len(partial)} configurations (rc {done.returncode})", flush=True)
    return partial


def _shared_flags(args) -> list[str]:
    return [
        "--calib",
        str(args.calib),
        "--eval",
        str(args.eval),
        "--seq",
        str(args.seq),
        "--sentences",
        str(args.sentences),
        "--reps",
        str(args.reps),
        "--threads",
        str(args.threads),
    ]


def activation_cache_mb(args) -> float:
    """What caching every linear layer's input for the whole calibration set would take (SmolLM2: per block
    q/k/v input 576, o_proj input 576, gate/up input 576, down input 1536; 30 blocks; fp32)."""
    return args.calib * args.seq * (576 * 3 + 1536) * 30 * 4 / 2**20


def smollm_table(args) -> str:
    """fxc's worker and the peer (when given) run at the same time, on the same token ids."""
    order = ["sparse-gpt 50%"] + [n for n in SMOLLM if n != "sparse-gpt 50%"]  # its peak RSS is first
    order = [n for n in order if chosen(n, args)]
    with tempfile.TemporaryDirectory() as folder:
        peer = start_peer(args, Path(folder) / "tokens.pt") if args.peer else None
        results = {r["name"]: r for r in run_worker("smollm", order, args)}
        dense = results["dense"]["ppl"]
        rows = [
            (f"fxc {n}", r["ppl"], r["ppl"] / dense, r["seconds"], r["cpu"], r["peak_rss_mb"])
            for n, r in results.items()
        ]
        rows += peer_rows(peer, dense) if peer else []
    lines = [
        f"{'configuration':34} {'perplexity':>10} {'x dense':>8} {'prune s':>8} {'prune CPU s':>11} "
        f"{'peak RSS MiB':>12}"
    ]
    lines += [f"{n:34} {p:10.2f} {x:8.2f} {s:8.1f} {c:11.1f} {m:12.0f}" for n, p, x, s, c, m in rows]
    cache = activation_cache_mb(args)
    lines.append(f"(caching every layer input of the calibration set at once would take {cache:,.0f} MiB)")
    return "\n".join(lines)


PEER_CONFIGS = ("sparsegpt 50%", "wanda 50%", "sparsegpt 2:4", "wanda 2:4")


def start_peer(args, data: Path) -> subprocess.Popen:
    from transformers import AutoTokenizer

    from fxc.eval.realdata import smollm2_gguf

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    calib, evaluation = harness.wiki_splits(tokenizer, args.seq, args.calib, args.eval)
    torch.save({"calib": calib, "eval": evaluation}, data)
    configs = [x for c in peer_configs(args) for x in ("--config", c)]
    script = Path(__file__).with_name("prune_peers.py")
    command = [
        args.peer,
        str(script),
        "--gguf",
        str(gguf),
        "--data",
        str(data),
        *configs,
        "--threads",
        str(args.threads),
    ]
    # stdout (llm-compressor's log lines and the RESULT lines) and stderr (progress bars) go to files: a pipe
    # nobody reads until the fxc worker ends fills up (64 KiB) and stalls the peer, which would then neither
    # run side by side with fxc nor report its own time (2026-11-29: its stdout log filled the pipe part-way)
    out, err = tempfile.TemporaryFile(mode="w+"), tempfile.TemporaryFile(mode="w+")
    peer = subprocess.Popen(command, stdout=out, stderr=err, text=True)
    peer.stdout_log, peer.stderr_log, peer.configs = out, err, peer_configs(args)
    return peer


def peer_configs(args) -> list[str]:
    """--peer-configs picks the peer's configurations (default: all of PEER_CONFIGS)."""
    wanted = args.peer_configs.split(",") if args.peer_configs else list(PEER_CONFIGS)
    unknown = [c for c in wanted if c not in PEER_CONFIGS]
    if unknown:
        raise SystemExit(f"--peer-configs: unknown {unknown}; choose from {list(PEER_CONFIGS)}")
    return wanted


def peer_rows(peer: subprocess.Popen, dense: float) -> list[tuple]:
    peer.wait()
    peer.stdout_log.seek(0)
    peer.stderr_log.seek(0)
    out, err = peer.stdout_log.read(), peer.stderr_log.read()
    rows = []
    for line in out.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT ") :])
            name = f"llm-compressor {r['config']}"
            rows.append((name, r["ppl"], r["ppl"] / dense, r["seconds"], r["cpu"], r["peak_rss_mb"]))
    if len(rows) < len(peer.configs):
        print(f"peer failed:\n{err[-3000:]}", flush=True)
    return rows


def chosen(name: str, args) -> bool:
    """--configs picks configurations by name (dense always runs: every ratio is to it)."""
    return not args.configs or name == "dense" or name in args.configs.split(",")


def minilm_table(args) -> str:
    head = f"{'configuration':26} {'cosine vs dense':>15} {'WordSim-353 rho':>15} {'prune s':>8} {'peak RSS MiB':>12}"
    lines = [head]
    for r in run_worker("minilm", [n for n in MINILM if chosen(n, args)], args):
        lines.append(
            f"{r['name']:26} {r['cosine']:15.4f} {r['wordsim']:15.4f} {r['seconds']:8.1f} {r['peak_rss_mb']:12.0f}"
        )
    return "\n".join(lines)


def latency_table(args) -> str:
    r = run_worker("latency", [], args)
    lines = [f"{'forward, 1 x ' + str(args.seq) + ' tokens':28} {'dense ms':>9} {'channel 25% ms':>15} {'speed-up':>9}"]
    for what in ("model", "mlp"):
        d, p = r[f"{what} dense"], r[f"{what} channel 25%"]
        lines.append(
            f"{'SmolLM2 ' + ('whole model' if what == 'model' else 'layer-0 MLP'):28} {d:9.1f} {p:15.1f} {d / p:8.2f}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=128, help="calibration sequences")
    parser.add_argument("--eval", type=int, default=40, help="held-out evaluation sequences")
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--sentences", type=int, default=128, help="MiniLM calibration and evaluation sentences each")
    parser.add_argument("--reps", type=int, default=10, help="latency repetitions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (and peer)")
    parser.add_argument(
        "--peer", default="", help="python of a venv with llmcompressor (e.g. /tmp/peer-llmc/bin/python)"
    )
    parser.add_argument("--parts", default="smollm,minilm,latency", help="which tables")
    parser.add_argument("--configs", default="", help="comma-separated configuration names (default: all)")
    parser.add_argument(
        "--peer-configs",
        default="",
        help="comma-separated, of " + ", ".join(PEER_CONFIGS).replace("%", "%%") + " (default: all)",
    )
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(args.threads)
        names = [n for n in args.name.split(",") if n]
        worker = {
            "smollm": lambda: smollm_worker(names, args),
            "minilm": lambda: minilm_worker(names, args),
            "latency": lambda: latency_worker(args),
        }[args.worker]
        print("RESULT " + json.dumps(worker()), flush=True)
        return
    sizes = f"calibration {args.calib} x {args.seq} tokens, evaluation {args.eval} x {args.seq} tokens"
    builders = {
        "smollm": ("SmolLM2-135M pruning perplexity (" + sizes + ")", smollm_table),
        "minilm": (
            f"MiniLM-L6 pruning: embeddings ({args.sentences} calibration / {args.sentences} held-out "
            "sentences) and WordSim-353",
            minilm_table,
        ),
        "latency": ("SmolLM2-135M structured pruning latency (25% of MLP channels removed)", latency_table),
    }
    for part in args.parts.split(","):
        title, build = builders[part]
        table = build(args)
        if args.no_record:
            print(f"\n## {title}\n{table}")
        else:
            harness.record(title, harness.this_command(), table)


if __name__ == "__main__":
    main()
