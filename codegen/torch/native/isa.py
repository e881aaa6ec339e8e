"""Which x86 instruction-set family the torch backend's CPU kernels may use, and the cap a user sets on it.

    from fxc.codegen.torch.native import isa
    isa.machine_family()            # this CPU: "amx", "avx512_vnni", "avx512", "avx2" or "generic"
    isa.effective_family("avx2")    # the family kernels are chosen for under the cap isa="avx2"

Families, lowest first (each includes what the ones below it need):

    generic       no AVX2 + FMA + F16C (or not x86-64 Linux): the torch kernels only
    avx2          AVX2, FMA, F16C: the AVX2 kernels of avx2_weight_only.c and avx2_int8.c
    avx512        AVX-512 F/BW/VL without VNNI: as avx2 (int8 dot products have no fast torch kernel either)
    avx512_vnni   AVX-512 VNNI: torch._int_mm runs on oneDNN's VNNI kernels (W8A8 and the int8 planes)
    amx           AMX-int8 tile unit: the AMX plane kernel (amx_plane_gemm.c) for weight-only linears

The backend option `isa` (backend_options={"isa": "avx2"}, `--backend-option isa=avx2`) caps the family, so
a machine tests the kernels of every family at or below its own; a cap above the machine's family gives the
machine's. Reads /proc/cpuinfo once (the flags line); writes nothing; preserves everything.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

FAMILIES = ("generic", "avx2", "avx512", "avx512_vnni", "amx")
CHOICES = ("auto", *FAMILIES)  # the backend option's values; auto: the machine's family
_NEEDS = {  # /proc/cpuinfo flags each family needs besides those of the family below it
    "avx2": ("avx2", "fma", "f16c"),
    "avx512": ("avx512f", "avx512bw", "avx512vl"),
    "avx512_vnni": ("avx512_vnni",),
    "amx": ("amx_tile", "amx_int8"),
}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The flags of the first processor in /proc/cpuinfo; empty where there is none (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def family_of(flags: frozenset[str] | set[str], machine: str = "x86_64") -> str:
    """The highest family whose flags (and those of every family below it) are all in `flags`."""
    if machine != "x86_64":
        return "generic"
    family = "generic"
    for name in FAMILIES[1:]:
        if not all(flag in flags for flag in _NEEDS[name]):
            break
        family = name
    return family


@functools.cache
def machine_family() -> str:
    """This CPU's family (module docstring)."""
    if platform.system() != "Linux":
        return "generic"
    return family_of(cpu_flags(), platform.machine())


def effective_family(cap: str = "auto") -> str:
    """The family kernels are chosen for: the machine's, lowered to `cap` unless cap is "auto"."""
    if cap not in CHOICES:
        raise ValueError(f"isa must be one of {', '.join(CHOICES)}, not {cap!r}")
    machine = machine_family()
    if cap == "auto":
        return machine
    return min(machine, cap, key=FAMILIES.index)


def at_least(family: str, floor: str) -> bool:
    """Whether `family` includes `floor` (avx512_vnni includes avx2, ...)."""
    return FAMILIES.index(family) >= FAMILIES.index(floor)


def describe(cap: str = "auto") -> str:
    """The family in force and where it comes from, e.g. "avx2 (this CPU: avx512_vnni, capped by isa=avx2)"."""
    machine, family = machine_family(), effective_family(cap)
    if cap == "auto":
        return f"{family} (this CPU)"
    if family == cap:
        return f"{family} (this CPU: {machine}, capped by isa={cap})" if family != machine else f"{family} (this CPU)"
    return f"{family} (this CPU; isa={cap} is above it)"
