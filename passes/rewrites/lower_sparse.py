"""lower-sparse: replace N:M-sparse linears by torch.ops.fxc.sparse_nm_linear (packed values + indices).

Reads: meta.Sparsity on aten.linear nodes (pattern "N:M", written by prune); no analysis, no calibration.
Writes: for each such layer, `values` [N_out, K*n/m] (the kept weights of every group of m columns, in
column order) and `indices` uint8 [N_out, K*n/m] (their positions inside the group) as new buffers, and a
torch.ops.fxc.sparse_nm_linear node in place of the aten.linear; the dense weight is freed. The node keeps
its fxc annotations. A group holding more than n non-zeros is an error naming the layer (the weight is
not N:M; prune it first); every layer is checked before any is rewritten.
Preserves: every analysis (the layer computes the same values).
Options: none. `lower_nm_layer` is what prune{lower=true} calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.errors import NodeError
from fxc.ir import meta
from fxc.passmgr.passbase import ALL, Pass, PassResult


def pack_nm(weight: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, uint8 indices) of an N:M weight [N_out, K]; raises ValueError if a group has > n non-zeros."""
    rows, cols = weight.shape
    groups = weight.reshape(rows, cols // m, m)
    if ((groups != 0).sum(-1) > n).any():
        raise ValueError(f"some group of {m} columns holds more than {n} non-zero weights")
    # the n largest |w| of each group (the non-zeros first), then back in column order
    positions = torch.topk(groups.abs(), n, dim=-1).indices.sort(dim=-1).values
    values = torch.gather(groups, -1, positions)
    return values.reshape(rows, -1).contiguous(), positions.reshape(rows, -1).to(torch.uint8)


def lower_nm_layer(gm: torch.fx.GraphModule, layer: ir.WeightLayer, n: int, m: int) -> torch.fx.Node | None:
    """Rewrite one aten.linear into sparse_nm_linear; returns the new node (None for non-linear layers)."""
    if layer.kind != "linear":
        return None
    weight = ir.get_tensor(gm, layer.weight)
    try:
        values, indices = pack_nm(weight.detach(), n, m)
    except ValueError as error:
        raise NodeError(layer.node, f"lower-sparse: layer {layer.fqn} is not {n}:{m} sparse ({error})") from error
    base = layer.weight.removesuffix(".weight")
    values_name = ir.add_tensor(gm, f"{base}.nm_values", values)
    indices_name = ir.add_tensor(gm, f"{base}.nm_indices", indices)
    node = layer.node
    bias = node.args[2] if len(node.args) > 2 else None
    with gm.graph.inserting_before(node):
        values_node = gm.graph.get_attr(values_name)
        indices_node = gm.graph.get_attr(indices_name)
        new = gm.graph.call_function(
            torch.ops.fxc.sparse_nm_linear.default, (node.args[0], values_node, indices_node, None, bias, n, m)
        )
    new.meta.update({k: v for k, v in node.meta.items() if k.startswith("fxc.") or k in ("val", "stack_trace")})
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


@dataclass(frozen=True)
class LowerSparse(Pass):
    """Lower N:M-annotated linears to torch.ops.fxc.sparse_nm_linear."""

    name = "lower-sparse"

    def run(self, gm: torch.fx.GraphModule, am) -> PassResult:
        chosen = []
        for layer in ir.weight_layers(gm, kinds=("linear",)):
            sparsity = meta.get(layer.node, meta.Sparsity)
            match = re.fullmatch(r"(\d+):(\d+)", sparsity.pattern) if sparsity else None
            if match:
                chosen.append((layer, int(match.group(1)), int(match.group(2))))
        for layer, n, m in chosen:  # check every layer before rewriting any
            try:
                pack_nm(ir.get_tensor(gm, layer.weight).detach(), n, m)
            except ValueError as error:
                raise NodeError(
                    layer.node, f"lower-sparse: layer {layer.fqn} is not {n}:{m} sparse ({error})"
                ) from error
        for layer, n, m in chosen:
            lower_nm_layer(gm, layer, n, m)
        if chosen:
            gm.recompile()
            ir.remove_unused_tensors(gm)
            ir.refresh_meta(gm)
        return PassResult(bool(chosen), frozenset({ALL}), f"lowered {len(chosen)} N:M linears to sparse_nm_linear")
