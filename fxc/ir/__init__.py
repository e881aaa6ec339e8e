"""The IR: a runnable torch.fx GraphModule in canonical form, plus the helpers passes share.

Canonical form (what every frontend produces, what `verify` checks):
- ATen ops (`torch.ops.aten.*`) and fxc ops (`torch.ops.fxc.*`) as call_function nodes; no
  call_module nodes; weights and buffers are get_attr nodes naming a tensor of the module;
- every placeholder and tensor-producing call_function node carries `node.meta["val"]`;
- fxc annotations (fxc/ir/meta.py) only under their declared keys, with their declared types;
- weight layers (aten.linear / aten.conv2d / aten.embedding with a get_attr weight) carry LayerInfo.

Helpers: `weight_layers(gm)` lists the layers a compression pass works on; `get_tensor`,
`set_tensor`, `add_tensor` read and write the module's tensors by dotted name, `register_tensor`
puts one at an exact dotted name (making the submodules on the way); `refresh_meta`
re-runs shape propagation after a rewrite; `remove_unused_tensors` frees what a rewrite replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
from torch._guards import detect_fake_mode

from fxc.errors import IRError, NodeError
from fxc.ir import meta, ops

aten = torch.ops.aten
LAYER_OPS = {
    aten.linear.default: "linear",
    aten.conv2d.default: "conv2d",
    aten.embedding.default: "embedding",
}


@dataclass(frozen=True)
class WeightLayer:
    """A dense weight layer in the graph: the node, its kind and the dotted names of its tensors."""

    node: torch.fx.Node
    kind: str  # "linear" | "conv2d" | "embedding"
    weight: str  # get_attr target of the weight
    bias: str | None

    @property
    def fqn(self) -> str:
        info = meta.get(self.node, meta.LayerInfo)
        return info.fqn if info else self.weight.rsplit(".", 1)[0]


def weight_layers(
    gm: torch.fx.GraphModule, kinds: tuple[str, ...] = ("linear", "conv2d")
) -> list[WeightLayer]:
    """Dense layers of the given kinds whose weight is a get_attr (in graph order)."""
    found = []
    for node in gm.graph.nodes:
        kind = LAYER_OPS.get(node.target) if node.op == "call_function" else None
        if kind not in kinds:
            continue
        weight_arg = node.args[0] if kind == "embedding" else node.args[1]
        if not (isinstance(weight_arg, torch.fx.Node) and weight_arg.op == "get_attr"):
            continue
        bias_arg = node.args[2] if kind != "embedding" and len(node.args) > 2 else None
        bias = bias_arg.target if isinstance(bias_arg, torch.fx.Node) and bias_arg.op == "get_attr" else None
        found.append(WeightLayer(node, kind, weight_arg.target, bias))
    return found


def get_tensor(gm: torch.nn.Module, target: str) -> torch.Tensor:
    owner, attr = _owner(gm, target)
    value = getattr(owner, attr, None)
    if not isinstance(value, torch.Tensor):
        raise IRError(f"get_attr target '{target}' is not a tensor of the module")
    return value


def set_tensor(gm: torch.nn.Module, target: str, value: torch.Tensor) -> None:
    """Replace the tensor at `target`, keeping it a Parameter if it was one (no grad)."""
    owner, attr = _owner(gm, target)
    if attr in owner._parameters:
        owner._parameters[attr] = torch.nn.Parameter(value.detach(), requires_grad=False)
    elif attr in owner._buffers:
        owner._buffers[attr] = value.detach()
    else:
        setattr(owner, attr, value.detach())


def add_tensor(gm: torch.fx.GraphModule, name: str, value: torch.Tensor) -> str:
    """Register `value` as a buffer at an unused dotted name near `name`; returns the name used."""
    candidate, suffix = name, 0
    while _exists(gm, candidate):
        suffix += 1
        candidate = f"{name}_{suffix}"
    register_tensor(gm, candidate, value.detach())
    return candidate


def register_tensor(root: torch.nn.Module, target: str, value: torch.Tensor, kind: str = "buffer") -> None:
    """Register `value` at the dotted `target` of `root`, adding an empty submodule for each missing part
    of the path: as a parameter (kind "parameter"; `value` must be a Parameter), a buffer ("buffer") or a
    plain attribute (any other kind). `value` is stored as given (not detached, not copied)."""
    prefix, _, attr = target.rpartition(".")
    owner = root
    for part in prefix.split(".") if prefix else []:
        if not hasattr(owner, part):
            owner.add_module(part, torch.nn.Module())
        owner = getattr(owner, part)
    if kind == "parameter":
        owner.register_parameter(attr, value)
    elif kind == "buffer":
        owner.register_buffer(attr, value)
    else:
        setattr(owner, attr, value)


def remove_unused_tensors(gm: torch.fx.GraphModule) -> int:
    """Delete get_attr nodes nobody uses and the parameters/buffers no get_attr names. Returns the
    number of tensors freed."""
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    freed = 0
    for name, _ in list(gm.named_parameters(remove_duplicate=False)) + list(
        gm.named_buffers(remove_duplicate=False)
    ):
        if name not in used:
            owner, attr = _owner(gm, name)
            owner._parameters.pop(attr, None)
            owner._buffers.pop(attr, None)
            freed += 1
    gm.delete_all_unused_submodules()
    gm.recompile()
    return freed


def refresh_meta(gm: torch.fx.GraphModule) -> None:
    """Recompute `meta["val"]` of every node from the placeholders' (fake) values."""
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    inputs = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
    mode = detect_fake_mode(inputs)
    if mode is None:
        from torch._subclasses.fake_tensor import FakeTensorMode

        mode = FakeTensorMode(allow_non_fake_inputs=True)
    FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*inputs)


