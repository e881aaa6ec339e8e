"""How well and how fast sparse-gpt's kept-weight re-solve (passes/algorithms/mask_refine.py) reaches the exact
least-squares weights for SparseGPT's mask, on SmolLM2-135M layers.

    python benchmarks/refine_solver.py [--calib 16] [--blocks 10,15,19] [--no-record]

For every linear layer of the chosen decoder blocks: H from the `hessian` analysis on --calib x 512 tokens of
the Wikipedia calibration split (dense model), SparseGPT at 50% on W, then the kept weights re-solved by
  - fxc's refine_kept_weights (float32, Jacobi-preconditioned conjugate gradients) at 10 / 20 / 30 steps,
  - the earlier solver (float64 conjugate gradients, no preconditioner, 30 steps), written out here,
each scored by its layer error (w - w0) H (w - w0)ᵀ over a 400-step float64 reference (1.000 = exact), and
timed on one thread. Reads the SmolLM2 package; appends to benchmarks/RESULTS.md.
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
from fxc.passes.algorithms.gram import damped_hessian  # noqa: E402
from fxc.passes.algorithms.mask_refine import refine_kept_weights  # noqa: E402
from fxc.passes.algorithms.sparse_gpt import sparse_gpt  # noqa: E402
from fxc.passmgr.calibration import Calibration  # noqa: E402


def float64_cg(pruned: torch.Tensor, goal: torch.Tensor, h: torch.Tensor, steps: int) -> torch.Tensor:
    """The solver refine_kept_weights used before 2026-11-29: plain conjugate gradients in float64."""
    kept = (pruned != 0).double()
    x = pruned.double().clone()
    residual = kept * ((goal.double() - x) @ h)
    direction = residual.clone()
    norm = (residual * residual).sum(1, keepdim=True)
    for _ in range(steps):
        image = kept * (direction @ h)
        alpha = norm / (direction * image).sum(1, keepdim=True).clamp_min(1e-300)
        x += alpha * direction
        residual -= alpha * image
        new_norm = (residual * residual).sum(1, keepdim=True)
        direction = residual + (new_norm / norm.clamp_min(1e-300)) * direction
        norm = new_norm
    return (x * kept).float()


def layer_error(w: torch.Tensor, goal: torch.Tensor, h: torch.Tensor) -> float:
    delta = w.double() - goal.double()
    return float(((delta @ h) * delta).sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--blocks", default="10,15,19")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = harness.load_smollm2()
    calibration, _ = harness.wiki_splits(tokenizer, 512, args.calib, 1)
    gm = fxc.trace(model, (calibration[0],))
    hessians = fxc.AnalysisManager(gm, Calibration.of(calibration)).get("hessian")
    blocks = [f"model.layers.{b}." for b in args.blocks.split(",")]
    solvers = {
        "fxc 10 steps": lambda p, g, raw, d: refine_kept_weights(p, g, raw, 10, 0.01, "", d),
        "fxc 20 steps (default)": lambda p, g, raw, d: refine_kept_weights(p, g, raw, 20, 0.01, "", d),
        "fxc 30 steps": lambda p, g, raw, d: refine_kept_weights(p, g, raw, 30, 0.01, "", d),
        "float64 CG 30 (before)": lambda p, g, raw, d: float64_cg(p, g, d.matrix, 30),
    }
    errors = {name: [] for name in solvers} | {"sparse-gpt alone": []}
    seconds = dict.fromkeys(solvers, 0.0)
    for layer in ir.weight_layers(gm, ("linear",)):
        if not any(layer.fqn.startswith(b) for b in blocks):
            continue
        goal, raw = ir.get_tensor(gm, layer.weight), hessians[layer.node.name]
        damped = damped_hessian(raw, 0.01, layer.fqn)
        pruned = sparse_gpt(goal, raw, 0.5, None, 128, 0.01, layer.fqn, damped)
        exact = layer_error(float64_cg(pruned, goal, damped.matrix, 400), goal, damped.matrix)
        errors["sparse-gpt alone"].append(layer_error(pruned, goal, damped.matrix) / exact)
        for name, solve in solvers.items():
            start = time.perf_counter()
            refined = solve(pruned, goal, raw, damped)
            seconds[name] += time.perf_counter() - start
            errors[name].append(layer_error(refined, goal, damped.matrix) / exact)
    lines = [f"{'solver':26} {'error / exact: mean':>20} {'max':>8} {'seconds (all layers)':>21}"]
    for name, values in errors.items():
        spent = f"{seconds[name]:21.2f}" if name in seconds else f"{'':>21}"
        lines.append(f"{name:26} {sum(values) / len(values):20.4f} {max(values):8.4f} {spent}")
    notes = (
        f"{len(errors['sparse-gpt alone'])} linear layers of blocks {args.blocks}, SparseGPT 50% on H from "
        f"{args.calib} x 512 calibration tokens, one thread. error / exact: the layer error over a 400-step "
        "float64 solve for the same mask."
    )
    title = "sparse-gpt kept-weight re-solve: accuracy and time"
    harness.publish("\n".join(lines), title, notes, record_it=not args.no_record)


if __name__ == "__main__":
    main()
