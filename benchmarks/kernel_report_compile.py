"""Offline compilation of one Triton kernel launch for a CUDA target, without a GPU or a driver, and the
resources the binary uses. Used by benchmarks/kernel_report.py.

    recorder = LaunchRecorder()
    gemv.launch(recorder, config, x, qweight, scale, None, 8)     # a kernel file's own wrapper, CPU tensors
    for launch in recorder.launches:                               # (kernel name, grid, args, kwargs)
        stats = compile_launch(compiled[launch.kernel], launch, arch=90)

A launch is recorded by passing a `LaunchRecorder` as the wrapper's `compiled` argument: the wrapper
checks its arguments, computes strides, grid and constexprs exactly as it does before a real launch,
and the recorder keeps them instead of launching. `compile_launch` specializes the kernel on those
arguments the way Triton's launcher does (pointers and integers divisible by 16 get the divisibility
hint, integers equal to 1 become constants, None becomes a constexpr) through Triton's own binder, then
runs `triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`: TTIR, TTGIR, PTX and a cubin
from the ptxas shipped in the triton wheel. Registers, stack and SASS come from one run of the wheel's
cuobjdump, shared memory from the compiled metadata, everything else from the PTX and SASS text
(benchmarks/kernel_report_asm.py). Nothing here needs a GPU, but Triton's interpreter must be off
(TRITON_INTERPRET unset or 0 before triton is imported), since the interpreter's @triton.jit functions
cannot be compiled. Writes Triton's own compile cache (~/.triton/cache), temporary files, and what
cuobjdump found per cubin in MEMO_DIR (under the system's temporary folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from kernel_report_asm import SassMix, ptx_load_widths, sass_mix

SM = {  # arch -> per-SM limits: registers, shared memory bytes, warps, blocks; shared memory per block
    80: dict(regs=65536, shared=167936, warps=64, blocks=32, block_shared=166912, sms=108),
    90: dict(regs=65536, shared=233472, warps=64, blocks=32, block_shared=232448, sms=132),
}
RESERVED_SHARED = 1024  # bytes the driver reserves per block (sm_80 and later)
MEMO_DIR = Path(tempfile.gettempdir()) / "fxc-kernel-report" / "cuobjdump"  # cubin hash -> cuobjdump's findings


class Launch(NamedTuple):
    kernel: str
    grid: tuple
    args: tuple
    kwargs: dict


class LaunchRecorder:
    """Stands in for a CompiledKernel: `recorder[name][grid](*args, **kwargs)` records, launches nothing."""

    def __init__(self):
        self.launches: list[Launch] = []

    def __getitem__(self, kernel: str):
        recorder = self

        class _Grid:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: recorder.launches.append(Launch(kernel, tuple(grid), args, kwargs))

        return _Grid()


@dataclass
class KernelStats:
    """What one compiled kernel uses on `arch`, and the occupancy that implies."""

    kernel: str
    arch: int
    warps: int
    regs: int
    stack: int  # bytes of local memory per thread (spilled registers, local arrays)
    shared: int  # bytes of shared memory per block
    mix: SassMix
    load_widths: dict[str, set[int]]  # pointer argument -> bit widths of its global loads (PTX)
    grid: tuple
    texts: dict[str, str] = field(default_factory=dict, repr=False)  # "ttgir", "ptx", "sass"
    blocks_per_sm: int = field(init=False)

    def __post_init__(self):
        self.blocks_per_sm = occupancy(self.arch, self.regs, self.shared, self.warps)

    @property
    def spills(self) -> int:
        """Local-memory instructions (LDL / STL) in the SASS plus the stack frame: 0 for a spill-free kernel."""
        return self.mix.spills + self.stack

    @property
    def ctas(self) -> int:
        total = 1
        for size in self.grid:
            total *= size
        return total

    @property
    def waves(self) -> float:
        """Grid size over the CTAs all SMs hold at once (< 1: SMs left idle)."""
        return self.ctas / max(1, self.blocks_per_sm * SM[self.arch]["sms"])


def occupancy(arch: int, regs: int, shared: int, warps: int) -> int:
    """Blocks per SM the register file, shared memory and warp slots allow (registers are allocated per
    warp in units of 256)."""
    limits = SM[arch]
    if shared > limits["block_shared"]:
        return 0
    warp_regs = -(-max(regs, 1) * 32 // 256) * 256
    by_regs = limits["regs"] // warp_regs // warps
    by_shared = limits["shared"] // (shared + RESERVED_SHARED)
    return max(0, min(by_regs, by_shared, limits["warps"] // warps, limits["blocks"]))


def toolchain_missing(arch: int = 90) -> str | None:
    """Why kernels cannot be compiled offline for sm_`arch` here, or None when they can."""
    try:
        import triton
        from triton import knobs
        from triton.backends import backends
    except ImportError as error:
        return f"triton is not installed ({error})"
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "TRITON_INTERPRET is set: the interpreter's kernels cannot be compiled"
    if "nvidia" not in backends:
        return f"triton {triton.__version__} has no NVIDIA backend"
    from triton.runtime import jit

    if not hasattr(jit, "create_function_from_signature") or not hasattr(jit.JITFunction, "_pack_args"):
        return f"triton {triton.__version__} lacks the launcher internals compile_launch specializes with"
    from triton.backends.nvidia.compiler import get_ptxas

    tools = {"ptxas": lambda: get_ptxas(arch).path, "cuobjdump": lambda: knobs.nvidia.cuobjdump.path}
    for name, path_of in tools.items():
        try:
            path = path_of()
        except Exception as error:  # a knob raises when the tool is absent
            return f"{name} for sm_{arch} not found ({error})"
        if not path or not shutil.which(path):
            return f"{name} for sm_{arch} not found"
    return None


def compile_launch(fn: Any, launch: Launch, arch: int) -> KernelStats:
    """Compile `fn` (a @triton.jit function) as `launch` would run it, for sm_`arch`; its stats."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, launch.kwargs, bound, specialization, options)
    kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    regs, stack, sass = cuobjdump(kernel.asm["cubin"])
    params = [name for name, kind in signature.items() if kind != "constexpr"]
    return KernelStats(
        kernel=launch.kernel, arch=arch, warps=kernel.metadata.num_warps, regs=regs, stack=stack,
        shared=kernel.metadata.shared, mix=sass_mix(sass),
        load_widths=ptx_load_widths(kernel.asm["ptx"], params), grid=launch.grid,
        texts={"ttgir": kernel.asm["ttgir"], "ptx": kernel.asm["ptx"], "sass": sass},
    )


