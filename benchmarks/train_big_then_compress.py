"""Train big, then compress (Li et al., ICML 2020): at a fixed training compute budget, does a larger
model compressed to the byte size of a smaller one beat the smaller one trained as is?

    nice -n 10 python benchmarks/train_big_then_compress.py            # ~6 min on 2 busy shared cores
    python benchmarks/train_big_then_compress.py --budget-gflop 30 --targets 32,64 --no-record

Data: Fashion-MNIST from the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/),
or scikit-learn's digits where that is missing. Models: MLPs 784-h-h-10 (ReLU). For each target width
t (a dense fp32 model), the widths whose int8 and int4 (per-channel, fxc.ir.qformat) weights fit in the
bytes of fp32 width t are trained too. Every model gets the same training FLOPs (6 x params per
sample), so larger models see fewer samples. Adam, batch 128, cosine learning rate.

Arms, all lowered by fxc.compile and measured on the compiled model (bytes = every tensor it stores):
    fp32      the dense model of width t
    ptq-rtn   the larger model after the whole budget, `quantize{bits=B}` (round to nearest)
    ptq-gptq  the same, `quantize{method=gptq,bits=B}` with 512 calibration images
    qat       the larger model's checkpoint at (1 - qat_fraction) of its budget, trained the rest of
              the budget with fxc.passes.training.qat (plan recorded from the same quantize pass), then lowered
              by that pass: same total compute as every other arm
Writes: the table (stdout), a PNG of accuracy against bytes, and a section in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxc
from fxc.ir.cost import model_bytes
from fxc.passes.training import qat

sys.path.insert(0, str(Path(__file__).parent))
from harness import record, this_command, timed  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
FORMAT_BITS = {"int8": 8, "int4": 4}
BATCH = 128


def load_data() -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(name, x_train, y_train, x_test, y_test), inputs standardized with the training statistics."""
    if (FASHION / "train-images-idx3-ubyte.gz").exists():
        xs, ys = [_idx(FASHION / f"{s}-images-idx3-ubyte.gz") for s in ("train", "t10k")], [
            _idx(FASHION / f"{s}-labels-idx1-ubyte.gz") for s in ("train", "t10k")
        ]
        name, (x_train, x_test), (y_train, y_test) = "Fashion-MNIST", [x.reshape(len(x), -1) for x in xs], ys
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise SystemExit(
                "no data: `apt-get install -y dataset-fashion-mnist` (Fashion-MNIST) "
                "or `pip install scikit-learn` (digits)"
            ) from None
        digits = load_digits()
        order = np.random.default_rng(0).permutation(len(digits.target))
        x, y = digits.data[order], digits.target[order]
        name, x_train, x_test, y_train, y_test = "sklearn digits", x[:1500], x[1500:], y[:1500], y[1500:]
    x_train, x_test = (torch.tensor(a, dtype=torch.float32) for a in (x_train, x_test))
    mean, std = x_train.mean(), x_train.std()
    as_labels = lambda a: torch.tensor(np.asarray(a), dtype=torch.int64)
    return name, (x_train - mean) / std, as_labels(y_train), (x_test - mean) / std, as_labels(y_test)


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class MLP(nn.Module):
    def __init__(self, inputs: int, width: int, classes: int = 10):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(inputs, width), nn.Linear(width, width), nn.Linear(width, classes)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def shapes(inputs: int, width: int) -> list[tuple[int, int]]:
    return [(width, inputs), (width, width), (10, width)]


def params(inputs: int, width: int) -> int:
    return sum(n * k + n for n, k in shapes(inputs, width))


