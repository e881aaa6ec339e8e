"""Which layers a compression pass touches: fnmatch patterns over module paths.

Every rewrite pass has `layers` (patterns to include; empty = every linear/conv layer) and
`skip` (patterns to leave alone; default the LM head and embeddings, as users expect) options and
calls `select_layers`. Patterns match the layer's module path (`model.layers.0.mlp.up_proj`) or
any of its dotted suffixes (`mlp.up_proj`, `up_proj`). Reads the graph; writes nothing.
"""

from __future__ import annotations

from fnmatch import fnmatch

import torch.fx

from fxc import ir

DEFAULT_SKIP = ("lm_head", "*embed*", "*classifier*")


def matches(fqn: str, pattern: str) -> bool:
    parts = fqn.split(".")
    return any(fnmatch(".".join(parts[i:]), pattern) for i in range(len(parts)))


def select_layers(
    gm: torch.fx.GraphModule,
    layers: tuple[str, ...] = (),
    skip: tuple[str, ...] = DEFAULT_SKIP,
    kinds: tuple[str, ...] = ("linear",),
) -> list[ir.WeightLayer]:
    """The weight layers of `kinds` matching `layers` (all if empty) and no `skip` pattern."""
    chosen = []
    for layer in ir.weight_layers(gm, kinds):
        if layers and not any(matches(layer.fqn, p) for p in layers):
            continue
        if any(matches(layer.fqn, p) for p in skip):
            continue
        chosen.append(layer)
    return chosen
