"""Budgeted auto-compression against the best uniform technique at the same bytes (issue 9).

    python benchmarks/auto_quality.py                                   # SmolLM2-135M and MiniLM, 4x 6x 8x
    python benchmarks/auto_quality.py --models minilm --calib 8 --seq 128 --eval 8 --no-record

Budgets are "N x smaller than fp32" over the weights of the planned linear layers (auto's scope=layers;
embeddings, the LM head, norms and biases stay as they are, in every configuration). For each model the
graph is traced once and the analyses the auto pass needs (hessian, sensitivity of every candidate,
output gains) are computed once and shared by every run (they hold for a copy of the same graph).
Uniform baselines put one spec on every layer and are carried out by the same passes as the auto plan
(GPTQ, SparseGPT, whitened SVD), through the auto pass with that single candidate and exactly the
bytes it needs, so the comparison isolates the allocation. A spec some layer cannot hold is left out.
Quality: SmolLM2 perplexity on held-out Wikipedia text (gensim's dump, calibration from a disjoint
part); MiniLM cosine of sentence embeddings to the dense model and WordSim-353 Spearman.
Writes: a table (stdout and, unless --no-record, a section appended to benchmarks/RESULTS.md) and
benchmarks/auto_pareto_<model>.png (measured size/quality points plus the frontier auto predicted).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import matplotlib
import torch
from harness import peak_rss_mb, record, this_command, timed

import fxc
import fxc.eval.quality
import fxc.eval.realdata
from fxc import ir
from fxc.ir import meta
from fxc.ir.cost import model_bytes
from fxc.passes.auto.plan import layer_choices, stored_bytes
from fxc.passes.rewrites.auto import DEFAULT_CANDIDATES, Auto
from fxc.passes.select import DEFAULT_SKIP, select_layers
from fxc.passes.specs.candidates import parse_candidate, unfit
from fxc.passmgr.analysis_manager import AnalysisManager
from fxc.passmgr.calibration import Calibration
from fxc.passmgr.pipeline import Pipeline

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

UNIFORM = ("w8", "w4g64", "w4g32", "w4", "2:4+w8", "r0.5+w8", "r0.25+w8")
CANDIDATES = DEFAULT_CANDIDATES
FULL_RANK = tuple(c for c in CANDIDATES if not c.startswith("r"))  # while the low-rank pass is not installed
HERE = Path(__file__).parent


# --- the models ---------------------------------------------------------------------------------------


def smollm2(args):
    model, tokenizer = fxc.eval.realdata.load_smollm2()
    calib, evaluation = fxc.eval.realdata.wiki_splits(tokenizer, args.seq, args.calib, args.eval)
    quality = lambda fn: {"ppl": fxc.eval.quality.perplexity(fn, evaluation)}
    return model, calib, calib[0], DEFAULT_SKIP, quality, ("ppl", "lower")


def minilm(args):
    from fxc.eval.quality import embed, mean_cosine, wiki_sentences, wordsim_spearman

    model, tokenizer = fxc.eval.realdata.load_minilm()
    ids, _ = fxc.eval.realdata.wiki_splits(tokenizer, args.seq, args.calib, 1)
    batch = lambda i: {"input_ids": i, "attention_mask": torch.ones_like(i), "token_type_ids": torch.zeros_like(i)}
    calib = [batch(torch.cat(ids[i : i + 4])) for i in range(0, len(ids), 4)]
    text = fxc.eval.realdata.wiki_text()
    sentences = wiki_sentences(text[int(0.6 * len(text)) :], 32 * args.eval)  # the held-out part
    dense = embed(model, tokenizer, sentences)
    pairs = fxc.eval.realdata.wordsim353()

    def quality(fn):
        return {
            "cos": mean_cosine(dense, embed(fn, tokenizer, sentences)),
            "wordsim": wordsim_spearman(fn, tokenizer, pairs),
        }

    return model, calib, calib[0], (*DEFAULT_SKIP, "*pooler*"), quality, ("cos", "higher")


MODELS = {"smollm2": ("SmolLM2-135M", smollm2), "minilm": ("all-MiniLM-L6-v2", minilm)}


# --- one run ------------------------------------------------------------------------------------------


def compress(gm0, am0, calibration, auto: Auto):
    """A copy of gm0 compressed by `auto`, reusing gm0's cached analyses (same nodes, same weights)."""
    gm = copy.deepcopy(gm0)
    am = AnalysisManager(gm, calibration)
    am._cache.update(am0._cache)  # the AnalysisManager has no public way to share results between copies
    Pipeline.of([auto]).run(gm, am)
    ir.remove_unused_tensors(gm)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    return gm, meta.get(output, meta.Frontier)