def cuobjdump(cubin: bytes) -> tuple[int, int, str]:
    """(registers per thread, stack bytes per thread, SASS text with addresses) of the cubin's kernel, from one
    `cuobjdump --dump-resource-usage --dump-sass` run, kept in MEMO_DIR by the cubin's hash (each run of the
    tool takes most of a second; Triton's own cache already skips the compile of an unchanged kernel)."""
    from triton import knobs

    memo = MEMO_DIR / f"{hashlib.sha256(cubin).hexdigest()[:24]}.json"
    if memo.exists():
        regs, stack, sass = json.loads(memo.read_text())
        return regs, stack, sass
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", "--dump-sass", f.name],
                              capture_output=True, text=True, check=True).stdout
    usage = text.split("code for sm_")[0]
    fields = dict(part.split(":", 1) for part in usage.split() if part.count(":") == 1 and part[0].isupper())
    try:
        regs, stack = int(fields["REG"]), int(fields["STACK"])
    except KeyError as error:
        raise RuntimeError(f"cuobjdump --dump-resource-usage gave no {error}: {usage[:200]!r}") from None
    MEMO_DIR.mkdir(parents=True, exist_ok=True)
    staging = memo.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text(json.dumps([regs, stack, text]))
    os.replace(staging, memo)
    return regs, stack, text
