"""quantize: replace linear and conv2d layers by the op set's quantized ops, with packed weights.

    quantize{method=gptq,bits=4,group-size=64}        # weight-only int4, GPTQ, one scale per 64 columns
    quantize{bits=8}                                  # weight-only int8 per output channel, round to nearest
    quantize{act-bits=8}                              # W8A8: int8 weights and dynamic per-token int8 inputs
    quantize{act-bits=8,static=true}                  # W8A8 with one input scale per layer from act-stats
    quantize{bits=8,rounding=balanced,bias-correction=true}   # CNNs: kernel sums kept, mean output shift removed

Reads: meta.LayerPlan (when a planner such as mixed-precision wrote one with `bits`, the plan decides each
layer's bits / group size / int8 activations: planned layers follow it, layers without a plan stay dense,
and the pass's own bits/group-size/act-bits are not used; bits 16 = keep); calibration (method=gptq, layer
by layer through fxc.passmgr.sequential; static=true; bias-correction=true); the `act-stats` analysis (static=true:
absmax; bias-correction=true: each layer's input mean, measured before any layer is quantized). GPTQ's
defaults follow the calibration size: without `fit` / `damp`, each layer's fit target and Hessian shrinkage
are chosen from its calibration tokens per input (passes/algorithms/layer_inputs.py's calibration_fit), so
a small calibration set does not overfit; the pass summary says which fit ran and why.
Writes: each chosen aten.linear becomes torch.ops.fxc.quantized_linear (weight-only) or
torch.ops.fxc.int8_linear (act-bits=8); each aten.conv2d becomes torch.ops.fxc.quantized_conv2d
(conv layers are always weight-only: int8 activations exist for linear layers only). Weights are stored
in fxc.ir.qformat's layout (int4 packed two per byte, float32 scales and zero points) as buffers next to
the layer's old weight, which is freed, so the model really shrinks. Each new node carries
meta.Quantized (bits, group size, symmetric, act bits, method actually used) plus the old node's
LayerInfo and LayerPlan. bias-correction=true gives each quantized layer a new bias buffer (bias - ΔW·E[x],
passes/algorithms/bias_correction.py; a layer without a bias gets one).
Preserves: nothing.
Options: method, bits, group-size, symmetric, act-bits, static, rounding, bias-correction, damp, act-order,
block-size, fit, layers, skip; `fxc.passmgr.registry.lookup("fxc.passes", "quantize").help()` prints each.

For layers whose inputs are far from zero-mean (CNNs: post-ReLU6 maps, pixels), the sum of a row's rounding
errors times the input level is a systematic output error. rounding=balanced keeps each scale group's error
sum within half a step (data-free; passes/algorithms/balanced_rounding.py); bias-correction=true removes the
remaining mean shift (calibration). Both keep the stored format and are opt-in.

Bad input is rejected before anything changes: an unsupported bits / group size (option validation, or
a plan asking for it), a layer whose input dimension the group size does not divide or an int4 layer
with an odd input dimension (the error names the layer and the `group-size` / `skip` fix), missing
calibration for gptq or static scales. GPTQ (passes/algorithms/gptq.py) writes dequantized weights while
it runs and restores them if it fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.errors import NodeError, OptionError
from fxc.ir import meta, qformat
from fxc.passes.algorithms.balanced_rounding import quantize_balanced
from fxc.passes.algorithms.bias_correction import corrected_bias
from fxc.passes.algorithms.dense_target import TARGETS
from fxc.passes.algorithms.gptq import conv_geometry, gptq_layers
from fxc.passes.algorithms.layer_inputs import CalibrationFit, describe_fits
from fxc.passes.select import DEFAULT_SKIP, select_layers
from fxc.passes.specs.scheme import GROUP_SIZES, KEEP_BITS, Scheme
from fxc.passmgr.options import option
from fxc.passmgr.passbase import Pass, PassResult

fxc_ops = torch.ops.fxc


@dataclass(frozen=True)
class Quantize(Pass):
    """Quantize linear/conv2d weights (int8 or int4, RTN or GPTQ), optionally with int8 activations."""

    name = "quantize"
    method: str = option(
        "rtn", "rtn: round to nearest; gptq: Hessian-based error compensation", choices=("rtn", "gptq")
    )
    bits: int = option(8, "weight bits", choices=(4, 8))
    group_size: int | None = option(
        None, "columns sharing one scale; none: one per output channel", choices=GROUP_SIZES
    )
    symmetric: bool = option(True, "symmetric (no zero point) or asymmetric (min/max with a zero point)")
    act_bits: int | None = option(
        None, "8: int8 activations too (W8A8, linear layers); none: weight-only", choices=(None, 8)
    )
    static: bool = option(False, "W8A8: one input scale per layer from act-stats instead of per-token scales")
    rounding: str = option(
        "nearest",
        "rtn: nearest (each weight alone) or balanced (the fewest weights nearest a rounding boundary go to their "
        "other neighbour so each scale group's rounding errors sum to at most half a step; for CNNs)",
        choices=("nearest", "balanced"),
    )
    bias_correction: bool = option(
        False,
        "subtract each layer's mean output shift from its rounding, ΔW·E[x], from its bias (input means from "
        "calibration; for CNNs and other layers with inputs far from zero-mean)",
    )
    damp: float | None = option(
        None,
        "gptq: fraction of the mean Hessian diagonal added to it; none: 0.01, with the Hessian shrunk toward its "
        "diagonal the more the fewer calibration tokens each input channel has (a number: exactly that, no shrinkage)",
        low=0.0,
        high=1.0,
    )
    act_order: bool = option(
        True,
        "gptq: quantize columns in order of decreasing Hessian diagonal, the most important first (groups keep "
        "their column sets); usually more accurate, leave it on",
    )
    block_size: int = option(128, "gptq: columns per lazy error-update block", low=1)
    fit: str | None = option(
        None,
        "gptq: fit each layer to the dense model on the quantized model's inputs, layers adding into a residual "
        "stream also making up its drift (residual; runs the dense model beside), to the dense layer's output "
        "alone (dense) or to its own output there (layer, classic GPTQ); none: per layer from its calibration "
        "tokens per input, residual with enough of them, else layer (the pass summary says which ran)",
        choices=(None, *TARGETS),
    )
    layers: tuple[str, ...] = option((), "module-path patterns of layers to quantize (empty: all)")
    skip: tuple[str, ...] = option(DEFAULT_SKIP, "module-path patterns of layers to leave dense")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.act_bits == 8 and (self.bits != 8 or self.group_size is not None or not self.symmetric):
            raise OptionError(
                "quantize: act-bits=8 (W8A8) stores int8 weights with one symmetric scale per output channel; "
                "drop bits / group-size / symmetric=false, or drop act-bits for weight-only quantization"
            )
        if self.fit is not None and self.method != "gptq":
            raise OptionError(
                "quantize: option 'fit' chooses what GPTQ's error compensation fits; method=rtn rounds each weight "
                "alone (use method=gptq, or drop option 'fit')"
            )
        if self.static and self.act_bits is None:
            raise OptionError("quantize: option 'static' chooses how int8 activations are scaled; add act-bits=8")
        if self.rounding != "nearest" and self.method != "rtn":
            raise OptionError(
                "quantize: option 'rounding' chooses how method=rtn rounds; GPTQ rounds column by column with its "
                "own error feedback (use method=rtn, or drop option 'rounding')"
            )

    def run(self, gm: torch.fx.GraphModule, am) -> PassResult:
        schemes = self.layer_schemes(gm)
        if not schemes:
            return PassResult(False, summary="no layer to quantize")
        if self.method == "gptq":
            calibration = am.require_calibration("quantize{method=gptq}")
        input_scales = self._static_input_scales(gm, am, schemes)
        means = self._input_means(gm, am, schemes) if self.bias_correction else {}
        layers = {layer.node: layer for layer, _ in schemes.values()}
        originals = {node: ir.get_tensor(gm, layers[node].weight).detach().clone() for node in means}  # gptq writes
        fits: dict[str, CalibrationFit] = {}  # gptq: what each layer fitted, and why (the summary says)
        if self.method == "gptq":
            only = {node: scheme for node, (_, scheme) in schemes.items()}
            quantized = gptq_layers(gm, calibration, only, self.damp, self.act_order, self.block_size, self.fit, fits)
        else:
            steps = am.progress.each(schemes.items(), name=lambda item: item[1][0].fqn)  # one tick per layer
            quantized = {node: (_rtn(gm, layer, scheme, self.rounding), "rtn") for node, (layer, scheme) in steps}
        for node, (qw, method) in quantized.items():
            bias = _corrected_bias(gm, layers[node], qw, originals[node], means[node]) if means else None
            _emit(gm, layers[node], qw, schemes[node][1], method, input_scales.get(node), bias)
        ir.remove_unused_tensors(gm)
        kinds = sorted({s.text for _, s in schemes.values()})
        how = self.method + ("" if self.rounding == "nearest" else f", {self.rounding} rounding")
        how += ", bias corrected" if means else ""
        summary = f"quantized {len(schemes)} layers ({', '.join(kinds)}, {how})"
        return PassResult(True, summary=summary + describe_fits(fits))

    # -- which layer gets which scheme -----------------------------------------------------------------------

    def layer_schemes(self, gm: torch.fx.GraphModule) -> dict[torch.fx.Node, tuple[ir.WeightLayer, Scheme]]:
        """The layers this run quantizes and how; raises (naming the layer) for a weight a scheme cannot store."""
        chosen = select_layers(gm, self.layers, self.skip, kinds=("linear", "conv2d"))
        planned = any((meta.get(layer.node, meta.LayerPlan) or meta.LayerPlan()).bits is not None for layer in chosen)
        out = {}
        for layer in chosen:
            scheme = self._plan_scheme(layer) if planned else self._option_scheme(layer)
            if scheme is None or scheme.keeps:
                continue
            n, k = _flat_shape(gm, layer)
            reason = scheme.unfit_reason(n, k)
            if reason:
                fix = "choose a group size that divides it" if scheme.group_size else "quantize it with bits=8"
                raise NodeError(
                    layer.node,
                    f"quantize: cannot store layer {layer.fqn} ([{n}, {k}]) as {scheme.text}: {reason}; "
                    f'{fix}, or leave it dense with skip=["{layer.fqn}"]',
                )
            out[layer.node] = (layer, scheme)
        return out

    def _option_scheme(self, layer: ir.WeightLayer) -> Scheme:
        act_bits = self.act_bits if layer.kind == "linear" else None
        return Scheme(self.bits, self.group_size, self.symmetric, act_bits, self.static and act_bits == 8)

    def _plan_scheme(self, layer: ir.WeightLayer) -> Scheme | None:
        plan = meta.get(layer.node, meta.LayerPlan)
        if plan is None or plan.bits is None:
            return None
        unsupported = plan.bits != KEEP_BITS and plan.bits not in qformat.SUPPORTED_BITS
        unsupported |= plan.group_size not in GROUP_SIZES
        unsupported |= plan.act_bits is not None and (
            plan.act_bits != 8 or plan.bits != 8 or plan.group_size is not None
        )
        if unsupported:
            raise NodeError(
                layer.node,
                f"quantize: the plan of layer {layer.fqn} ({plan.source or 'a planner'}) asks for {plan.describe()}; "
                f"supported: bits {qformat.SUPPORTED_BITS} (or {KEEP_BITS} to keep), group size 32/64/128 or none",
            )
        act_bits = plan.act_bits if layer.kind == "linear" else None
        return Scheme(plan.bits, plan.group_size, self.symmetric if act_bits is None else True, act_bits, self.static)

    def _input_means(self, gm, am, schemes) -> dict[torch.fx.Node, torch.Tensor]:
        """Each chosen layer's per-input-channel mean on the calibration data, before anything is quantized."""
        am.require_calibration("quantize{bias-correction=true} (input means)")
        stats = am.get("act-stats")
        missing = [layer for node, (layer, _) in schemes.items() if node.name not in stats]
        if missing:
            raise NodeError(
                missing[0].node,
                f"quantize: bias-correction needs the input mean of layers {[m.fqn for m in missing]}, which the "
                "calibration batches never reached; leave them out with skip=[...] or drop bias-correction",
            )
        return {node: stats[node.name].mean for node in schemes}

    def _static_input_scales(self, gm, am, schemes) -> dict[torch.fx.Node, torch.Tensor]:
        static = [node for node, (_, s) in schemes.items() if s.act_bits == 8 and s.static]
        if not static:
            return {}
        am.require_calibration("quantize{static=true} (static activation scales)")
        stats = am.get("act-stats")
        scales = {}
        for node in static:
            absmax = float(stats[node.name].absmax.max())
            scale = absmax / qformat.ACTIVATION_LEVELS if absmax > 0 else 1.0
            scales[node] = torch.tensor([scale], dtype=torch.float32)
        return scales