def expected_bytes(inputs: int, width: int, bits: int) -> int:
    """fp32 biases plus, per layer, the weight at `bits` and (quantized) one fp32 scale per row."""
    return sum(n * k * bits // 8 + 4 * n + (4 * n if bits < 32 else 0) for n, k in shapes(inputs, width))


def matched_width(inputs: int, target_bytes: int, bits: int) -> int:
    """The largest even width whose model at `bits` stores at most `target_bytes`."""
    width = 2
    while expected_bytes(inputs, width + 2, bits) <= target_bytes:
        width += 2
    return width


def cosine_lr(step: int, total: int, peak: float) -> float:
    warmup = max(1, total // 50)
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(model, x, y, first, last, total, peak_lr, seed, state=None) -> dict:
    """Steps [first, last) of a `total`-step cosine schedule (batches drawn per step, seeded). `state`:
    Adam's state by parameter name from an earlier call, so a run split in two is one run; returned."""
    optimizer = torch.optim.Adam(model.parameters(), peak_lr)
    named = {_plain(n): p for n, p in model.named_parameters()}
    for name, value in (state or {}).items():
        if name in named:
            optimizer.state[named[name]] = copy.deepcopy(value)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(last):
        batch = torch.randint(0, len(x), (BATCH,), generator=g)
        if step < first:
            continue
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, total, peak_lr)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return {name: optimizer.state[p] for name, p in named.items() if p in optimizer.state}


def _plain(name: str) -> str:
    """fc1.parametrizations.weight.original (a qat.prepare model) -> fc1.weight."""
    return name.replace(".parametrizations.", ".").replace(".original", "")


def measured(cm, fmt: str, arm: str, x_test, y_test) -> dict:
    return dict(fmt=fmt, arm=arm, bytes=model_bytes(cm.graph), acc=accuracy(cm, x_test, y_test))


def accuracy(fn, x, y) -> float:
    with torch.no_grad():
        return (fn(x).argmax(1) == y).float().mean().item()


def run_width(width, data, args, bits_list):
    """Train one width for the budget; return its arms as rows (dicts)."""
    _, x, y, x_test, y_test = data
    inputs = x.shape[1]
    steps = max(1, round(args.budget_gflop * 1e9 / (6 * params(inputs, width) * BATCH)))
    resume = round(steps * (1 - args.qat_fraction))
    torch.manual_seed(args.seed)
    model = MLP(inputs, width)
    state = train(model, x, y, 0, resume, steps, args.lr, args.seed)
    checkpoint, checkpoint_state = copy.deepcopy(model), copy.deepcopy(state)
    train(model, x, y, resume, steps, steps, args.lr, args.seed, state)  # exactly one uninterrupted run
    base = dict(width=width, params=params(inputs, width), steps=steps, epochs=steps * BATCH / len(x))
    example = (x_test[:2],)
    rows = [base | measured(fxc.compile(model, example_inputs=example), "fp32", "dense", x_test, y_test)]
    calibration = [(x[i : i + 128],) for i in range(0, 512, 128)]
    for bits in bits_list:
        passes = f"quantize{{bits={bits}}}"
        recorder = qat.PlanRecorder()
        for arm, text in (("ptq-rtn", passes), ("ptq-gptq", f"quantize{{method=gptq,bits={bits}}}")):
            instruments = [recorder] if arm == "ptq-rtn" else []
            cm = fxc.compile(
                model, passes=text, example_inputs=example, calibration=calibration, instruments=instruments
            )
            rows.append(base | measured(cm, f"int{bits}", arm, x_test, y_test))
        trainable = qat.prepare(checkpoint, recorder.plan, scales=args.scales)
        train(trainable, x, y, resume, steps, steps, args.lr, args.seed, checkpoint_state)
        cm = fxc.compile(qat.finish(trainable), passes=passes, example_inputs=example)
        rows.append(base | measured(cm, f"int{bits}", f"qat-{args.scales}", x_test, y_test))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--budget-gflop", type=float, default=100.0, help="training FLOPs per model (6 x params x samples)")
    add("--targets", default="32,64,128", help="widths of the dense fp32 models that set the byte budgets")
    add("--formats", default="int8,int4", help="compressed formats of the larger models")
    add("--qat-fraction", type=float, default=0.5, help="share of the budget trained with fake quantization")
    parser.add_argument("--scales", default="learned", choices=qat.SCALE_MODES)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", default=str(Path(__file__).with_name("train_big_then_compress.png")))
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--note", default="", help="a line added to the RESULTS.md section")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.export's pytree deprecations
    data = load_data()
    args.test_size = len(data[4])
    inputs = data[1].shape[1]
    targets = [int(t) for t in args.targets.split(",")]
    formats = [f for f in args.formats.split(",") if f]
    widths: dict[int, list[int]] = {}  # width -> bits it is compressed to ([] for the dense targets)
    plan = []  # (target, fmt, width)
    for t in targets:
        widths.setdefault(t, [])
        budget = expected_bytes(inputs, t, 32)
        for fmt in formats:
            w = matched_width(inputs, budget, FORMAT_BITS[fmt])
            widths.setdefault(w, []).append(FORMAT_BITS[fmt])
            plan.append((t, fmt, w))
    rows = []
    with timed() as clock:
        for width in sorted(widths):
            rows += run_width(width, data, args, sorted(set(widths[width]), reverse=True))
            print(f"  trained width {width} ({clock_since(clock):.0f} s)", flush=True)
    table, verdict = report(rows, plan, targets, data[0], args)
    print(table)
    print(verdict)
    write_plot(rows, args.plot, data[0], args.budget_gflop)
    if not args.no_record:
        notes = f"Plot: `benchmarks/{Path(args.plot).name}`. Run time {clock.seconds:.0f} s.\n\n{verdict}"
        notes += f"\n\n{args.note}" if args.note else ""
        record(f"Train big, then compress ({data[0]})", this_command(), table, notes)


def clock_since(clock) -> float:
    import time

    return time.perf_counter() - clock.start


def report(rows, plan, targets, dataset, args) -> tuple[str, str]:
    find = lambda w, fmt, arm: next(r for r in rows if r["width"] == w and r["fmt"] == fmt and r["arm"] == arm)
    columns = (("byte budget", 12), ("model", 10), ("format", 6), ("arm", 11), ("params", 9), ("bytes", 9))
    columns += (("steps", 6), ("epochs", 6), ("test acc", 8), ("vs fp32", 7), ("vs own fp32", 11))
    lines = [
        f"{dataset}; every model trained for {args.budget_gflop:g} GFLOP; qat trains the last "
        f"{args.qat_fraction:.0%} of its budget with fake quantization (scales={args.scales}); seed {args.seed}",
        " ".join(f"{name:>{width}}" for name, width in columns),
    ]
    outcomes: dict[str, list[str]] = {"win": [], "tie": [], "loss": []}
    train_gaps, compression_losses = [], []
    for t in targets:
        dense = find(t, "fp32", "dense")
        lines.append(_line(dense, dense, dense))
        noise = 2 * math.sqrt(dense["acc"] * (1 - dense["acc"]) / args.test_size)  # 2 standard errors
        for _, fmt, w in (p for p in plan if p[0] == t):
            own = find(w, "fp32", "dense")
            train_gaps.append(own["acc"] - dense["acc"])
            lines.append(_line(own, dense, own, budget=False))
            for r in (r for r in rows if r["width"] == w and r["fmt"] == fmt):
                lines.append(_line(r, dense, own))
                compression_losses.append(own["acc"] - r["acc"])
                gain = r["acc"] - dense["acc"]
                outcome = "win" if gain > noise else "loss" if gain < -noise else "tie"
                outcomes[outcome].append(f"{fmt} {r['arm']} w{w} vs fp32 w{t} ({100 * gain:+.2f} pt)")
        lines.append("")
    lines.append("(ref): the larger model uncompressed, over the byte budget; vs own fp32: against that row")
    wins, ties, losses = (outcomes[k] for k in ("win", "tie", "loss"))
    held = "held" if wins and not losses else "did not hold" if losses and not wins else "was not settled"
    verdict = (
        f"Verdict at {args.budget_gflop:g} GFLOP per model: the claim {held}. Of {len(wins) + len(ties) + len(losses)} "
        f"compressed larger models, {len(wins)} beat the dense model of their byte budget by more than two standard "
        f"errors of the test set (~{100 * noise:.1f} pt), {len(ties)} were within that, {len(losses)} lost"
        + (f". Wins: {'; '.join(wins)}" if wins else "")
        + f". Uncompressed, the larger models were {_span(train_gaps)} pt against the smaller dense models "
        f"(the budget buys them fewer epochs); compression itself cost {_span(compression_losses)} pt "
        "(negative: the compressed model scored higher). One training seed: seed-to-seed variation is not in the "
        "error bar."
    )
    return "\n".join(lines).rstrip(), verdict


def _span(values: list[float]) -> str:
    return f"{100 * min(values):+.2f} to {100 * max(values):+.2f}" if values else "n/a"


def _line(r, dense, own, budget: bool = True) -> str:
    delta, own_delta = 100 * (r["acc"] - dense["acc"]), 100 * (r["acc"] - own["acc"])
    arm = r["arm"] if budget else "(ref)"
    return (
        f"{dense['bytes']:>12,} {'w' + str(r['width']):>10} {r['fmt']:>6} {arm:>11} {r['params']:>9,} "
        f"{r['bytes']:>9,} {r['steps']:>6} {r['epochs']:>6.2f} {100 * r['acc']:>7.2f}% {delta:>+7.2f} "
        f"{own_delta:>+11.2f}"
    )


def write_plot(rows, path, dataset, budget) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"dense": ("k", "o", "-"), "ptq-rtn": ("tab:orange", "s", ""), "ptq-gptq": ("tab:red", "^", "")}
    for (fmt, arm) in sorted({(r["fmt"], r["arm"]) for r in rows}):
        pts = sorted((r["bytes"], 100 * r["acc"], r["width"]) for r in rows if r["fmt"] == fmt and r["arm"] == arm)
        color, marker, line = styles.get(arm, ("tab:blue", "D", ""))
        marker = marker if fmt != "int8" else {"s": "P", "^": "v", "D": "X"}.get(marker, marker)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=line or "none", marker=marker, color=color,
                alpha=0.9 if fmt != "int8" else 0.6, label=f"{fmt} {arm}")
        for b, a, w in pts if arm in ("dense", "ptq-rtn") else ():  # one label per model
            offset = (4, -3 if arm == "dense" else 3)
            ax.annotate(f"w{w}", (b, a), fontsize=7, xytext=offset, textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("deployed bytes (fxc.compile, all tensors)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Train big, then compress: {dataset}, {budget:g} GFLOP per model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
