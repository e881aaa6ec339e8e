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

_BLOCK_HOOK = re.compile(r"^(?P<indent>[ \t]*)\{\{(?P<name>\w+)\}\}[ \t]*$", re.MULTILINE)
_INLINE_HOOK = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class KernelTemplate:
    """One template: its text, the kernels the text defines, and its autotune table.

    configs: the short GPU autotune table (dicts of constexpr block sizes plus num_warps/num_stages);
    interpreter_config: the one config used under TRITON_INTERPRET (no timing there)."""

    name: str
    text: str
    kernels: tuple[str, ...]
    configs: tuple[dict, ...]
    interpreter_config: dict
    notes: str = ""
    hooks: frozenset[str] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "hooks", frozenset(_INLINE_HOOK.findall(self.text)))

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