# --- mechanism ------------------------------------------------------------------------------------------


def _flat_shape(gm: torch.fx.GraphModule, layer: ir.WeightLayer) -> tuple[int, int]:
    weight = ir.get_tensor(gm, layer.weight)
    return weight.shape[0], weight[0].numel()


def _rtn(gm: torch.fx.GraphModule, layer: ir.WeightLayer, scheme: Scheme, rounding: str) -> qformat.QuantizedWeight:
    weight = ir.get_tensor(gm, layer.weight).detach()
    full_range = qformat.weights_full_range(scheme.act_bits)
    rtn = quantize_balanced if rounding == "balanced" else qformat.quantize_rtn
    return rtn(weight.reshape(weight.shape[0], -1), scheme.bits, scheme.group_size, scheme.symmetric, full_range)


def _corrected_bias(gm, layer: ir.WeightLayer, qw: qformat.QuantizedWeight, weight, mean) -> torch.Tensor:
    """The layer's bias less the mean output shift its quantization causes (passes/algorithms/bias_correction.py)."""
    bias = layer.node.args[2] if len(layer.node.args) > 2 else layer.node.kwargs.get("bias")
    if bias is not None and not (isinstance(bias, torch.fx.Node) and bias.op == "get_attr"):
        raise NodeError(
            layer.node,
            f"quantize: bias-correction cannot correct layer {layer.fqn}: its bias is computed in the graph, "
            f'not a stored tensor; leave it out with skip=["{layer.fqn}"] or drop bias-correction',
        )
    groups = conv_geometry(layer.node)["groups"] if layer.kind == "conv2d" else 1
    dequantized = qformat.dequantize(qw.qweight, qw.scale, qw.zero_point, qw.bits)
    old = None if bias is None else ir.get_tensor(gm, bias.target)
    return corrected_bias(old, weight, dequantized, mean, groups)


