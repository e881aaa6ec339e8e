"""Graph surgery for the `low-rank` pass: replace one aten.linear by two.

    split_layer(gm, layer, down, up, rank)

`y = linear(x, W, b)` becomes `h = linear(x, down)` then `y = linear(h, up, b)`: `down` [r, n] and
`up` [m, r] are registered as buffers next to the original weight (`<module>.low_rank_down`,
`<module>.low_rank_up`), the new nodes are named `<node>_down` / `<node>_up` and carry the original
node's provenance (stack trace, module stack, LayerInfo, LayerPlan) plus meta.LowRank(rank, (m, n),
role). Reads and writes only the graph it is given; the caller frees the old weight,
recompiles (ir.remove_unused_tensors does both) and refreshes shapes (ir.refresh_meta) once after all splits.
"""

from __future__ import annotations

import torch
import torch.fx

from fxc import ir
from fxc.ir import meta

aten = torch.ops.aten
_COPIED_META = ("stack_trace", "nn_module_stack", "source_fn_stack", "from_node", "seq_nr")


def split_layer(
    gm: torch.fx.GraphModule, layer: ir.WeightLayer, down: torch.Tensor, up: torch.Tensor, rank: int
) -> None:
    node = layer.node
    weight = ir.get_tensor(gm, layer.weight)
    m, n = weight.shape
    if tuple(down.shape) != (rank, n) or tuple(up.shape) != (m, rank):
        shapes = f"{tuple(up.shape)} x {tuple(down.shape)}"
        raise ValueError(f"factors {shapes} do not split a {m}x{n} weight at rank {rank}")
    device = weight.device
    base = layer.weight.removesuffix(".weight").removesuffix("weight") or "low_rank"
    down_name = ir.add_tensor(gm, f"{base}.low_rank_down", down.to(device))
    up_name = ir.add_tensor(gm, f"{base}.low_rank_up", up.to(device))
    x = node.args[0]
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    graph = gm.graph
    with graph.inserting_before(node):
        down_attr = graph.get_attr(down_name)
        up_attr = graph.get_attr(up_name)
        first = graph.create_node("call_function", aten.linear.default, (x, down_attr), {}, name=f"{node.name}_down")
        up_args = (first, up_attr) if bias is None else (first, up_attr, bias)
        second = graph.create_node("call_function", aten.linear.default, up_args, {}, name=f"{node.name}_up")
    for half, role in ((first, "down"), (second, "up")):
        for key in _COPIED_META:
            if key in node.meta:
                half.meta[key] = node.meta[key]
        for cls in (meta.LayerInfo, meta.LayerPlan):
            if meta.get(node, cls) is not None:
                meta.put(half, meta.get(node, cls))
        meta.put(half, meta.LowRank(rank=rank, original_shape=(int(m), int(n)), role=role))
    node.replace_all_uses_with(second)
    graph.erase_node(node)
