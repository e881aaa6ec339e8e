"""Quantization schemes as the quantize and mixed-precision passes name and count them.

A `Scheme` is what one layer becomes: weight bits, group size (None: one scale per output channel),
symmetric or not, and int8 activations or not. Its text form is the candidate spelling the
`sensitivity` analysis uses: "w8", "w4", "w4g64", "w4g128", "w8a8", and "keep" (the dense weight;
"dense" is read as the same).

`storage_bytes(n, k)` counts exactly the tensors `quantize` stores for an [N, K] weight (conv weights
flattened to [O, C/g*kh*kw]), in fxc.ir.qformat's layout: int8 q (int4 packed two per byte), float32
scales [N, K/group], float32 zero points when asymmetric, and for W8A8 a float32 weight scale [N]
plus a one-element input scale when static. The mixed-precision planner budgets with it, so the
in-memory size of the quantized model equals the plan. `unfit_reason(n, k)` says why a scheme cannot
store a weight of that shape (group size does not divide K; int4 with odd K). Reads and writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fxc.ir import qformat

KEEP_BITS = 16  # LayerPlan.bits meaning "keep the dense weight" (fxc/ir/meta.py)
GROUP_SIZES = (None, 32, 64, 128)
_SPEC = re.compile(r"^w(?P<bits>\d+)(?:g(?P<group>\d+))?(?P<act>a8)?$")


@dataclass(frozen=True)
class Scheme:
    bits: int  # 4 or 8; KEEP_BITS for the dense weight
    group_size: int | None = None
    symmetric: bool = True
    act_bits: int | None = None
    static: bool = False  # W8A8 with one calibrated input scale

    @property
    def keeps(self) -> bool:
        return self.bits == KEEP_BITS

    @property
    def text(self) -> str:
        if self.keeps:
            return "keep"
        group = f"g{self.group_size}" if self.group_size else ""
        return f"w{self.bits}{group}" + ("a8" if self.act_bits == 8 else "")

    def unfit_reason(self, n: int, k: int) -> str | None:
        """None when a weight [n, k] can be stored in this scheme, else why not."""
        if self.keeps:
            return None
        if self.group_size is not None and k % self.group_size:
            return f"group size {self.group_size} does not divide its input dimension {k}"
        if self.bits == 4 and k % 2:
            return f"int4 packs two columns per byte but its input dimension {k} is odd"
        return None

    def storage_bytes(self, n: int, k: int, dense_element_size: int = 4) -> int:
        """Bytes of the tensors quantize stores for an [n, k] weight (bias excluded: it is unchanged)."""
        if self.keeps:
            return n * k * dense_element_size
        if self.act_bits == 8:
            return n * k + 4 * n + (4 if self.static else 0)
        groups = 1 if self.group_size is None else k // self.group_size
        per_group = 4 if self.symmetric else 8
        return n * k * self.bits // 8 + n * groups * per_group


def parse_scheme(text: str, symmetric: bool = True) -> Scheme:
    """'w4g64' -> Scheme(4, 64); 'w8a8' -> W8A8; 'keep' -> the dense weight. ValueError otherwise."""
    if text in ("keep", "dense"):
        return Scheme(KEEP_BITS)
    match = _SPEC.match(text)
    if not match:
        raise ValueError(f"unknown quantization scheme '{text}'; write w8, w4, w4g64, w4g128, w8a8 or keep")
    bits = int(match["bits"])
    group = int(match["group"]) if match["group"] else None
    if bits not in qformat.SUPPORTED_BITS:
        raise ValueError(f"scheme '{text}': bits must be one of {qformat.SUPPORTED_BITS}")
    if group not in GROUP_SIZES:
        raise ValueError(f"scheme '{text}': group size must be one of 32, 64, 128 (or none)")
    if match["act"] and (bits != 8 or group is not None):
        raise ValueError(f"scheme '{text}': int8 activations go with per-channel int8 weights (w8a8)")
    return Scheme(bits, group, symmetric, 8 if match["act"] else None)
