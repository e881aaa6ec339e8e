"""Typed node annotations: the only place an `fxc.*` key of `node.meta` is defined.

Every annotation is a frozen dataclass stored under its namespaced key (`node.meta[PLAN]`, ...).
Passes write them, backends, the report and `fxc.save` read them. `to_json` / `from_json` turn the
whole set into plain dicts for the saved manifest. To add a key: define the dataclass here, give it
a `KEY`, and add it to `ANNOTATIONS`.

    node.meta["val"]          shape/dtype (a FakeTensor), kept by every pass (torch's own key)
    node.meta["fxc.layer"]    LayerInfo: where a weight layer came from (module path), its kind
    node.meta["fxc.plan"]     LayerPlan: what a planning pass decided for the layer
    node.meta["fxc.sparsity"] Sparsity: the pattern and fraction of zero weights
    node.meta["fxc.quant"]    Quantized: the scheme a quantized op node carries out
    node.meta["fxc.low_rank"] LowRank: one half of a split layer
    node.meta["fxc.kept_dense"] KeptDense: a layer a pass left dense on purpose, and why
    node.meta["fxc.frontier"] Frontier: on the output node, the size/quality frontier the auto pass explored
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch.fx


@dataclass(frozen=True)
class LayerInfo:
    """Provenance of a weight layer: the module path of its weight (`model.layers.0.mlp.up_proj`)."""

    KEY = "fxc.layer"
    fqn: str
    kind: str  # "linear" | "conv2d" | "embedding"


@dataclass(frozen=True)
class LayerPlan:
    """A decision for one layer, written by planning passes (mixed-precision, auto) and read by the
    rewrites that carry it out. None means "not decided here; use the rewrite's own option"."""

    KEY = "fxc.plan"
    bits: int | None = None  # 16 (keep), 8 or 4
    group_size: int | None = None  # None: per output channel
    act_bits: int | None = None  # 8: int8 activations
    sparsity: float | None = None
    pattern: str | None = None  # "unstructured" | "2:4" | "4:8" | "channel"
    rank_ratio: float | None = None  # low rank: fraction of parameters kept
    source: str = ""  # the pass that wrote it

    def describe(self) -> str:
        parts = []
        if self.bits is not None:
            parts.append(f"w{self.bits}" + (f"g{self.group_size}" if self.group_size else ""))
        if self.act_bits is not None:
            parts.append(f"a{self.act_bits}")
        if self.sparsity is not None:
            parts.append(f"{self.pattern or 'unstructured'} {self.sparsity:.0%}")
        if self.rank_ratio is not None:
            parts.append(f"rank {self.rank_ratio:.0%}")
        return " ".join(parts) or "keep"


@dataclass(frozen=True)
class Sparsity:
    """Zero weights of a layer: `pattern` is "unstructured", "N:M", "channel" or "head" (heads removed)."""

    KEY = "fxc.sparsity"
    pattern: str
    sparsity: float
    method: str = ""


@dataclass(frozen=True)
class Quantized:
    """The scheme of a quantized op node (the op's arguments carry the tensors)."""

    KEY = "fxc.quant"
    bits: int
    group_size: int | None  # None: per output channel
    symmetric: bool
    act_bits: int | None = None
    method: str = "rtn"


@dataclass(frozen=True)
class LowRank:
    """One factor of a low-rank split: `role` is "down" (x @ B) or "up" (· @ A, with the bias)."""

    KEY = "fxc.low_rank"
    rank: int
    original_shape: tuple[int, int]
    role: str


@dataclass(frozen=True)
class KeptDense:
    """A layer a rewrite pass was asked to compress but left dense, and why (the report shows it)."""

    KEY = "fxc.kept_dense"
    pass_name: str
    reason: str


@dataclass(frozen=True)
class Frontier:
    """What a budgeted planner (the auto pass) explored, kept on the graph's output node: the exact
    optimum (cost, predicted damage) at several budgets, the budget asked for and the point chosen.
    `objective` is "bytes" or "latency" (seconds); `scope` what the costs count ("layers" | "model");
    `source` the pass that wrote it, which labels each line of `describe`."""

    KEY = "fxc.frontier"
    objective: str
    scope: str
    budget: float
    chosen: tuple[float, float]  # (cost, predicted damage) of the plan carried out
    points: tuple[tuple[float, float], ...]  # (cost, least predicted damage) along the frontier
    measure: str = ""  # how damage was predicted (the auto pass's `measure`)
    mix: tuple[tuple[str, int], ...] = ()  # (candidate, number of layers) of the chosen plan
    source: str = ""  # the pass that wrote it

    def __post_init__(self) -> None:  # JSON round trips give lists
        object.__setattr__(self, "chosen", tuple(self.chosen))
        object.__setattr__(self, "points", tuple(tuple(p) for p in self.points))
        object.__setattr__(self, "mix", tuple((str(c), int(n)) for c, n in self.mix))

    def describe(self) -> list[str]:
        unit = "bytes" if self.objective == "bytes" else "s"
        fmt = (lambda v: f"{v:,.0f}") if self.objective == "bytes" else (lambda v: f"{v:.4g}")
        lines = [
            f"budget {fmt(self.budget)} {unit} ({self.scope}); chosen {fmt(self.chosen[0])} {unit}, "
            f"predicted damage {self.chosen[1]:.4g} ({self.measure})",
            "mix " + ", ".join(f"{c} x{n}" for c, n in self.mix),
            "frontier (cost -> least predicted damage): " + "; ".join(f"{fmt(c)} -> {d:.3g}" for c, d in self.points),
        ]
        return [f"{self.source}: {line}" for line in lines] if self.source else lines


ANNOTATIONS: dict[str, type] = {
    cls.KEY: cls for cls in (LayerInfo, LayerPlan, Sparsity, Quantized, LowRank, Frontier, KeptDense)
}


def get(node: torch.fx.Node, cls: type) -> Any:
    """The annotation of type `cls` on `node`, or None."""
    return node.meta.get(cls.KEY)


def put(node: torch.fx.Node, value: Any) -> None:
    """Store an annotation under its class's key."""
    if type(value) not in ANNOTATIONS.values():
        raise TypeError(f"{type(value).__name__} is not an fxc annotation; define it in fxc/ir/meta.py")
    node.meta[value.KEY] = value


def to_json(node: torch.fx.Node) -> dict[str, dict]:
    """The node's fxc annotations as plain dicts, keyed like node.meta."""
    return {key: dataclasses.asdict(node.meta[key]) for key in ANNOTATIONS if key in node.meta}


def from_json(data: dict[str, dict]) -> dict[str, Any]:
    """Inverse of to_json, for data read from a file: unknown keys or fields, and values not of the
    field's declared type, raise ValueError (the manifest came from another version, or was edited)."""
    out = {}
    for key, fields in data.items():
        if key not in ANNOTATIONS:
            raise ValueError(f"unknown annotation key {key!r}; known: {sorted(ANNOTATIONS)}")
        cls = ANNOTATIONS[key]
        declared = {f.name: f for f in dataclasses.fields(cls)}
        if not isinstance(fields, dict) or not set(fields) <= set(declared):
            raise ValueError(f"annotation {key} has fields other than {sorted(declared)}")
        values = {}
        for name, value in fields.items():
            if not _has_type(value, declared[name].type):
                raise ValueError(f"annotation {key} field {name} is {value!r:.80}, not {declared[name].type}")
            values[name] = _as_tuples(value)
        try:
            out[key] = cls(**values)
        except TypeError as error:  # a required field missing
            raise ValueError(f"annotation {key}: {error}") from None
    return out


def _has_type(value: Any, kind: str) -> bool:
    """`value` (from JSON) fits the declared field type `kind` (the annotation text)."""
    kind = kind.strip()
    if kind.endswith("| None"):
        return value is None or _has_type(value, kind[: -len("| None")])
    if kind.startswith("tuple[") and kind.endswith(", ...]"):
        return isinstance(value, (list, tuple)) and len(value) <= 1 << 16 and all(
            _has_type(v, kind[6:-6]) for v in value)
    if kind.startswith("tuple[") and kind.endswith("]"):
        parts = [p.strip() for p in kind[6:-1].split(",")] if "[" not in kind[6:-1] else None
        return isinstance(value, (list, tuple)) and parts is not None and len(value) == len(parts) and all(
            _has_type(v, p) for v, p in zip(value, parts, strict=True))
    if kind == "str":
        return isinstance(value, str) and len(value) <= 4096
    if kind == "bool":
        return type(value) is bool
    if kind == "int":
        return type(value) is int and abs(value) < 1 << 63
    if kind == "float":
        return type(value) in (int, float) and value == value and abs(value) != float("inf")
    return False


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
