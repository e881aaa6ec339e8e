"""Size-1 input dims: torch.export fixes them at 1, so fxc traces them at size 2.

    for attempt in attempts(args, kwargs):           # widest first; the last is the example as given
        try: gm = export(attempt.args, attempt.kwargs, required=attempt.dims); break
        except Exception: ...                                    # the last attempt's failure is raised
    warn_fixed(fixed_leading_dims(args, kwargs, attempt), model_name, reason)   # a batch dim that stayed 1

torch.export (torch 2.13, strict=False) specializes every input dim whose example size is 0 or 1, even
under `Dim.AUTO` ("0/1 specialization"): traced with one example of batch 1, the graph accepts only
batch 1, and shapes the model computes from the batch (Llama's `repeat_kv` expand, attention views) are
baked in as literal 1s. What was tried:
  - `Dim("batch", min=1)` and `Dim.DYNAMIC` on a size-1 example: export raises (the dim was specialized
    to 1 while tracing, before the range is considered);
  - `torch.fx.experimental._config.backed_size_oblivious=True` (experimental): exports, but Hugging Face
    Llama still gets a guard batch <= 2 (VR[1, 2]) and the seq dim a guard != 1;
  - an example of size 2 in that dim, as torch's own docs recommend: the dim traces symbolic with the
    range [2, inf), and the exported graph (whose input check lets 1 through for such a range) runs
    size 1 too, exactly as it does for any dim traced from an example size >= 2.
So fxc widens: every size-1 dim of every tensor input is repeated to size 2 (`torch.cat([x, x], dim)`:
token ids stay valid ids, masks stay masks) and asked for as `Dim.DYNAMIC`, which makes export fail,
instead of silently fixing the dim, when the model still specializes it. The attempts, widest first:
every size-1 dim; then only the leading (batch) dims; then the example as given (`Dim.AUTO`, the size-1
dims static). A dim the model cannot take at size 2 (a channel or feature dim of size 1, a batch the
model asserts is 1) so falls back to static; a leading dim that does is reported with `warnings.warn`
(FixedBatchWarning) naming the input and how to ask for a dynamic one. As for any dim export traces
from a size >= 2, Python code that branches on a size being 1 is traced on its other branch (torch's
size-oblivious assumption); `dynamic=False` traces the example's sizes as they are.
Reads the example tensors; writes only new, widened copies; preserves the caller's example.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree


class FixedBatchWarning(UserWarning):
    """A leading (batch) input dim of size 1 stayed static: the compiled model takes only that size."""


@dataclass(frozen=True)
class Attempt:
    """One way to trace: the (possibly widened) inputs and the (leaf index in (args, kwargs), dim) pairs
    that must come out dynamic."""

    args: tuple
    kwargs: dict
    dims: frozenset[tuple[int, int]] = field(default_factory=frozenset)


def size_one_dims(args: tuple, kwargs: dict) -> list[tuple[int, int, str]]:
    """(leaf index, dim, name) of every size-1 dim of every tensor input."""
    leaves = pytree.tree_flatten_with_path((tuple(args), dict(kwargs)))[0]
    out = []
    for index, (path, value) in enumerate(leaves):
        if isinstance(value, torch.Tensor):
            out.extend((index, d, f"{input_name(path)} dim {d}") for d in range(value.dim()) if value.shape[d] == 1)
    return out


def attempts(args: tuple, kwargs: dict) -> list[Attempt]:
    """The ways to trace, widest first; the last is always the example as given (nothing required)."""
    ones = size_one_dims(args, kwargs)
    leading = [one for one in ones if one[1] == 0]
    out = [_widen(args, kwargs, chosen) for chosen in (ones, leading) if chosen]
    out = [a for i, a in enumerate(out) if a.dims not in [b.dims for b in out[:i]]]
    return [*out, Attempt(tuple(args), dict(kwargs))]


def fixed_leading_dims(args: tuple, kwargs: dict, used: Attempt) -> list[str]:
    """The leading size-1 dims that the attempt which traced left static."""
    return [name for index, d, name in size_one_dims(args, kwargs) if d == 0 and (index, d) not in used.dims]


def warn_fixed(names: list[str], model: str, reason: str) -> None:
    """A FixedBatchWarning naming the leading dims that stayed static, why, and the two ways out."""
    if not names:
        return
    warnings.warn(
        f"fxc.trace: {model}: {', '.join(names)} stays fixed at size 1 (the compiled model takes only size 1 "
        f"there): the model does not trace with size 2 there ({reason}).\n  For a dynamic batch, make the model "
        "run with size 2 there (fxc traces a size-1 example dim at size 2); to fix every dim at its example size "
        "on purpose, pass dynamic=False to fxc.trace / fxc.compile, which also silences this warning",
        FixedBatchWarning,
        stacklevel=3,
    )


def input_name(path: tuple) -> str:
    """args[0] / input_ids, from a pytree key path into (args, kwargs)."""
    if path[0].idx == 0:
        return "args" + pytree.keystr(path[1:])
    return str(getattr(path[1], "key", path[1])) + pytree.keystr(path[2:])


def _widen(args: tuple, kwargs: dict, chosen: list[tuple[int, int, str]]) -> Attempt:
    leaves, spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
    with torch.no_grad():
        for index, d, _ in chosen:
            leaves[index] = torch.cat([leaves[index], leaves[index]], dim=d)
    wide_args, wide_kwargs = pytree.tree_unflatten(leaves, spec)
    return Attempt(wide_args, wide_kwargs, frozenset((i, d) for i, d, _ in chosen))


def required_dims(leaves: list[Any], dims: frozenset[tuple[int, int]]) -> list[dict[int, Any] | None]:
    """Per leaf, the dynamic_shapes entry: Dim.DYNAMIC on the required dims, Dim.AUTO on the others."""
    from torch.export import Dim

    def entry(i: int, x: Any) -> dict[int, Any] | None:
        if not isinstance(x, torch.Tensor):
            return None
        return {d: Dim.DYNAMIC if (i, d) in dims else Dim.AUTO for d in range(x.dim())}

    return [entry(i, x) for i, x in enumerate(leaves)]
