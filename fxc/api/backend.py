"""The backend interface and the compiled module fxc.compile returns.

A backend is a class registered under group `fxc.backends` with a `name`, the set of graph targets
it lowers (`supported_targets`, None meaning "whatever torch runs") and `compile(gm, example_inputs)
-> callable`. Backends either lower every node or report what they could not (see issue text in
codegen/). `CompiledModule` wraps the compiled callable as an nn.Module with `.graph`, `.report()`,
`.pipeline`, `.backend`. `make_backend(name, options)` builds the registered backend with its options
(a backend that declares them as fxc.option fields rejects a name it does not declare). Reads nothing
from disk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.fx

from fxc.api.report import Report, build_report
from fxc.errors import OptionError
from fxc.passmgr import registry
from fxc.passmgr.options import declared


class Backend:
    name: ClassVar[str] = ""

    def compile(
        self, gm: torch.fx.GraphModule, example_inputs: tuple[tuple, dict] | None
    ) -> Callable[..., Any]:
        raise NotImplementedError

    def unsupported(self, gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
        """Nodes this backend cannot lower (reported all at once, at compile time)."""
        return []


def make_backend(name: str, options: dict[str, Any] | None = None) -> Backend:
    """The backend registered under `name` (group fxc.backends) built with `options`. For a backend whose
    options are declared fields (fxc.option), a name it does not declare is an OptionError listing the
    ones it takes; any other backend class receives the options as they are."""
    cls = registry.lookup("fxc.backends", name)
    options = dict(options or {})
    if dataclasses.is_dataclass(cls):
        known = [f.name for f in declared(cls)]
        unknown = [key for key in options if key not in known]
        if unknown:
            raise OptionError(
                f"backend '{name}' has no option {', '.join(map(repr, unknown))}; it takes {', '.join(known) or 'none'}"
            )
    return cls(**options)


class CompiledModule(torch.nn.Module):
    """The result of fxc.compile: call it like the original model.

    graph     the final torch.fx GraphModule (canonical IR with fxc ops)
    report()  per-layer table (prints it and returns the Report object)
    pipeline  the fxc.Pipeline that ran; str() gives its text
    backend   the backend's name; `runner` the callable it produced; backend_options its options
    """

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        runner: Callable[..., Any],
        pipeline: Any,
        backend: str,
        instruments: tuple = (),
        drift: dict[str, float] | None = None,
        backend_options: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.graph = gm
        object.__setattr__(self, "runner", runner)  # not a submodule: it may be `graph` itself
        self.pipeline = pipeline
        self.backend = backend
        self.instruments = instruments
        self.drift = drift or {}
        self.backend_options = dict(backend_options or {})  # what the backend was built with (fxc.save keeps it)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.runner(*args, **kwargs)

    def report(self, show: bool = True) -> Report:
        report = build_report(self.graph, self.drift)
        report.notes.append(f"pipeline: {self.pipeline or '(none)'}; backend: {self.backend}")
        if self.drift:
            report.notes.append("drift: ||y - y_dense|| / ||y_dense|| of each layer's output on calibration batch 0")
        backend_notes = getattr(self.runner, "report_notes", None)  # e.g. what the triton backend fused
        if callable(backend_notes):
            report.notes.extend(backend_notes())
        if show:
            print(report)
        return report