def bench(key: str, args) -> tuple[list[dict], dict]:
    title, load = MODELS[key]
    model, calib, example, skip, quality, primary = load(args)
    calibration = Calibration.of(calib)
    gm0 = fxc.trace(model, example)
    layers = select_layers(gm0, (), skip, kinds=("linear",))
    dense_weights = sum(ir.get_tensor(gm0, layer.weight).numel() * 4 for layer in layers)
    fixed = model_bytes(gm0) - dense_weights
    am0 = AnalysisManager(gm0, calibration)
    common = {"skip": skip, "print_plan": False, "gain_batches": args.gain_batches, "probes": args.probes}
    common["candidates"] = CANDIDATES if "low-rank" in fxc.passmgr.registry.names("fxc.passes") else FULL_RANK
    rows = []

    def run(name: str, auto: Auto | None):
        with timed() as t:
            gm, frontier = compress(gm0, am0, calibration, auto) if auto else (gm0, None)
            measured = quality(gm)
        stored = model_bytes(gm) - fixed
        row = {"config": name, "ratio": dense_weights / stored, "weights": stored, "model": model_bytes(gm)}
        row |= measured | {"seconds": t.seconds, "frontier": frontier}
        rows.append(row)
        print({k: v for k, v in row.items() if k != "frontier"}, flush=True)

    run("dense", None)
    with timed() as t:  # the shared analyses: hessian, sensitivity of every candidate, output gains
        Auto(ratio=args.ratios[0], apply=False, **common).run(gm0, am0)
    print(f"shared analyses: {t.seconds:.0f} s", flush=True)
    for ratio in args.ratios:
        run(f"auto {ratio:g}x", Auto(ratio=ratio, **common))
    choices = layer_choices(gm0, layers, (), 1e12, 5e10)
    for spec in args.uniform:
        candidate = parse_candidate(spec)
        if candidate.rank_ratio is not None and common["candidates"] is FULL_RANK:
            print(f"uniform {spec}: the low-rank pass is not installed; left out", flush=True)
            continue
        if any(unfit(candidate, *c.shape) for c in choices):
            print(f"uniform {spec}: some layer cannot hold it; left out", flush=True)
            continue
        need = sum(stored_bytes(candidate, *c.shape, c.element_size) for c in choices)
        forced = {**common, "candidates": (spec,), "measure": "layer", "frontier": 0}
        run(f"uniform {spec}", Auto(bytes=need, **forced))
        if spec in args.matched:  # auto with exactly the bytes this uniform spec takes
            run(f"auto @ {spec}", Auto(bytes=need, **common))
    return rows, {"title": title, "primary": primary, "dense_weights": dense_weights, "layers": len(layers)}


# --- reporting ----------------------------------------------------------------------------------------


