"""Shared helpers of the quantization tests: trace a tiny model, run a pipeline on it directly, and
snapshot a graph to check that a failing pass left it untouched."""

from __future__ import annotations

import torch

import fxc
from fxc import ir
from fxc.ir import meta, qformat
from fxc.passmgr.calibration import Calibration


def traced(model, example, calibration=None):
    """(graph, analysis manager) for running passes directly."""
    gm = fxc.trace(model, example)
    return gm, fxc.AnalysisManager(gm, Calibration.of(calibration))


def run(gm, am, pipeline: str):
    return fxc.Pipeline.parse(pipeline).run(gm, am)


def snapshot(gm):
    return gm.code, {k: v.detach().clone() for k, v in gm.state_dict().items()}, _metas(gm)


def assert_untouched(gm, snap) -> None:
    code, state, metas = snap
    assert gm.code == code
    now = gm.state_dict()
    assert now.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(now[key], value), f"{key} changed"
    assert _metas(gm) == metas


def _metas(gm):
    return {n.name: (meta.get(n, meta.LayerPlan), meta.get(n, meta.Quantized)) for n in gm.graph.nodes}


def quantized_nodes(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function" and str(n.target).startswith("fxc.")]


def dequantized_weight(gm, node) -> torch.Tensor:
    """The float weight a quantized op node stands for, read from its buffers."""
    tensor = lambda i: None if node.args[i] is None else ir.get_tensor(gm, node.args[i].target)
    if node.target == torch.ops.fxc.int8_linear.default:
        return tensor(1).float() * tensor(2).reshape(-1, 1)
    return qformat.dequantize(tensor(1), tensor(2), tensor(3), node.args[5])
