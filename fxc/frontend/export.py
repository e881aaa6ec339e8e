"""The step every frontend ends with: torch.export, then the canonical form of fxc/ir/__init__.py.

    gm = export_canonical(source, args, kwargs, frontend="export", dynamic=True)

`export_canonical` exports `source` (the model, its symbolic trace, or a lifted dynamo graph) with
`torch.export.export(..., strict=False)`; tensor input dims are traced as `Dim.AUTO` when `dynamic`
(dynamic where the model allows). It then drops export's runtime guard call and unused tensors, gives
the graph its own copy of every weight (tied weights stay tied), puts LayerInfo on each weight layer
and verifies the result. A failure is a TraceError naming the frontend, the user's failing line and
the frontend to try instead. Reads the source module; writes only the new graph module; preserves
the source (its mode, weights and graph are left as they were).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch.export import Dim

from fxc import ir
from fxc.errors import TraceError
from fxc.ir import meta


def export_canonical(
    source: torch.nn.Module, args: tuple, kwargs: dict, frontend: str, dynamic: bool
) -> torch.fx.GraphModule:
    """`source` called on (args, kwargs) exported and put in canonical form; `frontend` names the
    frontend in error messages."""
    dims = None
    if dynamic:
        dims = pytree.tree_map(
            lambda x: {d: Dim.AUTO for d in range(x.dim())} if isinstance(x, torch.Tensor) else None,
            (args, kwargs),
        )
        dims = _as_dynamic_shapes(source, args, kwargs, dims)
    try:
        with torch.no_grad():
            exported = torch.export.export(source, args, kwargs, dynamic_shapes=dims, strict=False)
    except Exception as error:
        other = "symbolic" if frontend != "symbolic" else "export"
        raise TraceError(
            f"frontend '{frontend}' could not trace {type(source).__name__}: {type(error).__name__}: "
            f"{first_line(error)}{_user_frame(error)}\n  try frontend='{other}', or make the failing "
            "line traceable (no data-dependent Python control flow on tensor values)"
        ) from error
    gm = exported.module()
    _canonicalize(gm)
    return gm


def _as_dynamic_shapes(source, args, kwargs, dims):
    """export wants dynamic_shapes keyed like the forward signature."""
    import inspect

    params = list(inspect.signature(source.forward).parameters)
    arg_dims, kwarg_dims = dims
    out = {params[i]: d for i, d in enumerate(arg_dims) if i < len(params)}
    out.update(kwarg_dims)
    if any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(source.forward).parameters.values()):
        return None
    return out


def _canonicalize(gm: torch.fx.GraphModule) -> None:
    """Drop export's runtime guard call and unused tensors, give the graph its own weights, annotate layers."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            gm.graph.erase_node(node)
    if hasattr(gm, "_guards_fn"):
        delattr(gm, "_guards_fn")
    copies: dict[int, torch.Tensor] = {}  # tied weights stay tied
    with torch.no_grad():
        for name, tensor in list(gm.named_parameters(remove_duplicate=False)) + list(
            gm.named_buffers(remove_duplicate=False)
        ):
            ir.set_tensor(gm, name, copies.setdefault(id(tensor), tensor.detach().clone()))
    ir.remove_unused_tensors(gm)  # e.g. BatchNorm's num_batches_tracked
    for layer in ir.weight_layers(gm, kinds=("linear", "conv2d", "embedding")):
        meta.put(layer.node, meta.LayerInfo(fqn=layer.weight.rsplit(".", 1)[0], kind=layer.kind))
    gm.recompile()
    ir.verify(gm)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _user_frame(error: BaseException) -> str:
    """The innermost traceback frame outside torch: the user's failing line."""
    import traceback

    package = str(Path(__file__).parent)
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if "/torch/" not in f.filename and not f.filename.startswith(("<", package))
    ]
    if not frames:
        return ""
    f = frames[-1]
    return f"\n  at {f.filename}:{f.lineno} in {f.name}: {f.line}"
