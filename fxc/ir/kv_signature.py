"""The KV-cache step graph's contract: what its inputs and outputs are, recorded in `gm.meta["fxc.kv_cache"]`.

    sig = signature_of(gm)                  # KVSignature, or None for any other graph
    logits = model_output(gm, gm(*step))    # what a user sees of a step's outputs (the logits)
    sig.to_json(); KVSignature.from_json(data, where)   # as the manifest keeps it; FormatError when data is bad
    problem = sig.mismatch(gm)              # None when the graph's placeholders and outputs fit the record

fxc.compile captures a Hugging Face causal LM as one *step* (fxc/frontend/kv_cache.py):

    inputs   input_ids [B, T] int64, attention_mask [B, P+T] int64, position_ids [B, T] int64,
             past: per layer (keys [B, Hkv, P, D], values [B, Hkv, P, D]) of `dtype`
    outputs  (logits [B, T, V], per layer (keys, values) [B, Hkv, T, D] of the T new positions only)

B, T and P are dynamic, so one graph serves prefill (P = 0) and decoding (T = 1); the cache itself lives outside
the graph (fxc/api/generate/cache.py). The record keeps the layer count, the kv heads and head dim, the cache dtype,
the model's position limit (`max_positions`, None when its config has none), the default end-of-sequence and pad
ids (from its generation config), `positional`: the names the original forward gives its leading parameters,
so `cm(ids, mask)` binds as the model did, and `positions`: the positions the model computes when it is called
without position_ids (0..T-1, or counted over the mask as OPT does), so `cm(ids, mask)` returns what the model
returned. `inputs` / `outputs` name the graph's inputs and outputs in order and
are fixed (INPUTS, OUTPUTS); a record with others is refused. Data read from a file is hostile: `from_json` checks
every type and range and raises FormatError naming the field; `mismatch` checks the record against the graph built
from the same file. Reads and writes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree

from fxc.errors import FormatError
from fxc.ir.graph_schema import DTYPES

KV_CACHE = "fxc.kv_cache"  # key in GraphModule.meta
POSITIONS = ("arange", "mask")  # 0..T-1 whatever the mask; or cumsum(mask) * mask - 1 (OPT), pads at -1
INPUTS = ("input_ids", "attention_mask", "position_ids", "past")
OUTPUTS = ("logits", "present")
MAX_LAYERS, MAX_HEADS, MAX_HEAD_DIM, MAX_TOKEN_ID, MAX_IDS = 4096, 4096, 1 << 16, (1 << 31) - 1, 64
_FIX = "the file is damaged or was edited: save the model again from its source"


@dataclasses.dataclass(frozen=True)
class KVSignature:
    layers: int
    kv_heads: int
    head_dim: int
    dtype: str  # the cache's dtype name (float32, bfloat16, ...)
    max_positions: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    positional: tuple[str, ...] = ("input_ids", "attention_mask", "position_ids")
    positions: str = "arange"  # what the model computes without position_ids: one of POSITIONS
    inputs: tuple[str, ...] = INPUTS
    outputs: tuple[str, ...] = OUTPUTS

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def empty_past(self, batch: int, device: torch.device | str | None = None) -> tuple:
        """Per layer (keys, values) of length 0: the past of a prefill."""
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return tuple(
            (torch.zeros(shape, dtype=self.torch_dtype, device=device),
             torch.zeros(shape, dtype=self.torch_dtype, device=device))
            for _ in range(self.layers)
        )

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @classmethod
    def from_json(cls, data: Any, where: str) -> KVSignature:
        """The record `data` describes, every field checked; FormatError naming the field otherwise."""

        def bad(field: str, problem: str) -> FormatError:
            return FormatError(f"{where}.{field} {problem}; {_FIX}")

        if not isinstance(data, dict):
            raise FormatError(f"{where} is not a dict; {_FIX}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(key)[:40] for key in data if key not in fields)
        if unknown:
            raise FormatError(f"{where} has the unknown field {unknown[0]!r}; {_FIX}")
        for field in ("layers", "kv_heads", "head_dim", "dtype"):
            if field not in data:
                raise bad(field, "is missing")
        for field, high in (("layers", MAX_LAYERS), ("kv_heads", MAX_HEADS), ("head_dim", MAX_HEAD_DIM)):
            if not _int_in(data[field], 1, high):
                raise bad(field, f"is not an int from 1 to {high}")
        dtype = data["dtype"]
        if not (isinstance(dtype, str) and dtype in DTYPES and DTYPES[dtype].is_floating_point):
            raise bad("dtype", f"{str(dtype)[:40]!r} is not a floating dtype name")
        limit = data.get("max_positions")
        if limit is not None and not _int_in(limit, 1, 1 << 40):
            raise bad("max_positions", "is neither null nor a positive int")
        eos = data.get("eos_token_ids", [])
        if not (isinstance(eos, list) and len(eos) <= MAX_IDS and all(_int_in(i, 0, MAX_TOKEN_ID) for i in eos)):
            raise bad("eos_token_ids", f"is not a list of at most {MAX_IDS} token ids")
        pad = data.get("pad_token_id")
        if pad is not None and not _int_in(pad, 0, MAX_TOKEN_ID):
            raise bad("pad_token_id", "is neither null nor a token id")
        positional = data.get("positional", list(cls.positional))
        if not (isinstance(positional, list) and 1 <= len(positional) <= 16
                and all(isinstance(n, str) and n.isidentifier() and len(n) <= 64 for n in positional)
                and positional[0] == "input_ids"):
            raise bad("positional", "is not a list of parameter names starting with 'input_ids'")
        positions = data.get("positions", cls.positions)
        if positions not in POSITIONS:
            raise bad("positions", f"{str(positions)[:40]!r} is not one of {', '.join(POSITIONS)}")
        for field, fixed in (("inputs", INPUTS), ("outputs", OUTPUTS)):
            if data.get(field, list(fixed)) != list(fixed):
                raise bad(field, f"is not {list(fixed)} (this fxc reads no other step graph)")
        return cls(data["layers"], data["kv_heads"], data["head_dim"], dtype, limit, tuple(eos), pad,
                   tuple(positional), positions)

    def mismatch(self, gm: torch.fx.GraphModule) -> str | None:
        """What in `gm` does not fit this record (placeholders, their dims and dtypes, outputs); None when all fit."""
        values = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
        if len(values) != 3 + 2 * self.layers:
            return f"the graph has {len(values)} inputs; a step graph of {self.layers} layers has {3 + 2 * self.layers}"
        for index, value in enumerate(values):
            name = INPUTS[index] if index < 3 else f"past[{(index - 3) // 2}][{(index - 3) % 2}]"
            rank = 4 if index >= 3 else 2
            if not isinstance(value, torch.Tensor) or value.dim() != rank:
                return f"input {name} is not a tensor of rank {rank}"
            if index < 3 and value.dtype != torch.int64:
                return f"input {name} is {value.dtype}, not torch.int64"
            if index >= 3:
                dims = [int(d) if isinstance(d, int) else None for d in (value.shape[1], value.shape[3])]
                if dims != [self.kv_heads, self.head_dim] or value.dtype != self.torch_dtype:
                    return (f"input {name} is {value.dtype} [*, {dims[0]}, *, {dims[1]}], the record says "
                            f"{self.dtype} [*, {self.kv_heads}, *, {self.head_dim}]")
        info = getattr(gm.graph._codegen, "pytree_info", None)
        leaves = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        expected = pytree.tree_structure((0, tuple((0, 0) for _ in range(self.layers))))
        if info is None or info.out_spec != expected or not isinstance(leaves, (tuple, list)) or len(leaves) != (
            1 + 2 * self.layers
        ):
            return f"the graph's outputs are not (logits, {self.layers} x (keys, values))"
        return None


def signature_of(gm: torch.nn.Module) -> KVSignature | None:
    """The step graph's record, None for a graph captured without a KV cache."""
    meta = getattr(gm, "meta", None)
    value = meta.get(KV_CACHE) if isinstance(meta, dict) else None
    return value if isinstance(value, KVSignature) else None


def model_output(gm: torch.nn.Module, output: Any) -> Any:
    """What the model itself returns of a run of `gm`: the logits of a step graph (the new keys and values are
    the cache's, not the model's output), anything else as it is. Passes and instruments that measure "the
    model's output" read this, so a step graph scores as the model it was captured from."""
    return output[0] if signature_of(gm) is not None else output


def _int_in(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high
