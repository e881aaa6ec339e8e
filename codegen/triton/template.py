"""Kernel templates: Triton source text with named hooks, kept apart from the code that picks them.

A template is the text of one or more `@triton.jit` kernels. Two kinds of hook are filled in by name:

    {{epilogue}}          a block hook: a line holding only the hook; the filled-in code is indented
                          to the hook's column (several lines allowed)
    {{compute_dtype}}     an inline hook: replaced in place inside a line

Every hook the text names must be given and every given hook must be used, so a typo fails at
render time, not as a Triton compile error. `render` returns plain source; cache.py turns it into
kernels. The templates themselves live one kernel file each in kernels/ (gemv.py, dequant_gemm.py
with two templates over one text, w8a8.py, sparse_nm.py, block_sparse.py), beside the launch wrapper
of their kernels.
Reads and writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TILE_ELEMENTS_PER_THREAD = 192  # accumulator plus epilogue operand tiles, per thread: see KernelTemplate.fits
_BLOCK_HOOK = re.compile(r"^(?P<indent>[ \t]*)\{\{(?P<name>\w+)\}\}[ \t]*$", re.MULTILINE)
_INLINE_HOOK = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class KernelTemplate:
    """One template: its text, the kernels the text defines, and its autotune table.

    configs: the short GPU autotune table (dicts of constexpr block sizes plus num_warps/num_stages);
    interpreter_config: the one config used under TRITON_INTERPRET (no timing there);
    min_arch: per config, the lowest CUDA compute capability (x10: 80, 90) it is meant for, parallel to
    configs (empty: all of them everywhere). A tile whose accumulator and operands fit sm_90's wgmma
    but spill registers under sm_80's mma.sync is marked 90 (benchmarks/kernel_report.py finds them)."""

    name: str
    text: str
    kernels: tuple[str, ...]
    configs: tuple[dict, ...]
    interpreter_config: dict
    notes: str = ""
    min_arch: tuple[int, ...] = ()
    hooks: frozenset[str] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "hooks", frozenset(_INLINE_HOOK.findall(self.text)))
        if self.min_arch and len(self.min_arch) != len(self.configs):
            raise ValueError(f"template {self.name}: {len(self.min_arch)} min_arch entries for "
                             f"{len(self.configs)} configs")

    def fits(self, config: dict, arch: int | None, epilogue_operands: int = 0) -> bool:
        """Whether `config` is meant for compute capability `arch` (None: any, as in the interpreter) and an
        epilogue reading `epilogue_operands` tensors (each loaded as a tile as large as the accumulator, a
        bias row included): the accumulator and those tiles hold at most TILE_ELEMENTS_PER_THREAD elements
        per thread (bigger ones spill registers in the epilogue: benchmarks/kernel_report.py --epilogue)."""
        if epilogue_operands and "BLOCK_M" in config and "BLOCK_N" in config:
            per_thread = config["BLOCK_M"] * config["BLOCK_N"] // (32 * config.get("num_warps", 4))
            if per_thread * (1 + epilogue_operands) > TILE_ELEMENTS_PER_THREAD:
                return False
        if arch is None or not self.min_arch or config not in self.configs:
            return True
        return self.min_arch[self.configs.index(config)] <= arch

    def configs_for(self, arch: int | None, epilogue_operands: int = 0) -> tuple[dict, ...]:
        """The autotune table on compute capability `arch` (None: any) for such an epilogue."""
        return tuple(c for c in self.configs if self.fits(c, arch, epilogue_operands))

    def render(self, **fills: str) -> str:
        missing = self.hooks - set(fills)
        unused = set(fills) - self.hooks
        if missing or unused:
            raise ValueError(
                f"template {self.name}: hooks missing {sorted(missing)}, unknown {sorted(unused)}; "
                f"it takes {sorted(self.hooks)}"
            )

        def block(match: re.Match) -> str:
            indent = match.group("indent")
            code = fills[match.group("name")].strip("\n")
            if not code.strip():
                return f"{indent}pass" if _needs_statement(match) else ""
            return "\n".join(indent + line if line.strip() else "" for line in code.splitlines())

        text = _BLOCK_HOOK.sub(block, self.text)
        return _INLINE_HOOK.sub(lambda m: fills[m.group(1)], text)


def _needs_statement(match: re.Match) -> bool:
    """An empty block hook inside a parameter list vanishes; elsewhere it becomes `pass`."""
    before = match.string[: match.start()].rstrip()
    return not before.endswith(",") and not before.endswith("(")


def config_label(config: dict) -> str:
    """`BLOCK_M=64 BLOCK_N=64 ... num_warps=4`, for reports."""
    return " ".join(f"{key}={value}" for key, value in config.items())