def table(rows: list[dict], info: dict, ratios) -> str:
    metrics = [k for k in rows[0] if k not in ("config", "ratio", "weights", "model", "seconds", "frontier")]
    head = ["config", "x smaller", "weight MB", "model MB", *metrics, "s"]
    lines = [head]
    for r in rows:
        values = [f"{r[m]:.4f}" if m != "ppl" else f"{r[m]:.2f}" for m in metrics]
        lines.append(
            [
                r["config"],
                f"{r['ratio']:.2f}",
                f"{r['weights'] / 1e6:.2f}",
                f"{r['model'] / 1e6:.2f}",
                *values,
                f"{r['seconds']:.0f}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines]
    key, order = info["primary"]
    better = (lambda a, b: a < b) if order == "lower" else (lambda a, b: a > b)

    def judge(auto: float, uniform: float) -> str:
        if abs(auto - uniform) <= 1e-3 * abs(uniform):
            return "tie (within 0.1%)"
        return "auto better" if better(auto, uniform) else "uniform better"

    text.append("")
    rank = lambda r: r[key] if order == "lower" else -r[key]
    uniform = [r for r in rows if r["config"].startswith("uniform")]
    for ratio in ratios:
        auto = next(r for r in rows if r["config"] == f"auto {ratio:g}x")
        best = min((r for r in uniform if r["ratio"] >= ratio), key=rank, default=None)
        near = min((r for r in uniform if ratio > r["ratio"] >= 0.95 * ratio), key=rank, default=None)
        mix = ", ".join(f"{c} x{n}" for c, n in auto["frontier"].mix)
        text.append(f"{ratio:g}x: auto {key} {auto[key]:.4g} ({auto['ratio']:.2f}x; {mix})")
        for what, r in (("best uniform within the budget", best), ("best uniform up to 5% over it", near)):
            if r is not None:
                verdict = judge(auto[key], r[key])
                text.append(f"    {what}: {r['config']} ({r['ratio']:.2f}x) {key} {r[key]:.4g} -> {verdict}")
        if best is None:
            text.append("    no uniform spec fits within the budget")
    for r in uniform:  # the same bytes exactly
        auto = next((a for a in rows if a["config"] == "auto @ " + r["config"].removeprefix("uniform ")), None)
        if auto is not None:
            verdict = judge(auto[key], r[key])
            mix = ", ".join(f"{c} x{n}" for c, n in auto["frontier"].mix)
            text.append(
                f"at {r['config']}'s bytes ({r['ratio']:.2f}x): auto {key} {auto[key]:.4g} vs {r[key]:.4g} -> {verdict}"
                f" (auto: {mix})"
            )
    return "\n".join(text)


def plot(rows: list[dict], info: dict, path: Path) -> None:
    key, order = info["primary"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    value = (lambda r: r[key]) if order == "lower" else (lambda r: 1 - r[key])
    label = key if order == "lower" else f"1 - {key}"
    auto = sorted((r for r in rows if r["config"].startswith("auto")), key=lambda r: r["weights"])
    left.plot([r["weights"] / 1e6 for r in auto], [value(r) for r in auto], "o-", label="auto")
    for r in rows:
        if r["config"].startswith("uniform"):
            left.plot(r["weights"] / 1e6, value(r), "s", color="tab:red")
            left.annotate(r["config"].removeprefix("uniform "), (r["weights"] / 1e6, value(r)), fontsize=8)
    dense = next(r for r in rows if r["config"] == "dense")
    if value(dense) > 0:
        left.axhline(value(dense), color="gray", ls="--", lw=0.8, label="dense")
    left.plot([], [], "s", color="tab:red", label="uniform")
    left.set(xlabel="stored MB of the planned weights", ylabel=label, yscale="log", title=f"{info['title']}: measured")
    left.legend()
    points = sorted({p for r in auto for p in r["frontier"].points})  # the same analyses: one frontier
    right.plot([p[0] / 1e6 for p in points], [p[1] for p in points], ".-", label="exact optimum per budget")
    for r in auto:
        right.plot(r["frontier"].chosen[0] / 1e6, r["frontier"].chosen[1], "k*")
        right.annotate(
            r["config"].removeprefix("auto "), (r["frontier"].chosen[0] / 1e6, r["frontier"].chosen[1]), fontsize=8
        )
    right.set(
        xlabel="stored MB of the planned weights",
        ylabel="predicted damage (relative output error)",
        yscale="symlog",
        title="frontier the search explored (* = chosen)",
    )
    right.set_yscale("symlog", linthresh=1e-4)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,minilm")
    parser.add_argument("--calib", type=int, default=16, help="calibration sequences")
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--eval", type=int, default=8, help="evaluation sequences (MiniLM: x32 sentences)")
    parser.add_argument("--ratios", default="4,6,8")
    parser.add_argument("--uniform", default=",".join(UNIFORM), help="uniform specs to compare with")
    parser.add_argument("--matched", default="w8,w4g32,w4g64,w4", help="uniform specs auto is also run at the size of")
    parser.add_argument("--gain-batches", type=int, default=2)
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.ratios = tuple(float(r) for r in args.ratios.split(","))
    args.matched = tuple(m for m in args.matched.split(",") if m)
    args.uniform = tuple(u for u in args.uniform.split(",") if u)
    torch.manual_seed(0)
    for key in args.models.split(","):
        rows, info = bench(key, args)
        text = table(rows, info, args.ratios)
        plot(rows, info, HERE / f"auto_pareto_{key}.png")
        notes = (
            f"{info['title']}: {info['layers']} planned linear layers, {info['dense_weights'] / 1e6:.1f} MB fp32. "
            f"Calibration {args.calib} x {args.seq} tokens, evaluation {args.eval} sequences of {args.seq} tokens"
            f" (MiniLM: {32 * args.eval} held-out sentences + WordSim-353); output gains from {args.gain_batches} "
            f"batches x {args.probes} probes. Peak RSS {peak_rss_mb():.0f} MiB. Plot: benchmarks/auto_pareto_{key}.png."
        )
        print(text + "\n" + notes)
        if not args.no_record:
            record(f"Budgeted auto-compression vs uniform: {info['title']}", this_command(), text, notes)


if __name__ == "__main__":
    main()
