"""Low-rank quality on real models: plain vs whitened (activation-aware) SVD at 10% and 20% fewer
linear-layer parameters, uniform per-layer ratio vs a model-wide budget allocated per layer.

    python benchmarks/low_rank_quality.py --calib 64 --eval 40 --seq 512          # the recorded run
    python benchmarks/low_rank_quality.py --calib 16 --eval 8 --no-record         # a quick look
    python benchmarks/low_rank_quality.py --only smollm --configs "whitened r0.8"  # one row

SmolLM2-135M: perplexity on held-out Wikipedia text (fxc.eval.realdata.wiki_splits: calibration windows from
the first 60% of the dump, evaluation from the last 40%). MiniLM (all-MiniLM-L6-v2): mean cosine of
sentence embeddings against the dense model on held-out Wikipedia sentences, and WordSim-353 Spearman.
Each model is traced once; every configuration compiles a copy of that graph. "kept" is the fraction
of the selected linear layers' weights left (every linear layer but the LM head), read off the
compressed graph. Reads the real-model packages; appends the tables to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

import fxc  # noqa: E402
from fxc import ir  # noqa: E402
from fxc.ir import meta

CONFIGS = {
    "dense": None,
    "svd r0.9": "low-rank{method=svd,ratio=0.9}",
    "whitened r0.9": "low-rank{method=whitened,ratio=0.9}",
    "whitened budget 0.9": "low-rank{method=whitened,budget=0.9}",
    "svd r0.8": "low-rank{method=svd,ratio=0.8}",
    "whitened r0.8": "low-rank{method=whitened,ratio=0.8}",
    "whitened budget 0.8": "low-rank{method=whitened,budget=0.8}",
}
ABLATIONS = {  # run with --configs NAME ...
    "whitened r0.8 one-shot": "low-rank{method=whitened,ratio=0.8,sequential=false}",
    "whitened budget 0.8 abs": "low-rank{method=whitened,budget=0.8,allocate=absolute}",
    "whitened budget 0.9 abs": "low-rank{method=whitened,budget=0.9,allocate=absolute}",
    "svd budget 0.8": "low-rank{method=svd,budget=0.8}",
}


def kept_fraction(gm: torch.fx.GraphModule, dense_params: int) -> float:
    """Weights of the selected linear layers after compression over before (split halves counted)."""
    total = 0
    for layer in ir.weight_layers(gm, kinds=("linear",)):
        if layer.fqn.endswith("lm_head"):
            continue
        total += ir.get_tensor(gm, layer.weight).numel()
    return total / dense_params


def linear_params(gm: torch.fx.GraphModule) -> int:
    return sum(ir.get_tensor(gm, layer.weight).numel() for layer in ir.weight_layers(gm, kinds=("linear",))
               if not layer.fqn.endswith("lm_head"))


def run_configs(graph, names, calibration, measure) -> list[tuple[str, dict]]:
    dense_params = linear_params(graph)
    rows = []
    for name in names:
        passes = {**CONFIGS, **ABLATIONS}[name]
        timing = fxc.Timing()
        start = time.perf_counter()
        compiled = fxc.compile(graph, passes, calibration=calibration, instruments=[timing])
        seconds = time.perf_counter() - start
        result = measure(compiled)
        result |= {"kept": kept_fraction(compiled.graph, dense_params), "seconds": seconds,
                   "dense layers": sum(1 for n in compiled.graph.graph.nodes if meta.get(n, meta.KeptDense))}
        print(name, result, "|", timing.records[-1][3][:160] if timing.records else "", flush=True)
        rows.append((name, result))
        del compiled  # one compressed copy alive at a time
    return rows


def smollm(args) -> str:
    model, tokenizer = harness.load_smollm2()
    calib, evaluation = harness.wiki_splits(tokenizer, args.seq, args.calib, args.eval)
    graph = fxc.trace(model, (calib[0],))
    del model
    rows = run_configs(graph, args.configs, [(c,) for c in calib],
                       lambda m: {"ppl": harness.perplexity(m, evaluation)})
    dense = dict(rows).get("dense", {}).get("ppl")
    lines = [f"{'config':<22} {'kept':>7} {'ppl':>10} {'x dense':>8} {'dense layers':>13} {'compile s':>10}"]
    for name, r in rows:
        ratio = f"{r['ppl'] / dense:.2f}" if dense else ""
        lines.append(f"{name:<22} {r['kept']:>7.1%} {r['ppl']:>10.2f} {ratio:>8} {r['dense layers']:>13} "
                     f"{r['seconds']:>10.1f}")
    return "\n".join(lines)


def minilm(args) -> str:
    model, tokenizer = harness.load_minilm()
    sentences = harness.wiki_sentences(harness.wiki_text(), count=2 * args.sentences)
    calib_text, eval_text = sentences[: args.sentences], sentences[args.sentences:]
    reference = harness.embed(model, tokenizer, eval_text)
    batches = [dict(tokenizer(calib_text[i:i + 16], padding=True, truncation=True, max_length=128,
                              return_tensors="pt")) for i in range(0, len(calib_text), 16)]
    graph = fxc.trace(model, batches[0])
    del model
    pairs = harness.wordsim353()

    def measure(m):
        return {"cosine": harness.mean_cosine(harness.embed(m, tokenizer, eval_text), reference),
                "wordsim": harness.wordsim_spearman(m, tokenizer, pairs)}

    rows = run_configs(graph, args.configs, batches, measure)
    lines = [f"{'config':<22} {'kept':>7} {'cosine':>8} {'wordsim353':>11} {'dense layers':>13} {'compile s':>10}"]
    for name, r in rows:
        lines.append(f"{name:<22} {r['kept']:>7.1%} {r['cosine']:>8.4f} {r['wordsim']:>11.4f} "
                     f"{r['dense layers']:>13} {r['seconds']:>10.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=64, help="SmolLM2 calibration sequences")
    parser.add_argument("--eval", type=int, default=40, help="SmolLM2 held-out evaluation sequences")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--sentences", type=int, default=256, help="MiniLM calibration (and evaluation) sentences")
    parser.add_argument("--only", choices=("smollm", "minilm"), default=None)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=[*CONFIGS, *ABLATIONS])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a shared machine: 1)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    sizes = (f"SmolLM2: {args.calib} calibration x {args.seq} tokens, {args.eval} held-out x {args.seq} tokens; "
             f"MiniLM: {args.sentences} calibration sentences, {args.sentences} held-out sentences, WordSim-353; "
             f"{args.threads} torch thread(s)")
    for which, fn, title in (("smollm", smollm, "SmolLM2-135M perplexity"),
                             ("minilm", minilm, "MiniLM embeddings")):
        if args.only not in (None, which):
            continue
        table = fn(args)
        print(table)
        if not args.no_record:
            kind = "plain vs whitened SVD" if args.configs == list(CONFIGS) else "ablations"
            harness.record(f"Low rank: {title}, {kind}", harness.this_command(), table, notes=sizes)


if __name__ == "__main__":
    main()
