"""fxc.Budget: the typed target of budgeted auto-compression, the config behind the `auto` pass.

    cm = fxc.compile(model, target=fxc.Budget(ratio=6), calibration=batches)
    fxc.Budget(bytes=120_000_000, scope="model")        # every tensor of the compressed model
    fxc.Budget(latency=2e-3)                             # roofline seconds of the planned layers
    fxc.Budget(ratio=8, candidates=("keep", "w8", "w4", "r0.5+w8"))

Exactly one of `bytes`, `ratio`, `latency`. `scope` says what bytes and ratio count:
    layers  the weights of the layers the auto pass plans (dense fp32 bytes / stored bytes for ratio);
            embeddings, the LM head, norms and biases it does not touch are left out
    model   every tensor of the model as fxc.ir.cost.model_bytes counts it, untouched ones included
`candidates` (None: the pass's default set) are spec strings of passes/specs/candidates.py plus "keep".
`pass_options()` gives the options of the pass that carries a budget out; fxc.compile(..., target=Budget(...))
looks that pass up in the registry's `fxc.targets` group under `Budget.name` ("budget"; pyproject.toml
maps it to the `auto` pass) and appends it to the pipeline. Typed config first, text second: the same
budget written as pipeline text is `auto{ratio=6}`. Reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fxc.errors import OptionError

SCOPES = ("layers", "model")


@dataclass(frozen=True)
class Budget:
    name: ClassVar[str] = "budget"  # its entry in the `fxc.targets` registry group
    bytes: int | None = None  # stored bytes (in `scope`)
    ratio: float | None = None  # dense fp32 size / compressed size (in `scope`)
    latency: float | None = None  # seconds, estimated by the auto pass's roofline cost model
    scope: str = "layers"
    candidates: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("bytes", "ratio", "latency") if getattr(self, name) is not None]
        if len(given) != 1:
            raise OptionError(
                "fxc.Budget: give exactly one of bytes, ratio or latency, e.g. fxc.Budget(ratio=4); "
                f"got {', '.join(given) or 'none'}"
            )
        value = getattr(self, given[0])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise OptionError(f"fxc.Budget: {given[0]} must be a positive finite number, got {value!r}")
        if self.ratio is not None and self.ratio < 1:
            raise OptionError(f"fxc.Budget: ratio is dense size / compressed size and must be >= 1, got {self.ratio}")
        if self.bytes is not None and int(self.bytes) != self.bytes:
            raise OptionError(f"fxc.Budget: bytes must be a whole number, got {self.bytes}")
        if self.scope not in SCOPES:
            raise OptionError(f"fxc.Budget: scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.candidates is not None:
            if isinstance(self.candidates, str) or not self.candidates:
                raise OptionError("fxc.Budget: candidates is a non-empty tuple of specs, e.g. ('keep', 'w8', 'w4')")
            object.__setattr__(self, "candidates", tuple(self.candidates))
        if self.bytes is not None:
            object.__setattr__(self, "bytes", int(self.bytes))

    def pass_options(self) -> dict[str, Any]:
        """Options of the pass that carries this budget out (the `fxc.targets` entry `budget`)."""
        options: dict[str, Any] = {"scope": self.scope}
        for name in ("bytes", "ratio", "latency", "candidates"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        if self.ratio is not None:
            options["ratio"] = float(self.ratio)
        if self.latency is not None:
            options["latency"] = float(self.latency)
        return options
