"""Calibration data: batches of model inputs, checked once against the traced graph.

A batch is a tensor, a tuple of positional inputs, or a dict of keyword inputs (Hugging Face style).
`Calibration` holds them as (args, kwargs) pairs and iterates batch by batch, so analyses stream
over it. `check_against(gm)` compares every tensor input with the graph's placeholders (rank, dtype,
static dims) and checks for NaN/Inf, raising CalibrationError that names the batch and the input.
Reads only the tensors it is given; writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from fxc.errors import CalibrationError

Batch = tuple[tuple[Any, ...], dict[str, Any]]


def as_batch(inputs: Any) -> Batch:
    """Normalize one batch: tensor -> ((t,), {}); tuple/list -> (tuple, {}); dict -> ((), dict)."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    if isinstance(inputs, dict):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        if len(inputs) == 2 and isinstance(inputs[0], (tuple, list)) and isinstance(inputs[1], dict):
            return tuple(inputs[0]), dict(inputs[1])
        return tuple(inputs), {}
    raise CalibrationError(
        f"a batch must be a tensor, a tuple of inputs or a dict of keyword inputs, got {type(inputs).__name__}"
    )


@dataclass
class Calibration:
    batches: list[Batch]
    # the Ticker (fxc/passmgr/progress.py) of the pass that asked for this data: am.require_calibration binds it,
    # so fxc.passmgr.sequential.CalibrationRunner reports per-segment progress without the pass passing it along
    progress: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, data: Iterable[Any] | None) -> Calibration | None:
        if data is None:
            return None
        if isinstance(data, Calibration):
            return data
        if isinstance(data, (torch.Tensor, dict)):
            raise CalibrationError(
                "calibration must be an iterable of batches (e.g. a list of tensors), "
                f"got a single {type(data).__name__}; wrap it in a list"
            )
        batches = [as_batch(b) for b in data]
        if not batches:
            raise CalibrationError("calibration is empty; pass at least one batch")
        return cls(batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def check_against(self, gm: torch.fx.GraphModule) -> None:
        """Raise CalibrationError for the first batch that cannot run through the traced graph."""
        specs = placeholder_values(gm)
        for index, (args, kwargs) in enumerate(self.batches):
            check_inputs(specs, args, kwargs, f"calibration batch {index}")


def placeholder_values(gm: torch.fx.GraphModule) -> list[Any]:
    return [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]


def check_inputs(specs: list[Any], args: tuple, kwargs: dict, where: str) -> None:
    flat = pytree.tree_leaves((tuple(args), dict(kwargs)))
    tensors = [x for x in flat if isinstance(x, torch.Tensor)]
    expected = [v for v in specs if isinstance(v, torch.Tensor)]
    if len(tensors) != len(expected):
        raise CalibrationError(
            f"{where} has {len(tensors)} tensor inputs but the traced model takes {len(expected)}; "
            "give batches with the same inputs as example_inputs"
        )
    for i, (got, want) in enumerate(zip(tensors, expected)):
        if got.dim() != want.dim() or got.dtype != want.dtype:
            raise CalibrationError(
                f"{where}: input {i} is {got.dtype} of shape {tuple(got.shape)} but the traced model takes "
                f"{want.dtype} of rank {want.dim()} (traced shape {shape_text(want)})"
            )
        for d, (g, w) in enumerate(zip(got.shape, want.shape)):
            if is_concrete_int(w) and g != int(w):
                raise CalibrationError(
                    f"{where}: input {i} has shape {tuple(got.shape)} but the traced model takes "
                    f"{shape_text(want)} (dim {d} is static, fixed at {w} by example_inputs); trace with "
                    "example inputs shaped like the calibration data"
                )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise CalibrationError(f"{where}: input {i} contains NaN or Inf; clean the calibration data")


def shape_text(value: torch.Tensor) -> str:
    """(*, 16): `*` marks a dynamic dim."""
    return "(" + ", ".join(str(int(d)) if is_concrete_int(d) else "*" for d in value.shape) + ")"
