"""Calibration execution: run calibration batches through the graph, whole or segment by segment.

Layer-by-layer ("sequential") calibration keeps peak memory at one segment plus the values live
across its boundary, and lets each segment see the *compressed* output of the segments before it:

    runner = CalibrationRunner(gm, am.require_calibration("sparse-gpt"))
    for segment in segments_through(segments(gm), layers_to_compress):
        hessians = accumulate_hessians(runner, segment)   # run 1: current weights, inputs observed
        ... compress segment.layers (write new weights into gm) ...
        runner.advance(segment)                          # run 2: outputs kept for the next segment

`segments(gm)` cuts the graph before each group of weight layers that read the same input (q/k/v
together, gate/up together), in graph order; the last segment runs to the output. A pass runs
`segments_through(segments(gm), its layers)`: the segments after its last layer are never run. `forward_all`
streams every batch through the whole graph (for analyses that need no compression in between).
Weights are read from the module at execution time, so a rewrite of get_attr tensors between runs
is seen. Progress: the runner ticks the ticker bound to its calibration (am.require_calibration binds
the running pass's, fxc/passmgr/progress.py): `observe` names the segment's layers, `advance` finishes segment
i of `segment.count`, `forward_all` finishes one batch at a time; passes add no code for it.
Reads the graph and calibration; writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.fx
from torch.fx._pytree import tree_flatten_spec

from fxc import ir
from fxc.passmgr.calibration import Calibration
from fxc.passmgr.progress import SILENT, Ticker, group_label

LayerHook = Callable[[torch.fx.Node, torch.Tensor], None]


@dataclass
class Segment:
    index: int
    nodes: list[torch.fx.Node]
    layers: list[ir.WeightLayer] = field(default_factory=list)
    count: int = 0  # how many segments the graph was cut into (index runs 0 .. count - 1)

    @property
    def label(self) -> str:
        """Its layers' module paths as one label (empty for a segment without weight layers)."""
        return group_label([layer.fqn for layer in self.layers])


def segments(gm: torch.fx.GraphModule, kinds: tuple[str, ...] = ("linear", "conv2d")) -> list[Segment]:
    """Graph nodes (not placeholders, get_attr or output) cut before each group of weight layers
    sharing one input. Each segment's `layers` are that group."""
    layers = {layer.node: layer for layer in ir.weight_layers(gm, kinds)}
    out: list[Segment] = [Segment(0, [])]
    grouped_input: torch.fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        layer = layers.get(node)
        if layer is not None:
            source = node.args[0]
            if not (out[-1].layers and source is grouped_input):
                out.append(Segment(len(out), []))
                grouped_input = source
            out[-1].layers.append(layer)
        out[-1].nodes.append(node)
    kept = [s for s in out if s.nodes]
    for position, segment in enumerate(kept):
        segment.index, segment.count = position, len(kept)
    return kept


def segments_through(all_segments: list[Segment], wanted: set[torch.fx.Node]) -> list[Segment]:
    """The segments up to the last one holding a layer in `wanted` (their `count` set to match): nothing
    after it needs running for a pass that compresses `wanted` (e.g. an LM's lm_head, often the largest
    layer, would otherwise run on every calibration batch)."""
    last = max((s.index for s in all_segments if any(layer.node in wanted for layer in s.layers)), default=-1)
    through = all_segments[: last + 1]
    for segment in through:
        segment.count = len(through)
    return through


