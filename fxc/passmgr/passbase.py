"""The base classes of passes and analyses, and what a pass returns.

A pass is a frozen dataclass whose fields are its options (declared with `fxc.passmgr.options.option`),
with a kebab-case `name` and a `run(gm, am) -> PassResult`. It keeps no state between runs.

    @dataclass(frozen=True)
    class MyPass(Pass):
        '''my-pass: reads `act-stats`; writes LayerPlan; preserves nothing.'''
        name = "my-pass"
        strength: float = option(0.5, "how hard to push", low=0, high=1)

        def run(self, gm, am):
            stats = am.get("act-stats")          # computed once, cached until a pass invalidates it
            ...
            return PassResult(changed=True, preserved=frozenset({"act-stats"}))

An analysis is the same kind of dataclass with `compute(gm, am) -> result`; the AnalysisManager
caches results by (analysis, options).

`am` is typed as `AnalysisProvider`, the part of fxc.passmgr.analysis_manager.AnalysisManager that
passes and analyses use, so this module does not import the manager (which imports it). Reads and
writes nothing itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
import torch.fx

from fxc.passmgr.calibration import Calibration
from fxc.passmgr.options import declared, describe_range, to_text_name, validate_options
from fxc.passmgr.pipeline_text import format_value
from fxc.passmgr.progress import Ticker

ALL = "*"  # in PassResult.preserved: every analysis stays valid


@dataclass(frozen=True)
class PassResult:
    """`changed`: the graph or its weights changed. `preserved`: analysis names still valid (ALL for
    every one). An unchanged graph preserves everything whatever `preserved` says."""

    changed: bool
    preserved: frozenset[str] = frozenset()
    summary: str = ""  # one line for instruments: "pruned 50.0% of 12 layers"

    def keeps(self, analysis_name: str) -> bool:
        return not self.changed or ALL in self.preserved or analysis_name in self.preserved


class AnalysisProvider(Protocol):
    """What a pass's `run` and an analysis's `compute` receive as `am` (fxc.passmgr.analysis_manager.
    AnalysisManager implements it): analyses on demand, the calibration data and the progress hook."""

    gm: torch.fx.GraphModule
    calibration: Calibration | None
    example_inputs: tuple[tuple, dict] | None
    loss_fn: Callable[..., torch.Tensor] | None
    instruments: tuple
    progress: Ticker

    def get(self, analysis: str | Analysis, **options: Any) -> Any: ...

    def cached(self, analysis: str | Analysis) -> bool: ...

    def require_calibration(self, who: str) -> Calibration: ...

    def run_model(self, args: tuple, kwargs: dict) -> Any: ...


class _Configurable:
    """Shared by passes and analyses: options validated on construction, printed as pipeline text."""

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        validate_options(self)

    @classmethod
    def help(cls) -> str:
        lines = [f"{cls.name}: {(cls.__doc__ or '').strip().splitlines()[0] if cls.__doc__ else ''}"]
        for f in declared(cls):
            lines.append(
                f"  {to_text_name(f.name)}={f.default!r}  {f.metadata.get('help', '')} ({describe_range(f)})"
            )
        return "\n".join(lines)

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in declared(self)}

    def non_default_options(self) -> list[str]:
        return [f.name for f in declared(self) if getattr(self, f.name) != f.default]

    def to_text(self, explicit: list[str] | None = None) -> str:
        """Pipeline text for this object: `name{opt=value,...}` with the explicit options (default:
        the ones that differ from their defaults), in declaration order."""
        keys = self.non_default_options() if explicit is None else explicit
        order = [f.name for f in declared(self)]
        keys = sorted(keys, key=order.index)
        if not keys:
            return self.name
        body = ",".join(f"{to_text_name(k)}={format_value(getattr(self, k))}" for k in keys)
        return f"{self.name}{{{body}}}"

    def __str__(self) -> str:
        return self.to_text()


class Pass(_Configurable):
    """Base of every rewrite (and planning) pass."""

    def run(self, gm: torch.fx.GraphModule, am: AnalysisProvider) -> PassResult:
        raise NotImplementedError(f"{type(self).__name__} does not implement run(gm, am)")


class Analysis(_Configurable):
    """Base of every analysis: `compute` returns a result the AnalysisManager caches."""

    def compute(self, gm: torch.fx.GraphModule, am: AnalysisProvider) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement compute(gm, am)")


def is_frozen_dataclass(cls: type) -> bool:
    return dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
