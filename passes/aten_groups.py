"""Groups of ATen ops that more than one pass walks through: they carry a tensor's values, or each element
apart, from their one tensor input to their output. (Plain ATen ops, not fxc's op set, fxc/ir/ops.py.)

    COPIES      the input's values unchanged: a dtype cast, a clone, an alias, and dropout (the identity
                in an inference graph)
    POINTWISE   a function of each element alone (relu, gelu, silu, sigmoid, tanh, neg)

Each walk adds the ops it also understands (passes/prune/channels.py, passes/prune/heads_region.py,
passes/rewrites/smooth_quant.py). Reads and writes nothing.
"""

from __future__ import annotations

import torch

aten = torch.ops.aten
COPIES = frozenset({aten.to.dtype, aten.clone.default, aten.alias.default, aten.dropout.default})
POINTWISE = frozenset(
    {aten.relu.default, aten.gelu.default, aten.silu.default, aten.sigmoid.default, aten.tanh.default, aten.neg.default}
)
