"""Re-solve a pruned layer's kept weights for its least-squares output error, the mask held fixed.

    refined = refine_kept_weights(pruned, original, hessian, steps=20, damp=0.01, layer="mlp.down_proj")

SparseGPT chooses the mask and updates the remaining weights column by column, each update optimal
only for the columns not yet visited, so its result is not the best weight for its own mask. With the
mask M fixed, the best kept weights of each output row w minimize (w - w0) H (w - w0)ᵀ over w with
w = 0 off M (H = 2XᵀX/n of the layer's input, dampened as SparseGPT dampens it): the linear system
H_MM w_M = H_M: w0ᵀ, one per row. It is solved for all rows at once by conjugate gradients started from
the pruned weight, preconditioned by diag(H) (Jacobi), in float32: each step is one [N, K] x [K, K]
product, and a few tens of steps come close to the exact solve (benchmarks/refine_solver.py compares
them). The zeros stay zeros, so N:M patterns are kept. Reads its arguments; writes nothing.
"""

from __future__ import annotations

import torch

from fxc.passes.algorithms.gram import DampedHessian, damped_hessian

DEFAULT_STEPS = 20  # what prune{method=sparse-gpt} runs unless told otherwise (and auto estimates with)
_TINY = 1e-30


def refine_kept_weights(
    pruned: torch.Tensor,
    original: torch.Tensor,
    hessian: torch.Tensor,
    steps: int,
    damp: float,
    layer: str,
    damped: DampedHessian | None = None,
) -> torch.Tensor:
    """The kept weights of `pruned` re-solved to fit `original` under `hessian`; same zeros, shape, dtype.
    `damped`: `hessian` already dampened and factored, when the caller has it."""
    if steps <= 0:
        return pruned
    h = (damped or damped_hessian(hessian, damp, layer)).matrix.to(torch.float32)
    kept = (pruned != 0).reshape(pruned.shape[0], -1).to(torch.float32)
    target = original.detach().reshape(kept.shape).to(torch.float32)
    x = pruned.detach().reshape(kept.shape).to(torch.float32).clone()
    inverse_diagonal = (1.0 / torch.diagonal(h)).unsqueeze(0)
    residual = kept * ((target - x) @ h)
    preconditioned = residual * inverse_diagonal
    direction = preconditioned.clone()
    product = (residual * preconditioned).sum(1, keepdim=True)
    for _ in range(steps):
        image = kept * (direction @ h)
        alpha = product / (direction * image).sum(1, keepdim=True).clamp_min(_TINY)
        x.addcmul_(alpha, direction)
        residual.addcmul_(alpha, image, value=-1.0)
        torch.mul(residual, inverse_diagonal, out=preconditioned)
        new_product = (residual * preconditioned).sum(1, keepdim=True)
        direction.mul_(new_product / product.clamp_min(_TINY)).add_(preconditioned)
        product = new_product
    return (x * kept).to(pruned.dtype).view_as(pruned)
