"""Dense-target calibration for layer-by-layer compression (sparse-gpt, gptq): fit each layer to what the
*uncompressed* model computes there, not to its own output on the compressed model's inputs.

Layer by layer, sparse-gpt and gptq choose W for min ||W X_c - W0 X_c||², X_c the inputs the model
compressed so far gives the layer. With target=dense they fit min ||W X_c - W0 X_d||², X_d the inputs the
dense model gives it, so each layer also absorbs the error the layers before it left. With
H = 2 X_cᵀX_c / n and C = 2 X_dᵀX_c / n,

    ||W X_c - W0 X_d||² = tr((W - W̃) H (W - W̃)ᵀ) + const,   W̃ = W0 C H⁻¹ = W0 + W0 (C - H) H⁻¹,

so the methods run unchanged on the target weight W̃ (W̃ = W0 exactly where the inputs agree, e.g. the first
layer; H is dampened as the method dampens it). This is the asymmetric calibration of GPTAQ (Li et al., 2025).
C is a cross-covariance between two different inputs and needs more calibration tokens to settle than H:
with little calibration data the layer-wise fit (fit=layer) can be the better choice.

fit=residual (the default) goes one step further for a layer whose output is added to another value, the
residual stream (o_proj and down_proj: `h' = h + W x`): the dense model's sum is h_d + W0 X_d and the
compressed model's h_c + W X_c, so the layer fits W X_c to W0 X_d + (h_d - h_c) and also makes up, as far as
its inputs can, the drift the layers before left in the stream, which every later layer reads. In the
output form below this adds (h_d - h_c) to the dense output before pairing it with X_c: no extra work.
tests/passes/algorithms/test_dense_target.py checks on a toy residual stack that it lowers the model-output
error.

`DenseTwin` runs the dense model beside the compressed one: a copy of the graph with the original weights,
cut into the same segments and advanced in step, on the same calibration batches. What the fit needs of a
layer is W0 C; it is measured in the cheaper form (`Cross`): C = 2 X_dᵀX_c / n, a [K, K] product, or,
for layers whose outputs are fewer than their inputs (a down projection),
W0 C = 2 Y_dᵀX_c / n directly from the dense layer's output less its bias, Y_d = X_d W0ᵀ, which the twin
computes anyway ([N, K] instead of [K, K]: N/K of the work; the residual fit always takes this form).
Reads the graph and the calibration; writes nothing (the caller writes the compressed weights).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx

from fxc import ir
from fxc.passes.algorithms.gram import DampedHessian, GramAccumulator, damped_hessian
from fxc.passmgr.calibration import Calibration
from fxc.passmgr.progress import SILENT
from fxc.passmgr.sequential import CalibrationRunner, Segment, segments

TARGETS = ("layer", "dense", "residual")


@dataclass(frozen=True)
class Cross:
    """The dense-target statistic of one linear layer: C = 2 X_dᵀX_c / n ([K, K], outputs=False) or
    W0 C = 2 Y_dᵀX_c / n ([N, K], outputs=True), float64."""

    matrix: torch.Tensor
    outputs: bool = False

    def times_weight(self, w0: torch.Tensor) -> torch.Tensor:
        """W0 C (float64 [N, K]) for the layer's original weight W0 [N, K]."""
        return self.matrix if self.outputs else w0.to(torch.float64) @ self.matrix.to(torch.float64)


