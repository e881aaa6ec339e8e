"""Epilogues: the elementwise work fused after a compressed linear, as kernel text and kernel args.

An `Epilogue` is a tuple of steps applied in order to the float32 accumulator `acc` [BLOCK_M,
BLOCK_N] of a tile, before the masked store:

    Step("add", operand=i)   acc += operand i (a [M, N] tensor, or an [N] row broadcast over M)
    Step("mul", operand=i)   acc *= operand i (e.g. the up projection of SwiGLU)
    Step("add", scalar=c)    acc += c (a Python number, passed as a kernel argument)
    Step("relu" | "silu" | "gelu" | "gelu_tanh" | "sigmoid" | "tanh")

`params()` is the text for the `{{epilogue_params}}` hook of a kernel signature, `code()` the text
for the `{{epilogue}}` hook, and `runtime_args(operands, m, n)` the values to pass for those params.
Inside the hook the kernel provides `acc`, `offs_m`, `offs_n`, `mask_mn` (offs_m < M & offs_n < N).
Tensor operands are addressed as 2-D with strides, a row operand with stride 0 along M, so one load
form serves both. Everything runs in float32; the store casts to the output's dtype.
Reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ACTIVATIONS = {
    "relu": "acc = tl.maximum(acc, 0.0)",
    "silu": "acc = acc * tl.sigmoid(acc)",
    "sigmoid": "acc = tl.sigmoid(acc)",
    "tanh": "acc = 2.0 * tl.sigmoid(2.0 * acc) - 1.0",
    "gelu": "acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))",
    "gelu_tanh": (
        "inner = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)\n"
        "acc = 0.5 * acc * (1.0 + (2.0 * tl.sigmoid(2.0 * inner) - 1.0))"
    ),
}
BINARY = {"add": "+", "mul": "*"}


@dataclass(frozen=True)
class Step:
    kind: str  # a key of BINARY or ACTIVATIONS
    operand: int | None = None  # index into the epilogue operands (tensor steps)
    scalar: float | None = None  # the constant of a scalar step

    def __post_init__(self):
        if self.kind not in BINARY and self.kind not in ACTIVATIONS:
            raise ValueError(f"unknown epilogue step {self.kind!r}; known: {sorted(BINARY) + sorted(ACTIVATIONS)}")
        if self.kind in BINARY and (self.operand is None) == (self.scalar is None):
            raise ValueError(f"epilogue step {self.kind!r} needs exactly one of operand or scalar")

    def describe(self) -> str:
        if self.kind in ACTIVATIONS:
            return self.kind
        return f"{self.kind}({'operand ' + str(self.operand) if self.operand is not None else self.scalar})"


@dataclass(frozen=True)
class Epilogue:
    steps: tuple[Step, ...] = ()

    @property
    def operand_count(self) -> int:
        return sum(1 for s in self.steps if s.operand is not None)

    def describe(self) -> str:
        return " -> ".join(s.describe() for s in self.steps) or "none"

    def params(self) -> str:
        names = []
        for i, step in enumerate(self.steps):
            if step.operand is not None:
                names += [f"epi{i}_ptr", f"epi{i}_stride_m", f"epi{i}_stride_n"]
            elif step.scalar is not None:
                names.append(f"epi{i}_value")
        return ", ".join(names) + "," if names else ""

    def code(self) -> str:
        lines = []
        for i, step in enumerate(self.steps):
            if step.kind in ACTIVATIONS:
                lines.append(ACTIVATIONS[step.kind])
                continue
            symbol = BINARY[step.kind]
            if step.scalar is not None:
                lines.append(f"acc = acc {symbol} epi{i}_value")
                continue
            lines.append(
                f"epi{i} = tl.load(epi{i}_ptr + offs_m[:, None] * epi{i}_stride_m"
                f" + offs_n[None, :] * epi{i}_stride_n, mask=mask_mn, other=0.0)"
            )
            lines.append(f"acc = acc {symbol} epi{i}.to(tl.float32)")
        return "\n".join(lines)

    def runtime_args(self, operands: list[torch.Tensor], m: int, n: int) -> list:
        """Kernel arguments for `params()`: each tensor operand as (tensor, stride_m, stride_n)."""
        if len(operands) != self.operand_count:
            raise ValueError(f"epilogue takes {self.operand_count} operands, got {len(operands)}")
        args: list = []
        for step in self.steps:
            if step.operand is not None:
                args += as_2d_operand(operands[step.operand], m, n)
            elif step.scalar is not None:
                args.append(float(step.scalar))
        return args


def as_2d_operand(tensor: torch.Tensor, m: int, n: int) -> list:
    """(tensor, stride_m, stride_n) addressing `tensor` as [m, n]: a full [..., n] tensor with m rows
    in all, or a row of n values (stride 0 along m)."""
    if tensor.shape[-1] != n:
        raise ValueError(f"epilogue operand of shape {tuple(tensor.shape)} does not end in N={n}")
    if tensor.numel() == n:
        row = tensor.reshape(n)
        return [row, 0, row.stride(0)]
    if tensor.numel() != m * n:
        raise ValueError(f"epilogue operand of shape {tuple(tensor.shape)} is neither [N] nor [M={m}, N={n}]")
    full = tensor.reshape(m, n)
    return [full, full.stride(0), full.stride(1)]


def apply_reference(epilogue: Epilogue, y: torch.Tensor, operands: list[torch.Tensor]) -> torch.Tensor:
    """The epilogue in torch (float32), for tests and for torch fallbacks of a whole fused call."""
    acc = y.to(torch.float32)
    for step in epilogue.steps:
        if step.kind in BINARY:
            other = operands[step.operand].to(torch.float32) if step.operand is not None else step.scalar
            acc = acc + other if step.kind == "add" else acc * other
        elif step.kind == "relu":
            acc = torch.relu(acc)
        elif step.kind == "silu":
            acc = torch.nn.functional.silu(acc)
        elif step.kind == "sigmoid":
            acc = torch.sigmoid(acc)
        elif step.kind == "tanh":
            acc = torch.tanh(acc)
        else:
            acc = torch.nn.functional.gelu(acc, approximate="tanh" if step.kind == "gelu_tanh" else "none")
    return acc
