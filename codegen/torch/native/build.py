"""Native CPU kernels of the torch backend, compiled once per machine and loaded with ctypes.

    amx_plane_gemm.c    weight-only int8/int4 linear with float32 activations on the AMX-int8 tile unit
                        (x split exactly into four int8 planes, int32 accumulators combined exactly per
                        channel, in float32 per group for group-wise scales). -march=native.
    avx2_weight_only.c  weight-only int8/int4 linear with float32 activations on AVX2 + FMA (weights
    avx2_int8.c         converted in registers or dequantized panels, float32 FMA), and W8A8 (int8 x int8,
                        exact int32 accumulators); one library, compiled with -mavx2 -mfma -mf16c and not
                        -march=native, so it is the same code on every AVX2 CPU (wrappers: avx2.py).

`plane_kernel()` / `avx2_kernel()` return the loaded library or None, and `plane_kernel_status()` /
`avx2_kernel_status()` say why not (the CPU lacks the instructions, not Linux x86-64, no C compiler, the
compile failed, or the OS refused the AMX tile registers); the backend then uses its torch kernels. Whether
the backend uses them at all is its option `native` (fxc.compile(..., backend="torch",
backend_options={"native": False})), which kernels its option `isa` (native/isa.py), not an environment
variable; with native off this module compiles and loads nothing. The C compiler is $CC, else cc or gcc;
OpenMP (-fopenmp) where the compiler has it, else the AVX2 library is built without it and runs on one
thread. Reads codegen/torch/native/*.c (shipped as package data); writes the compiled libraries to the
user's cache folder, $XDG_CACHE_HOME/fxc/native (default ~/.cache/fxc/native), named by the hash of the
sources and flags, so an edited source is rebuilt and a stale library never loads.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from fxc.codegen.common.cache_dir import user_cache_dir
from fxc.codegen.torch.native import isa
from fxc.ir.qformat import QuantizedWeight

SOURCE = Path(__file__).with_name("amx_plane_gemm.c")
FLAGS = ["-O3", "-march=native", "-mamx-tile", "-mamx-int8", "-fopenmp", "-fPIC", "-shared"]
AVX2_SOURCES = (Path(__file__).with_name("avx2_weight_only.c"), Path(__file__).with_name("avx2_int8.c"))
AVX2_FLAGS = ["-O3", "-fno-tree-pre", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-fPIC", "-shared"]  # not -march=native
TILE_M, TILE_K, PLANES = 16, 64, 4


def cache_dir() -> Path:
    """Where compiled kernels go: $XDG_CACHE_HOME/fxc/native, or ~/.cache/fxc/native when it is unset or
    not an absolute path (the XDG base directory rule)."""
    return user_cache_dir("native")


def _cpu_has_amx_int8() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_int8" in flags and " amx_tile" in flags


def _compile(source: Path | tuple[Path, ...], flags: list[str] | None = None, name: str | None = None) -> Path:
    """The shared library of `source` (one file or several) built with `flags` (default FLAGS), from the cache
    or compiled into it."""
    sources = (source,) if isinstance(source, Path) else tuple(source)
    flags = FLAGS if flags is None else flags
    data = b"".join(path.read_bytes() for path in sources) + " ".join(flags).encode()
    target = cache_dir() / f"{name or sources[0].stem}-{hashlib.sha256(data).hexdigest()[:16]}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:  # build aside, then rename: atomic
        built = Path(folder) / target.name
        command = [compiler, *flags, *map(str, sources), "-o", str(built), "-lm"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            names = ", ".join(path.name for path in sources)
            raise RuntimeError(f"{compiler} failed on {names}: {done.stderr.strip()[-400:]}")
        os.replace(built, target)
    return target


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return None, f"AMX kernels need Linux on x86-64, not {platform.system()} {platform.machine()}"
    if not _cpu_has_amx_int8():
        return None, "this CPU has no AMX-int8 tile unit"
    try:
        library = ctypes.CDLL(str(_compile(SOURCE)))
    except (OSError, RuntimeError) as error:
        return None, f"native kernel build failed: {error}"
    if library.fxc_amx_enable() != 1:
        return None, "the OS refused the AMX tile registers (arch_prctl ARCH_REQ_XCOMP_PERM)"
    _declare(library)
    return library, "AMX-int8 plane kernel"


def _declare(library: ctypes.CDLL) -> None:
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    library.fxc_split_planes.restype = i64
    library.fxc_split_planes.argtypes = [ptr, i64, i64, i64, i64, ptr, ptr, ptr, i32]
    library.fxc_plane_gemm.restype = None
    library.fxc_plane_gemm.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, ptr, i32, i64, i64, ptr, ptr, ptr, ptr, i32]


@functools.cache
def _load_avx2() -> tuple[ctypes.CDLL | None, str]:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return None, f"AVX2 kernels need Linux on x86-64, not {platform.system()} {platform.machine()}"
    if not isa.at_least(isa.machine_family(), "avx2"):
        return None, "this CPU has no AVX2 + FMA + F16C"
    try:
        try:
            library, threads = ctypes.CDLL(str(_compile(AVX2_SOURCES, AVX2_FLAGS, "avx2_kernels"))), ""
        except RuntimeError as error:  # a compiler without OpenMP: one thread
            if "no C compiler" in str(error):
                raise
            flags = [flag for flag in AVX2_FLAGS if flag != "-fopenmp"]
            library, threads = ctypes.CDLL(str(_compile(AVX2_SOURCES, flags, "avx2_kernels"))), " (no OpenMP: 1 thread)"
    except (OSError, RuntimeError) as error:
        return None, f"native kernel build failed: {error}"
    _declare_avx2(library)
    return library, f"AVX2 kernels{threads}"


def _declare_avx2(library: ctypes.CDLL) -> None:
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    library.fxc_wo_linear.restype = i32
    library.fxc_wo_linear.argtypes = [ptr, i64, i64, ptr, i32, i64, i64, ptr, ptr, ptr, ptr, i64, i64, i32]
    library.fxc_quantize_rows.restype = i64
    library.fxc_quantize_rows.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, i32]
    library.fxc_int8_gemm.restype = None
    library.fxc_int8_gemm.argtypes = [ptr, i64, i64, ptr, i64, i64, ptr, ptr, i64, ptr, i32]


def avx2_kernel() -> ctypes.CDLL | None:
    """The loaded AVX2 kernels (avx2_weight_only.c, avx2_int8.c), or None where they cannot run
    (avx2_kernel_status says why)."""
    return _load_avx2()[0]


def avx2_kernel_status() -> str:
    """"AVX2 kernels", or why they do not load."""
    return _load_avx2()[1]


def plane_kernel() -> ctypes.CDLL | None:
    """The loaded AMX plane kernel, or None where it cannot run (plane_kernel_status says why)."""
    return _load()[0]


def plane_kernel_status() -> str:
    """Which kernel runs, or why the native one does not."""
    return _load()[1]


def _padded(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


@dataclass(frozen=True)
class SplitRows:
    """x [M, K] split by fxc_split_planes: int8 planes in the tile layout, power-of-two step per row, and the
    planes' weighted sums per row and 64-column tile (for zero points). One split serves every linear
    reading the same x, whatever its group size."""

    planes: torch.Tensor  # int8 [PLANES, Mpad, Kpad] (tile-interleaved inside)
    step: torch.Tensor  # float64 [M]
    tile_sums: torch.Tensor  # float64 [M, Kpad / 64]
    rows: int
    columns: int


def split_rows(rows: torch.Tensor) -> SplitRows | None:
    """rows [M, K] float32 split into int8 planes (see amx_plane_gemm.c); None when a row holds inf or nan
    (planes cannot carry them: the caller uses its reference-exact path). Needs plane_kernel()."""
    rows = rows.contiguous()
    m, k = rows.shape
    m_pad, k_pad = _padded(m, TILE_M), _padded(k, TILE_K)
    planes = torch.empty(PLANES, m_pad, k_pad, dtype=torch.int8)  # every byte written by the split
    step = torch.empty(m, dtype=torch.float64)
    tile_sums = torch.empty(m, k_pad // TILE_K, dtype=torch.float64)
    bad = plane_kernel().fxc_split_planes(
        rows.data_ptr(), m, k, m_pad, k_pad, planes.data_ptr(), step.data_ptr(), tile_sums.data_ptr(),
        torch.get_num_threads(),
    )  # fmt: skip
    return None if bad else SplitRows(planes, step, tile_sums, m, k)


def takes_groups(columns: int, groups: int) -> bool:
    """Whether the kernel takes `groups` scales per output channel over `columns` inputs: per-channel, or
    groups of a multiple of 64 columns (whole tiles)."""
    return groups == 1 or (columns % groups == 0 and (columns // groups) % TILE_K == 0)


def plane_gemm(split: SplitRows, weight: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """split x @ dequantize(weight)^T + bias, float32 [M, N], for qweight [N, K or K/2], scale and zero point
    [N, groups]. The caller checks takes_groups and that K * 127 * 255 fits int32 (planes_can_take)."""
    qweight, scale, zero_point, bits = weight
    n, groups = qweight.shape[0], scale.shape[-1]
    m_pad, k_pad = split.planes.shape[1:]
    qweight = qweight.contiguous()
    scale32 = scale.reshape(n, groups).to(torch.float32).contiguous()
    zero32 = None if zero_point is None else zero_point.reshape(n, groups).to(torch.int32).contiguous()
    bias32 = None if bias is None else bias.to(torch.float32).contiguous()
    y = torch.empty(split.rows, n, dtype=torch.float32)
    plane_kernel().fxc_plane_gemm(
        split.planes.data_ptr(), split.step.data_ptr(), split.tile_sums.data_ptr(), split.rows, m_pad,
        split.columns, k_pad, qweight.data_ptr(), bits, n, groups, scale32.data_ptr(), _address(zero32),
        _address(bias32), y.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    return y


def _address(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()
