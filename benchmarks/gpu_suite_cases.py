"""The cases benchmarks/gpu_suite.py runs: each compression scheme as (op, weights) built from a random
dense weight, plus the byte count the kernel must move. Shared by the correctness and the timing part.

    case = make_case("w4a16", n=4096, k=4096, device="cuda", group_size=128)
    y = FusedLinear(case.op, Epilogue(()), cache)(*case.args(x))
    case.weight_bytes

Schemes: w8a16 (int8 weights, one scale per output channel), w4a16 (int4, group-wise scales),
w8a8 (int8 weights and dynamic per-token int8 activations), sparse24 (2:4 sparse, values in the
activation dtype plus uint8 indices), block50 (a dense weight in the activation dtype with half of
its 64 x 64 tiles zero: aten.linear on the block-sparse template). Reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fxc.ir import qformat

fxc_ops = torch.ops.fxc
SCHEMES = ("w8a16", "w4a16", "w8a8", "sparse24", "block50")
BLOCK = 64


@dataclass
class Case:
    scheme: str
    op: object
    weights: tuple  # the op's arguments after x
    dense: torch.Tensor  # the float32 weight the case was made from (bf16 baseline, peers' quantizers)

    def args(self, x: torch.Tensor) -> tuple:
        return (x, *self.weights)

    @property
    def weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.weights if isinstance(t, torch.Tensor))


def make_case(scheme: str, n: int, k: int, device: str, group_size: int = 128, dtype=torch.bfloat16,
              seed: int = 0) -> Case:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    dense = (torch.randn(n, k, generator=generator) / k**0.5).to(device)
    if scheme == "w8a16":
        w = qformat.quantize_rtn(dense, 8)
        return Case(scheme, fxc_ops.quantized_linear.default, (w.qweight, w.scale, None, None, 8), dense)
    if scheme == "w4a16":
        w = qformat.quantize_rtn(dense, 4, group_size, symmetric=False)
        return Case(scheme, fxc_ops.quantized_linear.default, (w.qweight, w.scale, w.zero_point, None, 4), dense)
    if scheme == "w8a8":
        w = qformat.quantize_rtn(dense, 8)
        return Case(scheme, fxc_ops.int8_linear.default, (w.qweight, w.scale.reshape(-1), None, None), dense)
    if scheme == "sparse24":
        values, indices = pack_nm(dense, 2, 4)
        return Case(scheme, fxc_ops.sparse_nm_linear.default, (values.to(dtype), indices, None, None, 2, 4), dense)
    if scheme == "block50":
        rows, cols = torch.meshgrid(torch.arange(-(-n // BLOCK)), torch.arange(-(-k // BLOCK)), indexing="ij")
        tiles = (rows + cols) % 2 == 1  # a checkerboard: half the tiles zero, tile (0, 0) not
        zero = tiles.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[:n, :k].to(device)
        return Case(scheme, torch.ops.aten.linear.default, (dense.masked_fill(zero, 0).to(dtype), None), dense)
    raise ValueError(f"unknown scheme {scheme!r}; known: {SCHEMES}")


def pack_nm(weight: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude N:M pruning of `weight` packed as (values, uint8 indices), fxc.ir.ops layout."""
    rows, cols = weight.shape
    groups = weight.view(rows, cols // m, m)
    keep = groups.abs().topk(n, dim=-1).indices.sort(dim=-1).values
    return groups.gather(-1, keep).reshape(rows, -1).contiguous(), keep.reshape(rows, -1).to(torch.uint8).contiguous()


def reference(case: Case, x: torch.Tensor) -> torch.Tensor:
    """The op's torch reference on float32 inputs: what every dtype is compared against."""
    weights = tuple(w.float() if isinstance(w, torch.Tensor) and w.is_floating_point() else w for w in case.weights)
    return case.op(x.float(), *weights)
