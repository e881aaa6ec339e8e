"""GPTQ: quantize a weight column by column, pushing each column's rounding error onto the columns not
yet quantized through the inverse input Hessian (Frantar et al., 2022, "GPTQ").

    qw = gptq_quantize(weight [N, K], hessian [K, K], bits=4, group_size=64)   # -> qformat.QuantizedWeight
    results = gptq_layers(gm, calibration, {node: scheme}, damp=0.01)          # layer by layer on a graph

`gptq_quantize` is a pure function other passes may call. Dampening adds damp·mean(diag H) to the
diagonal (passes/algorithms/gram.py's damped_hessian; dead inputs get weight 0). The error is propagated
lazily in blocks of `block_size` columns (same result, fewer large updates). With `act_order` columns are
visited in order of decreasing Hessian diagonal; group scales are then computed up front from the
original weight ("static groups"), so the stored layout stays fxc.ir.qformat's contiguous groups in the
original column order. Without act_order each group's scale is computed when the group is reached, from
the columns as the earlier error updates left them.

`gptq_layers` runs sequentially (fxc.passmgr.sequential): for each segment it observes the layer inputs
with the weights quantized so far, builds the Hessians (passes/algorithms/layer_inputs.py's segment_hessians for
linear layers; for conv2d the Hessian of the unfolded input patches), quantizes, writes the dequantized
weights back so the next segment sees the quantized model's activations, and advances. Grouped
convolutions (depthwise) have one Hessian per group, which this does not build: they are quantized
round-to-nearest, and the returned method says so. With fit=dense each linear layer is fitted to the
dense model's output on the quantized model's inputs (passes/algorithms/dense_target.py: GPTQ runs on the
target weight W̃ = W0 C H⁻¹); with fit=residual a layer adding into a residual stream also makes up the
stream's drift. Without a fit or a damp from the caller (quantize's defaults), each layer's fit and Hessian
shrinkage come from its calibration tokens per input (passes/algorithms/layer_inputs.py's calibration_fit:
fit=residual with enough tokens, else fit=layer with the Hessian shrunk toward its diagonal, so that with
very few tokens GPTQ tends to round-to-nearest instead of overfitting them); `fits` returns each layer's
choice. The dense model runs beside only when some layer fits to it (layer_inputs.TwinOnDemand). On any
error every weight it changed is restored. Reads the graph and calibration; writes (temporarily) the
dequantized weights of the layers it quantized.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol

import torch
import torch.fx
import torch.nn.functional as F

from fxc import ir
from fxc.ir import qformat
from fxc.passes.algorithms.dense_target import dense_target_weight
from fxc.passes.algorithms.gram import (
    DampedHessian,
    HessianAccumulator,
    damped_hessian,
    inverse_cholesky_upper,
    one_thread,
)
from fxc.passes.algorithms.layer_inputs import CalibrationFit, TwinOnDemand, calibration_fit, segment_hessians
from fxc.passmgr.calibration import Calibration
from fxc.passmgr.sequential import CalibrationRunner, Segment, segments, segments_through


class LayerScheme(Protocol):
    """What gptq_layers reads of each layer's quantization scheme (passes/specs/scheme.py's Scheme)."""

    bits: int
    group_size: int | None
    symmetric: bool
    act_bits: int | None


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    symmetric: bool = True,
    damp: float = 0.01,
    act_order: bool = False,
    block_size: int = 128,
    layer: str = "",
    full_range: bool = True,
    damped: DampedHessian | None = None,
) -> qformat.QuantizedWeight:
    """GPTQ-quantize a 2-D weight [N, K] given its input Hessian [K, K] (2·XᵀX/n). full_range: the scale rule of
    qformat.group_scales (False for W8A8 weights: qformat.weights_full_range). damped: `hessian` already
    dampened and factored (passes/algorithms/gram.py's damped_hessian), when the caller has it."""
    w = weight.detach().to(torch.float32).clone()
    n, k = w.shape
    gs = k if group_size is None else group_size
    if k % gs:
        raise ValueError(f"layer {layer}: group size {gs} does not divide the input dimension {k}")
    if hessian.shape != (k, k):
        raise ValueError(f"layer {layer}: Hessian is {tuple(hessian.shape)}, expected ({k}, {k})")
    damped = damped or damped_hessian(hessian, damp, layer)
    h = damped.matrix
    w[:, torch.diag(hessian) == 0] = 0.0
    static_groups = act_order or group_size is None
    scales_of = functools.partial(qformat.group_scales, bits=bits, symmetric=symmetric, full_range=full_range)
    if static_groups:
        scale, zero = scales_of(w.view(n, k // gs, gs))
    else:
        scale = torch.empty(n, k // gs)
        zero = None if symmetric else torch.empty(n, k // gs)
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(k)
    hinv = inverse_cholesky_upper(h[perm][:, perm]) if act_order else damped.inverse_cholesky_upper
    # Work on Wᵀ in visiting order: row c is input column perm[c], contiguous, so each step's rank-1
    # update is one BLAS call on a contiguous block.
    wt = w[:, perm].T.contiguous()
    scale_t = scale.T.contiguous()
    zero_t = None if zero is None else zero.T.contiguous()
    groups = (perm // gs).tolist()
    pivots = hinv.diagonal().tolist()
    q = torch.empty(k, n, dtype=torch.int8)
    for b0 in range(0, k, block_size):
        b1 = min(b0 + block_size, k)
        err = torch.empty(b1 - b0, n)
        with one_thread():  # thousands of tiny ops: thread hand-offs cost more than they save
            _quantize_block(
                wt, q, err, hinv, pivots, scale_t, zero_t, groups, b0, b1, gs, bits, scales_of, static_groups
            )
        if b1 < k:
            wt[b1:].addmm_(hinv[b0:b1, b1:].T, err, alpha=-1)
    unpermuted = torch.empty(n, k, dtype=torch.int8)
    unpermuted[:, perm] = q.T
    scale = scale_t.T.contiguous()
    zero = None if zero_t is None else zero_t.T.contiguous()
    return qformat.QuantizedWeight(qformat.pack(unpermuted, bits), scale, zero, bits)


def _quantize_block(wt, q, err, hinv, pivots, scale_t, zero_t, groups, b0, b1, gs, bits, scales_of, static_groups):
    """Columns b0..b1 one by one: quantize, then push the error onto the block's later columns. scales_of: the
    (scale, zero) rule for weights viewed as [N, G, group]."""
    lo, hi = qformat.qrange(bits)
    for i in range(b1 - b0):
        col = b0 + i
        group = groups[col]
        if not static_groups and col % gs == 0:  # identity order: the group is columns col..col+gs
            current = _current_rows(wt, err[:i], hinv, b0, b1, col, col + gs)
            s, z = scales_of(current.T.unsqueeze(1))
            scale_t[group] = s[:, 0]
            if zero_t is not None:
                zero_t[group] = z[:, 0]
        s = scale_t[group]
        z = zero_t[group] if zero_t is not None else 0.0
        row = wt[col]
        qc = (torch.round(row / s) + z).clamp_(lo, hi)
        e = (row - (qc - z) * s) / pivots[col]
        if col + 1 < b1:
            wt[col + 1 : b1].addr_(hinv[col, col + 1 : b1], e, alpha=-1)
        err[i] = e
        q[col] = qc


def _current_rows(wt, err, hinv, b0, b1, start, end) -> torch.Tensor:
    """Rows start..end of Wᵀ as the updates so far left them: rows past the block still owe the
    block's pending (lazy) update."""
    current = wt[start:end].clone()
    if end > b1 and err.shape[0]:
        current[b1 - start :] -= hinv[b0 : b0 + err.shape[0], b1:end].T @ err
    return current


# --- layer by layer on a graph ------------------------------------------------------------------------


def conv_geometry(node: torch.fx.Node) -> dict:
    """stride / padding / dilation (as 2-lists) and groups of an aten.conv2d node, defaults filled in."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    values = dict(zip(names, node.args)) | dict(node.kwargs)
    return {
        "stride": _pair(values.get("stride"), 1),
        "padding": _pair(values.get("padding"), 0),
        "dilation": _pair(values.get("dilation"), 1),
        "groups": int(values.get("groups") or 1),
    }


def _pair(value, default: int) -> list[int]:
    items = [default] if value is None else [int(v) for v in value]
    return items * 2 if len(items) == 1 else items


def conv_hessians(
    runner: CalibrationRunner, segment: Segment, convs: list[ir.WeightLayer], tokens: dict[str, int] | None = None
) -> dict[str, torch.Tensor]:
    """Hessians 2·PᵀP/n of the unfolded input patches P [tokens, C·kh·kw] of ungrouped conv layers.
    tokens: a dict to fill with each layer's number of patches."""
    accs = {layer.node: HessianAccumulator() for layer in convs}
    shapes = {layer.node: ir.get_tensor(runner.gm, layer.weight).shape[-2:] for layer in convs}

    def observe(node: torch.fx.Node, x: torch.Tensor) -> None:
        if node in accs:
            g = conv_geometry(node)
            patches = F.unfold(x, shapes[node], g["dilation"], g["padding"], g["stride"])  # [B, CKK, L]
            accs[node].add(patches.transpose(1, 2))

    runner.observe(segment, observe)
    if tokens is not None:
        tokens.update({node.name: acc.tokens for node, acc in accs.items()})
    return {node.name: acc.result() for node, acc in accs.items()}


def gptq_layers(
    gm: torch.fx.GraphModule,
    calibration: Calibration,
    schemes: dict[torch.fx.Node, LayerScheme],
    damp: float | None = None,
    act_order: bool = False,
    block_size: int = 128,
    fit: str | None = None,
    fits: dict[str, CalibrationFit] | None = None,
) -> dict[torch.fx.Node, tuple[qformat.QuantizedWeight, str]]:
    """GPTQ every layer in `schemes` in graph order, each segment seeing the quantized output of the
    segments before it. Returns {node: (quantized weight, method actually used)}. `fit`: each linear layer
    fitted to its own output (layer), to the dense model's (dense) or to the dense model's residual stream
    (residual, passes/algorithms/dense_target.py); `fit` / `damp` None: chosen per layer from its calibration
    tokens (passes/algorithms/layer_inputs.py's calibration_fit). fits: a dict to fill with each layer's
    CalibrationFit, by node name."""
    runner = CalibrationRunner(gm, calibration)
    twin = TwinOnDemand(gm, calibration, residual=fit in (None, "residual"))
    widths = {node: ir.get_tensor(gm, str(node.args[1].target))[0].numel() for node in schemes}
    originals: dict[str, torch.Tensor] = {}
    results: dict[torch.fx.Node, tuple[qformat.QuantizedWeight, str]] = {}
    chosen: dict[str, CalibrationFit] = {} if fits is None else fits
    try:
        for segment in segments_through(segments(gm), set(schemes)):
            targets = [layer for layer in segment.layers if layer.node in schemes]
            if targets:
                grouped = [t for t in targets if t.kind == "conv2d" and conv_geometry(t.node)["groups"] != 1]
                convs = [t for t in targets if t.kind == "conv2d" and t not in grouped]
                tokens: dict[str, int] = {}
                linear = any(t.kind == "linear" for t in targets)
                hessians = segment_hessians(runner, segment, tokens) if linear else {}
                hessians |= conv_hessians(runner, segment, convs, tokens) if convs else {}
                # conv layers keep the layer-wise fit; the dense model runs if any linear layer fits to it
                count = max(tokens.values(), default=0)
                needed = any(
                    calibration_fit(count, widths[node], fit, damp).fit != "layer"
                    for node in schemes
                    if node.target == ir.aten.linear.default
                )
                crosses = twin.cross_covariances(runner, segment, needed) if linear else {}
                for layer in targets:
                    weight = ir.get_tensor(gm, layer.weight)
                    scheme = schemes[layer.node]
                    flat = weight.detach().reshape(weight.shape[0], -1)
                    name = layer.node.name
                    full_range = qformat.weights_full_range(scheme.act_bits)
                    if layer in grouped:
                        rtn = qformat.quantize_rtn(flat, scheme.bits, scheme.group_size, scheme.symmetric, full_range)
                        qw, method = rtn, "rtn"
                    else:
                        choice = _layer_fit(tokens[name], flat.shape[1], fit, damp, name in crosses, layer.kind)
                        chosen[name] = choice
                        damped = damped_hessian(hessians[name], choice.damp, layer.fqn, choice.shrink)
                        if choice.fit != "layer":  # a ridge toward W0 as strong as the shrinkage (layer_inputs)
                            ridge = damped.scaled(1.0 / (1.0 - choice.shrink))
                            flat = dense_target_weight(
                                flat, hessians[name], crosses[name], choice.damp, layer.fqn, ridge
                            )
                        qw = gptq_quantize(
                            flat,
                            hessians[name],
                            scheme.bits,
                            scheme.group_size,
                            scheme.symmetric,
                            choice.damp,
                            act_order,
                            block_size,
                            layer.fqn,
                            full_range,
                            damped,
                        )
                        method = "gptq"
                    results[layer.node] = (qw, method)
                    originals.setdefault(layer.weight, weight)
                    dequantized = qformat.dequantize(qw.qweight, qw.scale, qw.zero_point, qw.bits)
                    ir.set_tensor(gm, layer.weight, dequantized.view(weight.shape).to(weight.dtype))
            runner.advance(segment)
            twin.advance(segment)
    except BaseException:
        for target, weight in originals.items():
            ir.set_tensor(gm, target, weight)
        raise
    return results


def _layer_fit(tokens: int, width: int, fit: str | None, damp: float | None, crossed: bool, kind: str):
    """calibration_fit for one layer; conv layers, and layers the dense model was not run for, fit themselves."""
    choice = calibration_fit(tokens, width, fit, damp)
    if choice.fit != "layer" and (kind != "linear" or not crossed):
        own = "conv layers fit themselves" if kind != "linear" else "no dense model ran for it"
        choice = dataclasses.replace(choice, fit="layer", note=own)
    return choice