class DenseTwin:
    """The uncompressed model, segment by segment beside a CalibrationRunner of the compressed one.
    `residual`: layers feeding a residual add also fit the stream's drift (fit=residual, module docstring)."""

    def __init__(self, gm: torch.fx.GraphModule, calibration: Calibration, residual: bool = False):
        self.residual = residual
        self.gm = copy.deepcopy(gm)  # the original weights: the compressed graph's change as passes write
        self.runner = CalibrationRunner(self.gm, calibration)
        self.runner.progress = SILENT  # the compressed model's runner reports the segments
        self.segments = {segment.index: segment for segment in segments(self.gm)}
        self.nodes = {node.name: node for node in self.gm.graph.nodes}
        self._advanced: set[int] = set()  # segments already run (to measure output crosses)

    def cross_covariances(self, runner: CalibrationRunner, segment: Segment) -> dict[str, Cross]:
        """{linear node name: Cross} for the segment's linear layers, from the inputs the compressed (runner)
        and the dense model give them, and the dense layers' outputs, on every batch."""
        linears = [layer for layer in segment.layers if layer.kind == "linear"]
        if not linears:  # conv layers keep the layer-wise fit
            return {}
        inside = set(segment.nodes)  # a stream must be made before the segment (kept in both runners)
        streams = {layer.node: self._residual(layer.node) for layer in linears}
        streams = {node: stream for node, stream in streams.items() if stream is not None and stream not in inside}
        by_output = [layer.node for layer in linears if layer.node in streams or self._output_form(layer, linears)]
        by_input = [layer.node for layer in linears if layer.node not in by_output]
        crosses = self._output_crosses(runner, segment, by_output, streams) if by_output else {}
        if by_input:
            crosses |= self._input_crosses(runner, by_input)
        return crosses

    def advance(self, segment: Segment) -> None:
        """Run the dense model's copy of `segment` on every batch (call after the compressed one's)."""
        if segment.index not in self._advanced:
            self.runner.advance(self.segments[segment.index])
        self._advanced.add(segment.index)

    def _output_form(self, layer: ir.WeightLayer, linears: list[ir.WeightLayer]) -> bool:
        """Whether W0 C is cheaper from the dense outputs: the bias (if any) a weight, and the layers reading
        its input have fewer outputs in all than it has inputs."""
        node, bias = layer.node, _bias(layer.node)
        if bias is not None and bias.op != "get_attr":
            return False
        readers = [other for other in linears if other.node.args[0] is node.args[0]]
        outputs = sum(ir.get_tensor(self.gm, other.weight).shape[0] for other in readers)
        return outputs < ir.get_tensor(self.gm, layer.weight).shape[1]

    def _input_crosses(self, runner: CalibrationRunner, linears: list[torch.fx.Node]) -> dict[str, Cross]:
        sources = list(dict.fromkeys(node.args[0] for node in linears))
        twins = [self.nodes[source.name] for source in sources]
        grams = [GramAccumulator() for _ in sources]
        for compressed, dense in zip(runner.values(sources), self.runner.values(twins)):
            for gram, xc, xd in zip(grams, compressed, dense):
                gram.add(xd.reshape(-1, xd.shape[-1]), xc.reshape(-1, xc.shape[-1]))
        by_source = {source: 2.0 * gram.total() / max(gram.rows, 1) for source, gram in zip(sources, grams)}
        return {node.name: Cross(by_source[node.args[0]]) for node in linears}

    def _output_crosses(
        self,
        runner: CalibrationRunner,
        segment: Segment,
        linears: list[torch.fx.Node],
        streams: dict[torch.fx.Node, torch.fx.Node],
    ) -> dict[str, Cross]:
        """Run the dense segment now (it does not depend on the compression), pairing each layer's dense
        output with the compressed model's input to it, batch by batch."""
        sources = list(dict.fromkeys(node.args[0] for node in linears))
        compressed = list(runner.values(sources))  # per batch, the kept inputs (no copies)
        stream_nodes = list(dict.fromkeys(streams.values()))
        streams_compressed = _stream_values(runner, stream_nodes)
        streams_dense = _stream_values(self.runner, [self.nodes[n.name] for n in stream_nodes])
        by_twin = {self.nodes[node.name]: node for node in linears}
        grams = {node: GramAccumulator() for node in linears}
        batches = dict.fromkeys(linears, 0)

        def pair(twin_node: torch.fx.Node, output: torch.Tensor) -> None:
            node = by_twin.get(twin_node)
            if node is not None:
                batch = batches[node]
                xc = compressed[batch][sources.index(node.args[0])]
                target = self._without_bias(twin_node, output)
                if node in streams:  # the stream's drift h_d - h_c (a broadcast add is no stream: skipped)
                    at = stream_nodes.index(streams[node])
                    drift = streams_dense[batch][at] - streams_compressed[batch][at]
                    target = target + drift if drift.shape == target.shape else target
                grams[node].add(target.reshape(-1, target.shape[-1]), xc.reshape(-1, xc.shape[-1]))
                batches[node] += 1

        self.runner.advance(self.segments[segment.index], on_layer_output=pair)
        self._advanced.add(segment.index)
        return {node.name: Cross(2.0 * gram.total() / max(gram.rows, 1), outputs=True) for node, gram in grams.items()}

    def _residual(self, node: torch.fx.Node) -> torch.fx.Node | None:
        """With fit=residual, the stream `node`'s output is added to (the other operand of the add that is its
        only user, through an eval-mode dropout: Bert's `LayerNorm(dropout(dense(x)) + h)`); else None."""
        if not self.residual:
            return None
        value = node
        while len(value.users) == 1 and _is_identity(next(iter(value.users))):
            value = next(iter(value.users))
        users = list(value.users)
        if len(users) != 1 or users[0].target != ir.aten.add.Tensor or users[0].kwargs:
            return None
        left, right = users[0].args[:2]
        stream = right if left is value else left
        return stream if isinstance(stream, torch.fx.Node) and stream is not value else None

    def _without_bias(self, twin_node: torch.fx.Node, output: torch.Tensor) -> torch.Tensor:
        """The dense layer's output less its bias: what W0 X_d alone gives."""
        bias = _bias(twin_node)
        return output if bias is None else output - ir.get_tensor(self.gm, bias.target)


def _is_identity(node: torch.fx.Node) -> bool:
    """A node that passes its input through unchanged: dropout in eval mode (train=False), clone."""
    if node.target == ir.aten.dropout.default:
        return len(node.args) > 2 and node.args[2] is False
    return node.target == ir.aten.clone.default


def _bias(node: torch.fx.Node) -> torch.fx.Node | None:
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    return bias if isinstance(bias, torch.fx.Node) else None


def _stream_values(runner: CalibrationRunner, nodes: list[torch.fx.Node]) -> list[list[torch.Tensor]]:
    """Per batch, the kept values of the stream nodes (references, no copies; empty lists when there are none)."""
    return list(runner.values(nodes)) if nodes else [[] for _ in range(len(runner.calibration))]


def dense_target_weight(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    cross: Cross,
    damp: float,
    layer: str,
    damped: DampedHessian | None = None,
) -> torch.Tensor:
    """W̃ = W0 + (W0 C - W0 H) (H + damp)⁻¹ for a linear weight [N, K]: the weight whose layer-wise fit on the
    compressed inputs is the dense model's output. Same shape and dtype as `weight`. `damped`: `hessian`
    already dampened and factored, when the caller has it."""
    damped = damped or damped_hessian(hessian, damp, layer)
    w0 = weight.detach().to(torch.float64)
    difference = cross.times_weight(w0) - w0 @ hessian.to(torch.float64)  # W0 (C - H)
    correction = damped.solve(difference.T).T  # W0 (C - H) H⁻¹ (H symmetric)
    return (w0 + correction).to(weight.dtype)