class CalibrationRunner:
    """Executes graph nodes on every calibration batch, keeping only values later nodes need."""

    def __init__(self, gm: torch.fx.GraphModule, calibration: Calibration):
        self.gm = gm
        self.calibration = calibration
        self.progress: Ticker = getattr(calibration, "progress", None) or SILENT
        self._announced: int | None = None  # the segment count this runner announced to self.progress
        self._envs: list[dict[torch.fx.Node, object]] | None = None
        nodes = list(gm.graph.nodes)
        self._position = {n: i for i, n in enumerate(nodes)}
        # the output node never runs here (forward_all reads it from its own env), so a value only the
        # output needs is dropped once computed: keeping e.g. a language model's logits for every
        # calibration batch would cost more memory than the whole model (rows x tokens x vocabulary floats)
        self._last_use = {
            n: max((self._position[u] for u in n.users if u.op != "output"), default=-1) for n in nodes
        }

    # -- whole-graph streaming -------------------------------------------------------------------------

    def forward_all(self, on_layer_input: LayerHook | None = None, keep_outputs: bool = True) -> list[object]:
        """Run each batch through the whole graph (one batch in memory at a time); returns the outputs, or []
        with keep_outputs=False (analyses that only watch layer inputs: an LM's logits over every calibration
        token can outweigh the model)."""
        outputs = []
        body = [n for n in self.gm.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
        self.progress.start(len(self.calibration), unit="batch")
        for index, batch in enumerate(self.calibration):
            env = self._bind(batch)
            self._execute(body, env, on_layer_input)
            output = next(n for n in self.gm.graph.nodes if n.op == "output")
            if keep_outputs:
                outputs.append(torch.fx.node.map_arg(output.args[0], env.__getitem__))
            self.progress.advance(layer=f"batch {index + 1}")
        return outputs

    # -- segment by segment ------------------------------------------------------------------------------

    def observe(self, segment: Segment, on_layer_input: LayerHook) -> None:
        """Show each weight layer's input on every batch to the hook, as the segment would see it with
        the current weights. A segment starts at its layer group, whose shared input was computed by an
        earlier segment, so the inputs are read from the kept values without running anything; a
        segment whose layers read a value made inside it is run (results discarded)."""
        self._tick_start(segment)
        self.progress.working_on(segment.label)
        start = self._position[segment.nodes[0]] if segment.nodes else 0
        inputs = [(layer.node, layer.node.args[0]) for layer in segment.layers]
        shown = [n for n in segment.nodes if n.target in ir.LAYER_OPS and n.target != ir.aten.embedding.default]
        ready = shown == [node for node, _ in inputs] and all(
            isinstance(x, torch.fx.Node) and self._position[x] < start for _, x in inputs
        )
        for env in self._environments():
            if ready:
                for node, x in inputs:
                    on_layer_input(node, self._value(x, env))
            else:
                self._execute(segment.nodes, dict(env), on_layer_input, drop_after=None)

    def advance(self, segment: Segment, on_layer_output: LayerHook | None = None) -> None:
        """Run the segment on every batch and keep what later segments need; `on_layer_output` sees each
        weight layer's output, batch after batch."""
        self._tick_start(segment)
        last = self._position[segment.nodes[-1]]
        for env in self._environments():
            self._execute(segment.nodes, env, None, drop_after=last, on_layer_output=on_layer_output)
        self.progress.advance(layer=segment.label)

    def values(self, nodes: list[torch.fx.Node]):
        """For each calibration batch, the kept values of `nodes` (made by the segments advanced so far)."""
        for env in self._environments():
            yield [self._value(node, env) for node in nodes]

    def _tick_start(self, segment: Segment) -> None:
        """Announce the segment count when the first segment arrives."""
        if self._announced != segment.count:
            self._announced = segment.count
            self.progress.start(segment.count or None, unit="segment")

    def _environments(self) -> list[dict[torch.fx.Node, object]]:
        if self._envs is None:
            self._envs = [self._bind(batch) for batch in self.calibration]
        return self._envs

    # -- execution -----------------------------------------------------------------------------------------

    def _bind(self, batch) -> dict[torch.fx.Node, object]:
        args, kwargs = batch
        spec = getattr(self.gm, "_in_spec", None)
        flat = (
            tree_flatten_spec((tuple(args), dict(kwargs)), spec)
            if spec is not None
            else [*args, *kwargs.values()]
        )
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        return dict(zip(placeholders, flat))

    def _execute(
        self,
        nodes,
        env,
        on_layer_input: LayerHook | None,
        drop_after: int | None = None,
        on_layer_output: LayerHook | None = None,
    ) -> None:
        with torch.no_grad():
            for node in nodes:
                args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: self._value(n, env))
                layer = node.target in ir.LAYER_OPS and node.target != ir.aten.embedding.default
                if on_layer_input is not None and layer:
                    on_layer_input(node, args[0])
                env[node] = node.target(*args, **kwargs)
                if on_layer_output is not None and layer:
                    on_layer_output(node, env[node])
        if drop_after is not None:
            for node in [n for n in env if self._last_use.get(n, -1) <= drop_after and n.op != "placeholder"]:
                del env[node]
            for node in [n for n in env if n.op == "placeholder" and self._last_use[n] <= drop_after]:
                del env[node]

    def _value(self, node: torch.fx.Node, env):
        if node.op == "get_attr":
            return ir.get_tensor(self.gm, node.target)
        return env[node]