def _emit(
    gm: torch.fx.GraphModule,
    layer: ir.WeightLayer,
    qw: qformat.QuantizedWeight,
    scheme: Scheme,
    method: str,
    input_scale: torch.Tensor | None,
    new_bias: torch.Tensor | None = None,
) -> torch.fx.Node:
    """Replace the layer node by its quantized op node reading new buffers (and `new_bias`, when given, as
    its bias instead of the old one)."""
    node, graph = layer.node, gm.graph
    prefix = layer.weight.removesuffix("weight") if layer.weight.endswith("weight") else layer.weight + "_"
    weight_shape = list(ir.get_tensor(gm, layer.weight).shape)

    def buffer(suffix: str, value: torch.Tensor | None) -> torch.fx.Node | None:
        return None if value is None else graph.get_attr(ir.add_tensor(gm, prefix + suffix, value.contiguous()))

    x = node.args[0]
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    with graph.inserting_before(node):
        qweight = buffer("qweight", qw.qweight)
        bias = bias if new_bias is None else buffer("bias", new_bias)
        if scheme.act_bits == 8:
            scale = buffer("weight_scale", qw.scale.reshape(-1))
            new = graph.call_function(
                fxc_ops.int8_linear.default, (x, qweight, scale, bias, buffer("input_scale", input_scale))
            )
        else:
            scale, zero = buffer("weight_scale", qw.scale), buffer("weight_zero", qw.zero_point)
            if layer.kind == "linear":
                new = graph.call_function(fxc_ops.quantized_linear.default, (x, qweight, scale, zero, bias, qw.bits))
            else:
                g = conv_geometry(node)
                args = (
                    x,
                    qweight,
                    scale,
                    zero,
                    bias,
                    qw.bits,
                    weight_shape,
                    g["stride"],
                    g["padding"],
                    g["dilation"],
                    g["groups"],
                )
                new = graph.call_function(fxc_ops.quantized_conv2d.default, args)
    new.meta.update(node.meta)
    meta.put(new, meta.Quantized(scheme.bits, scheme.group_size, scheme.symmetric, scheme.act_bits, method))
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    return new
