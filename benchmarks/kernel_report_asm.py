"""Statistics read from a compiled kernel's text, for benchmarks/kernel_report.py: PTX (which pointer
argument each global load reads, and how wide it is) and SASS (the main loop's instruction mix,
tensor-core instructions, spills). Plain text in, numbers out: no Triton, no CUDA toolchain.

    widths = ptx_load_widths(ptx, ["x_ptr", "q_ptr", ...])   # {"q_ptr": {128}, "scale_ptr": {32}, ...}
    mix = sass_mix(sass)                                      # SassMix(loop=..., kernel=..., spill_stores=...)
    mix.loop["tensor"], mix.loop["instructions"], mix.kernel["local"]

PTX loads: `ld.global[.nc].[vN.]bB` (width N * B bits) and `cp.async.{ca,cg}.shared.global [...], [...],
bytes` (width 8 * bytes). The argument a load reads is found by walking back from its address register
through every instruction that writes a 64-bit register (`%rd`) to the `ld.param` of a pointer
parameter; a register written in several places (loop-carried pointers) follows all of them.
SASS main loop: the first outermost loop, an address range [target, branch] closed by a backward `BRA`
(every kernel template's K loop is its first loop). Classes counted there and over the whole kernel:
tensor (HGMMA / IGMMA / QGMMA: wgmma on sm_90; HMMA / IMMA: mma.sync), global loads (LDG, LDGSTS),
int (integer ALU: LOP3, SHF, PRMT, IADD3, IMAD, LEA, BFE, SGXT, ...), convert (I2F, F2F, F2FP, I2FP,
...), local (LDL / STL: spilled registers), shared (LDS, STS, LDSM). Reads and writes nothing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

_PARAM = re.compile(r"ld\.param\.(?:u64|b64|s64)\s+(%rd\d+),\s*\[\w+_param_(\d+)\]")
_DEF_64 = re.compile(r"^\s*(?:@!?%p\d+\s+)?[a-z][\w.]*\s+(%rd\d+)\s*,(.*);", re.MULTILINE)
_LD_GLOBAL = re.compile(r"ld\.global(?:\.\w+)*?(?:\.v(\d))?\.[bsuf](\d+)\s+\{?[^\[]*\[\s*(%rd\d+)")
_CP_ASYNC = re.compile(r"cp\.async\.c[ag]\.shared\.global\s+\[[^\]]*\],\s*\[\s*(%rd\d+)[^\]]*\],\s*(0x[0-9a-f]+|\d+)")
_REG_64 = re.compile(r"%rd\d+")

_SASS_LINE = re.compile(  # /*addr*/ [@!P0] OPCODE.SUFFIX.ES operands ;
    r"^\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_]*)((?:\.[A-Za-z0-9_]+)*)([^;]*);", re.MULTILINE)
_BRA_TARGET = re.compile(r"0x([0-9a-f]+)")
CLASSES = {
    "tensor": {"HGMMA", "IGMMA", "QGMMA", "HMMA", "IMMA", "BMMA", "DMMA"},
    "load": {"LDG", "LDGSTS"},
    "int": {"LOP3", "LOP", "SHF", "SHL", "SHR", "PRMT", "IADD3", "IADD", "IMAD", "LEA", "BFE", "BFI", "SGXT",
            "IABS", "IMNMX", "VIADD", "VIMNMX", "ISETP", "POPC", "FLO"},
    "convert": {"I2F", "F2I", "F2F", "F2FP", "I2FP", "I2I", "F2IP", "FRND"},
    "local": {"LDL", "STL"},
    "shared": {"LDS", "STS", "LDSM", "STSM"},
}


def ptx_load_widths(ptx: str, param_names: list[str]) -> dict[str, set[int]]:
    """{pointer argument name: the bit widths of the global loads that read it}. `param_names[i]` names
    the PTX parameter i (the kernel's non-constexpr arguments, in order); a load whose address comes
    from no pointer parameter, or from several, is listed under "?"."""
    params = {reg: int(index) for reg, index in _PARAM.findall(ptx)}
    sources: dict[str, list[str]] = defaultdict(list)
    for dst, operands in _DEF_64.findall(ptx):
        sources[dst].extend(_REG_64.findall(operands))
    widths: dict[str, set[int]] = defaultdict(set)
    for vector, bits, reg in _LD_GLOBAL.findall(ptx):
        widths[_argument(reg, params, sources, param_names)].add(int(vector or 1) * int(bits))
    for reg, size in _CP_ASYNC.findall(ptx):
        widths[_argument(reg, params, sources, param_names)].add(8 * int(size, 0))
    return dict(widths)


def _argument(reg: str, params: dict[str, int], sources: dict[str, list[str]], names: list[str]) -> str:
    seen, stack, found = set(), [reg], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in params:
            found.add(params[current])
        stack.extend(sources.get(current, ()))
    if len(found) != 1:
        return "?"
    index = found.pop()
    return names[index] if index < len(names) else f"param_{index}"


@dataclass
class SassMix:
    """Instruction counts by class (CLASSES, plus "instructions": all) over the main loop and the kernel,
    and the main loop's global load widths in bits (LDG / LDGSTS suffixes)."""

    loop: dict[str, int]
    kernel: dict[str, int]
    loop_load_bits: dict[int, int]  # width -> count in the main loop
    loop_tensor_ops: dict[str, int]  # tensor-core opcode with its suffixes (HGMMA.64x128x16.F32.BF16) -> count

    @property
    def spills(self) -> int:
        return self.kernel["local"]


def sass_mix(sass: str) -> SassMix:
    """The instruction mix of the first function in `sass` (cuobjdump -sass text)."""
    instructions = [(int(a, 16), op, suffix, rest) for a, op, suffix, rest in _SASS_LINE.findall(sass)]
    loop = main_loop(instructions)
    inside = [i for i in instructions if loop and loop[0] <= i[0] <= loop[1]]
    tensor_ops: dict[str, int] = defaultdict(int)
    bits: dict[int, int] = defaultdict(int)
    for _, op, suffix, _ in inside:
        if op in CLASSES["tensor"]:
            tensor_ops[op + suffix] += 1
        if op in CLASSES["load"]:
            bits[load_bits(suffix)] += 1
    return SassMix(_count(inside), _count(instructions), dict(bits), dict(tensor_ops))


def main_loop(instructions: list[tuple]) -> tuple[int, int] | None:
    """[start, end] addresses of the first outermost loop: a backward BRA and its target."""
    loops = []
    for address, op, _, rest in instructions:
        target = _BRA_TARGET.search(rest)
        if op == "BRA" and target and int(target.group(1), 16) < address:
            loops.append((int(target.group(1), 16), address))
    outermost = [lp for lp in loops if not any(o != lp and o[0] <= lp[0] and lp[1] <= o[1] for o in loops)]
    return min(outermost) if outermost else None


def load_bits(suffix: str) -> int:
    """Bit width of an LDG / LDGSTS from its suffixes (.128, .64, .U8, .S16, ...; none: 32)."""
    for part, bits in ((".128", 128), (".64", 64), (".U16", 16), (".S16", 16), (".U8", 8), (".S8", 8)):
        if part + "." in suffix + ".":
            return bits
    return 32


def _count(instructions: list[tuple]) -> dict[str, int]:
    counts = {name: 0 for name in CLASSES}
    for _, op, _, _ in instructions:
        for name, ops in CLASSES.items():
            if op in ops:
                counts[name] += 1
    counts["instructions"] = sum(1 for _, op, _, _ in instructions if op != "NOP")
    return counts
