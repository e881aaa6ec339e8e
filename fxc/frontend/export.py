"""The step every frontend ends with: torch.export, then the canonical form of fxc/ir/__init__.py.

    gm = export_canonical(source, args, kwargs, frontend="export", dynamic=True)

`export_canonical` exports `source` (the model, its symbolic trace, or a lifted dynamo graph) with
`torch.export.export(..., strict=False)`; tensor input dims are traced as `Dim.AUTO` when `dynamic`
(dynamic where the model allows), and the dims in `required` as `Dim.DYNAMIC` (they must come out
dynamic: the size-1 dims fxc/frontend/size_one.py widened to 2). It then drops export's runtime guard
call and unused tensors, gives the graph its own copy of every weight (tied weights stay tied), puts
LayerInfo on each weight layer and verifies the result. A failure is a TraceError naming the frontend,
the user's failing line and the frontend to try instead. Reads the source module; writes only the new
graph module; preserves the source (its mode, weights and graph are left as they were).
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from fxc import ir
from fxc.errors import TraceError
from fxc.frontend.size_one import required_dims
from fxc.ir import meta


def export_canonical(
    source: torch.nn.Module,
    args: tuple,
    kwargs: dict,
    frontend: str,
    dynamic: bool,
    required: frozenset[tuple[int, int]] = frozenset(),
    static: frozenset[tuple[int, int]] = frozenset(),
) -> torch.fx.GraphModule:
    """`source` called on (args, kwargs) exported and put in canonical form; `frontend` names the
    frontend in error messages. `required`: (tensor leaf index in (args, kwargs), dim) pairs that must
    trace dynamic (`Dim.DYNAMIC`; fxc/frontend/size_one.py): a TraceError when the model fixes one.
    `static`: pairs traced at their example size (`Dim.STATIC`; e.g. a KV cache's head count and head dim,
    which must not share a symbol with an equal batch size)."""
    dims = None
    if dynamic:
        leaves, spec = pytree.tree_flatten((args, kwargs))
        entries = required_dims(leaves, required)
        for index, d in static:
            entries[index][d] = torch.export.Dim.STATIC
        dims = _as_dynamic_shapes(source, args, kwargs, pytree.tree_unflatten(entries, spec))
    try:
        with torch.no_grad(), _quiet_size_one_log():
            exported = torch.export.export(source, args, kwargs, dynamic_shapes=dims, strict=False)
    except Exception as error:
        other = "symbolic" if frontend != "symbolic" else "export"
        if _SHAPE_ERROR.search(first_line(error)):
            leaves = pytree.tree_leaves((args, kwargs))
            shapes = ", ".join(str(list(t.shape)) for t in leaves if isinstance(t, torch.Tensor))
            raise TraceError(
                f"shape mismatch: {type(source).__name__} cannot run on example inputs of shapes {shapes}: "
                f"{type(error).__name__}: {first_line(error)}{user_frame(error)}\n  give example_inputs (and "
                "calibration batches) shaped like the model's real inputs"
            ) from error
        raise TraceError(
            f"frontend '{frontend}' could not trace {type(source).__name__}: {type(error).__name__}: "
            f"{first_line(error)}{user_frame(error)}\n  try frontend='{other}', or make the failing "
            "line traceable (no data-dependent Python control flow on tensor values)"
        ) from error
    gm = exported.module()
    _check_required(gm, required, frontend, source)
    _canonicalize(gm)
    return gm


_SHAPE_ERROR = re.compile(
    r"shape|size of tensor|sizes? .* must match|mat1 and mat2|expected input.*to have|channels|reduction dim|"
    r"cannot be multiplied|Expected .* dimensions?", re.IGNORECASE)


class _DropSizeOneNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "0/1 specialized" not in record.getMessage()


@contextlib.contextmanager
def _quiet_size_one_log():
    """torch logs a warning for each size-1 dim Dim.AUTO fixes; fxc traces those dims at size 2 first and
    warns itself (FixedBatchWarning) about a batch dim that stays fixed, so the log line is only noise.
    The fake-tensor logger prints the traceback of the error export raises (some 20 lines), which fxc
    turns into one TraceError: it is muted while exporting."""
    logger, drop = logging.getLogger("torch._export.non_strict_utils"), _DropSizeOneNotes()
    fake = logging.getLogger("torch._subclasses.fake_tensor")
    logger.addFilter(drop)
    was_disabled, fake.disabled = fake.disabled, True
    try:
        yield
    finally:
        logger.removeFilter(drop)
        fake.disabled = was_disabled


def _check_required(gm: torch.fx.GraphModule, required: frozenset[tuple[int, int]], frontend: str, source) -> None:
    """Each required dim is symbolic in its placeholder's value (placeholders follow the input leaves)."""
    values = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
    for index, d in sorted(required):
        value = values[index] if index < len(values) else None
        if not isinstance(value, torch.Tensor) or is_concrete_int(value.shape[d]):
            raise TraceError(
                f"frontend '{frontend}' traced {type(source).__name__} with input {index} dim {d} static; "
                "it was asked for as dynamic"
            )


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


def user_frame(error: BaseException, lead: str = "\n  ") -> str:
    """The innermost traceback frame outside torch: the user's failing line, after `lead`."""
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
    return f"{lead}at {f.filename}:{f.lineno} in {f.name}: {f.line}"
