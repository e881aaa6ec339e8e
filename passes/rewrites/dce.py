"""dce: dead code elimination.

Reads: the graph only (no analysis, no calibration).
Writes: removes nodes whose results nobody uses (side-effect-free ones only) and the weights that only
they used.
Preserves: every analysis (the surviving nodes compute the same values).
Options: none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx

from fxc import ir
from fxc.passmgr.passbase import ALL, Pass, PassResult


@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Remove unused nodes and the tensors only they read."""

    name = "dce"

    def run(self, gm: torch.fx.GraphModule, am) -> PassResult:
        before = len(gm.graph.nodes)
        gm.graph.eliminate_dead_code()
        freed = ir.remove_unused_tensors(gm)
        removed = before - len(gm.graph.nodes)
        changed = removed > 0 or freed > 0
        return PassResult(changed, frozenset({ALL}), f"removed {removed} nodes, {freed} tensors")
