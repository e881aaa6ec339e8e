"""The AnalysisManager: computes analyses on demand, caches them, drops them when a pass invalidates.

    am.get("hessian")                      # by registered name, default options
    am.get(Hessian(damp=0.01))             # by object; cached per (analysis, options)
    am.calibration                          # fxc.passmgr.calibration.Calibration or None
    am.require_calibration("sparse-gpt")    # CalibrationError naming who needed it

After each pass the pass manager calls `invalidate(result)`: every cached result whose analysis
name the pass did not declare preserved is dropped. Instruments see each computation (before/after).
`am.progress` is the running pass's (or analysis's) progress hook (fxc/passmgr/progress.py).
Reads the graph and calibration it is given; writes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.fx

from fxc.errors import MissingCalibrationError
from fxc.ir.kv_signature import model_output
from fxc.passmgr import registry
from fxc.passmgr.calibration import Calibration
from fxc.passmgr.passbase import Analysis, PassResult
from fxc.passmgr.progress import SILENT, reporting


class AnalysisManager:
    def __init__(
        self,
        gm: torch.fx.GraphModule,
        calibration: Calibration | None = None,
        example_inputs: tuple[tuple, dict] | None = None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        instruments: tuple = (),
    ):
        self.gm = gm
        self.calibration = calibration
        self.example_inputs = example_inputs
        self.loss_fn = loss_fn
        self.instruments = instruments
        self.progress = SILENT  # the running pass's or analysis's fxc.passmgr.progress.Ticker
        self._cache: dict[Analysis, Any] = {}

    def get(self, analysis: str | Analysis, **options: Any) -> Any:
        """The result of `analysis` on the current graph, computed now if not cached."""
        if isinstance(analysis, str):
            analysis = registry.lookup("fxc.analyses", analysis)(**options)
        elif options:
            raise TypeError("pass options only with an analysis name, not with an analysis object")
        if analysis in self._cache:
            return self._cache[analysis]
        for instrument in self.instruments:
            instrument.before_analysis(analysis, self.gm)
        with reporting(self, analysis, self.instruments):
            result = analysis.compute(self.gm, self)
        for instrument in self.instruments:
            instrument.after_analysis(analysis, self.gm, result)
        self._cache[analysis] = result
        return result

    def cached(self, analysis: str | Analysis) -> bool:
        return any(_matches(a, analysis) for a in self._cache)

    def invalidate(self, result: PassResult) -> None:
        self._cache = {a: r for a, r in self._cache.items() if result.keeps(a.name)}

    def clear(self) -> None:
        self._cache.clear()

    def require_calibration(self, who: str) -> Calibration:
        if self.calibration is None:
            raise MissingCalibrationError(
                who,
                f"{who} needs calibration data; pass calibration=[batch, ...] to fxc.compile "
                "(a few batches of real inputs shaped like example_inputs)"
            )
        return dataclasses.replace(self.calibration, progress=self.progress)  # runners tick the caller's progress

    def run_model(self, args: tuple, kwargs: dict) -> Any:
        """The model's output (fxc.ir.kv_signature.model_output: a KV-cache step graph's logits, without the new
        keys and values) of the current graph on one batch, without autograd."""
        with torch.no_grad():
            return model_output(self.gm, self.gm(*args, **kwargs))


def _matches(cached: Analysis, wanted: str | Analysis) -> bool:
    return cached.name == wanted if isinstance(wanted, str) else cached == wanted