def verify(gm: torch.fx.GraphModule) -> None:
    """Check the canonical-form contract; raise IRError / NodeError on the first breach."""
    if not isinstance(gm, torch.fx.GraphModule):
        raise IRError(f"the IR is a torch.fx.GraphModule, got {type(gm).__name__}")
    try:
        gm.graph.lint()
    except Exception as error:
        raise IRError(f"graph is malformed: {error}") from error
    for node in gm.graph.nodes:
        if node.op == "call_module":
            raise NodeError(node, "call_module nodes are not canonical; lower the module to ATen ops")
        if node.op == "get_attr":
            get_tensor(gm, node.target)
        if node.op == "placeholder" and "val" not in node.meta:
            raise NodeError(node, "placeholder without meta['val']; run fxc.ir.refresh_meta(gm)")
        if node.op == "call_function":
            is_tensor_op = hasattr(node.target, "_schema") or ops.is_fxc_op(node.target)
            if is_tensor_op and "val" not in node.meta:
                raise NodeError(node, "node without meta['val'] (shape/dtype); run fxc.ir.refresh_meta(gm)")
        for key, value in node.meta.items():
            if key.startswith("fxc.") and not isinstance(value, meta.ANNOTATIONS.get(key, ())):
                raise NodeError(
                    node, f"meta key {key!r} holds {type(value).__name__}; declare keys in fxc/ir/meta.py"
                )


def _owner(gm: torch.nn.Module, target: str) -> tuple[torch.nn.Module, str]:
    prefix, _, attr = target.rpartition(".")
    owner = gm
    for part in prefix.split(".") if prefix else []:
        owner = getattr(owner, part, None)
        if owner is None:
            raise IRError(f"get_attr target '{target}' names no submodule '{part}'")
    return owner, attr


def _exists(gm: torch.nn.Module, target: str) -> bool:
    try:
        _owner(gm, target)
    except IRError:
        return False
    owner, attr = _owner(gm, target)
    return hasattr(owner, attr)
