"""The kernel cache: rendered Triton source → loaded kernels, and (source, shapes, dtypes) → config.

    cache = KernelCache(directory, interpret=False)  # default directory: $XDG_CACHE_HOME/fxc/triton
    compiled = cache.load(source, kernel_names)      # keyed by the sha256 of the source
    compiled.source                                   # the generated kernel text
    config = cache.choose(compiled, key, template, run)  # autotuned once per (source, shapes, dtypes)

`load` writes the source to `<directory>/fxc_<hash>.py` (Triton reads a kernel's source back through
`inspect`, so it must live in a file) and imports it once per process; what the source imports (the
tile helpers of kernels/tiles.py) resolves as in any module. Triton itself caches the binaries per
specialization, hashing each kernel with the jit functions it calls; this cache adds the choice of
config: on a GPU each config of the template's short table is timed (`time_on_gpu`: CUDA-graph
replay) on the real arguments (only the table's first `max_configs`, when given: each config timed is
a compile) and the fastest kept; under the interpreter (no timing possible) the
template's interpreter config is used. `interpret` says whether Triton runs kernels in its
interpreter (TRITON_INTERPRET=1 when triton was imported; `interpreter_active()`), which only
changes how configs are chosen.
Reads and writes `<directory>/fxc_*.py`; the default directory is the user's cache folder,
$XDG_CACHE_HOME/fxc/triton (default ~/.cache/fxc/triton).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fxc.codegen.common.cache_dir import user_cache_dir
from fxc.codegen.triton.template import KernelTemplate, config_label

LAUNCH_OPTIONS = ("num_warps", "num_stages")


@dataclass
class CompiledKernel:
    """The kernels one rendered source defines, plus the configs chosen for it per shape key."""

    digest: str
    source: str
    path: Path
    kernels: dict[str, Any]
    configs: dict[tuple, dict] = field(default_factory=dict)  # (shapes, dtypes) -> chosen config
    timings: dict[tuple, dict[str, float]] = field(default_factory=dict)  # ms per config label

    def __getitem__(self, name: str) -> Any:
        return self.kernels[name]


class KernelCache:
    def __init__(self, directory: str | os.PathLike | None = None, interpret: bool = False, autotune: bool = True,
                 max_configs: int | None = None):
        self.directory = Path(directory) if directory is not None else user_cache_dir("triton")
        self.interpret = interpret
        self.autotune = autotune
        self.max_configs = max_configs  # autotune only the first this many configs of a table (None: all)
        self._by_digest: dict[str, CompiledKernel] = {}

    def __len__(self) -> int:
        return len(self._by_digest)

    def entries(self) -> list[CompiledKernel]:
        return list(self._by_digest.values())

    def load(self, source: str, kernel_names: tuple[str, ...]) -> CompiledKernel:
        digest = hashlib.sha256(source.encode()).hexdigest()[:20]
        if digest in self._by_digest:
            return self._by_digest[digest]
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"fxc_{digest}.py"
        if not path.exists() or path.read_text() != source:
            staging = path.with_suffix(f".{os.getpid()}.tmp")
            staging.write_text(source)
            os.replace(staging, path)
        spec = importlib.util.spec_from_file_location(f"fxc_triton_{digest}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        kernels = {name: getattr(module, name) for name in kernel_names}
        compiled = CompiledKernel(digest, source, path, kernels)
        self._by_digest[digest] = compiled
        return compiled

    def choose(
        self,
        compiled: CompiledKernel,
        key: tuple,
        template: KernelTemplate,
        run: Callable[[dict], None],
        valid: Callable[[dict], bool] = lambda config: True,
        forced: dict | None = None,
    ) -> dict:
        """The config for `key` (shapes, dtypes): forced, cached, the interpreter's, or the fastest
        valid config of the template's table timed with `run(config)`."""
        if forced is not None:
            return forced
        if key in compiled.configs:
            return compiled.configs[key]
        if self.interpret or not self.autotune:
            candidates = [template.interpreter_config] if self.interpret else list(template.configs)
            config = next((c for c in candidates if valid(c)), candidates[0])
        else:
            table = [c for c in template.configs if valid(c)] or [template.configs[0]]
            config = self._tune(compiled, key, table[: self.max_configs], run)
        compiled.configs[key] = config
        return config

    def _tune(self, compiled: CompiledKernel, key: tuple, configs: list[dict], run: Callable[[dict], None]) -> dict:
        timings, last_error = {}, None
        for config in configs:
            try:
                timings[config_label(config)] = time_on_gpu(lambda c=config: run(c))
            except Exception as error:  # a config that does not fit this GPU (shared memory): skip it
                timings[config_label(config)] = float("inf")
                last_error = error
        compiled.timings[key] = timings
        best = min(configs, key=lambda c: timings[config_label(c)])
        if timings[config_label(best)] == float("inf"):
            raise last_error
        return best


def time_on_gpu(fn: Callable[[], None]) -> float:
    """Median milliseconds of fn replayed from a CUDA graph (host launch overhead excluded, which
    would otherwise swamp decode-sized kernels); plain do_bench when fn cannot be captured."""
    import torch
    from triton.testing import do_bench, do_bench_cudagraph

    try:
        return do_bench_cudagraph(fn, rep=20, return_mode="median")
    except Exception:
        torch.cuda.synchronize()
        return do_bench(fn, warmup=5, rep=20, return_mode="median")


def interpreter_active() -> bool:
    """Whether Triton's interpreter runs kernels: TRITON_INTERPRET=1 before triton was imported."""
    import triton

    knobs = getattr(triton, "knobs", None)
    if knobs is not None and hasattr(knobs, "runtime"):
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def split_config(config: dict) -> tuple[dict, dict]:
    """(constexpr kwargs, launch kwargs) of a config dict."""
    constexprs = {k: v for k, v in config.items() if k not in LAUNCH_OPTIONS}
    launch = {k: v for k, v in config.items() if k in LAUNCH_OPTIONS}
    return constexprs, launch
