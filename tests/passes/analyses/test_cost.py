"""The cost analysis: current and planned params, bytes and FLOPs per layer."""

import pytest
import torch
from tiny_models import mlp

import fxc
from fxc import ir
from fxc.ir import meta
from fxc.passes.analyses.cost import Cost, plan_spec
from fxc.passmgr.analysis_manager import AnalysisManager


@pytest.fixture
def traced():
    model, (x,) = mlp()  # 16 -> 32 -> 32 -> 8, traced on a batch of 4
    return fxc.trace(model, (x,))


def test_current_cost_is_the_dense_layer(traced):
    table = AnalysisManager(traced).get(Cost())
    rows = list(table.rows.values())
    assert [r.current.params for r in rows] == [16 * 32 + 32, 32 * 32 + 32, 32 * 8 + 8]
    assert [r.current.bytes for r in rows] == [4 * p for p in (16 * 32 + 32, 32 * 32 + 32, 32 * 8 + 8)]
    assert rows[0].current.flops == 2 * 4 * 32 * 16
    assert all(r.planned == r.current and r.plan == "keep" for r in rows)


def test_planned_cost_follows_the_plan(traced):
    first, second, third = ir.weight_layers(traced)
    meta.put(first.node, meta.LayerPlan(bits=4, group_size=8, source="t"))
    meta.put(second.node, meta.LayerPlan(sparsity=0.5, pattern="2:4", bits=8, source="t"))
    meta.put(third.node, meta.LayerPlan(rank_ratio=0.5, source="t"))
    rows = list(AnalysisManager(traced).get(Cost()).rows.values())
    assert rows[0].planned.bytes == 32 * 16 // 2 + 32 * 2 * 4 + 32 * 4  # int4 + group scales + fp32 bias
    assert rows[0].planned.flops == rows[0].current.flops
    kept = 32 * 32 // 2
    assert rows[1].planned.bytes == kept + 32 * 4 + kept + 32 * 4  # int8 values, scales, uint8 indices, bias
    assert rows[1].planned.flops == rows[1].current.flops // 2
    r = int(0.5 * 32 * 8 / 40)
    assert rows[2].planned.params == r * 40 + 8 and rows[2].planned.bytes == r * 40 * 4 + 8 * 4
    assert rows[2].planned.flops == rows[2].current.flops * r * 40 // (32 * 8)
    assert "planned bytes" in str(AnalysisManager(traced).get(Cost()))


def test_planned_nm_matches_the_lowered_graph():
    model, (x,) = mlp()
    gm = fxc.trace(model, (x,))
    for layer in ir.weight_layers(gm):
        meta.put(layer.node, meta.LayerPlan(sparsity=0.5, pattern="2:4", source="t"))
    planned = AnalysisManager(gm).get(Cost()).total("planned")
    cm = fxc.compile(gm, "prune{pattern=2:4,skip=[]},lower-sparse", example_inputs=(x,))
    now = AnalysisManager(cm.graph).get(Cost()).total("current")
    assert (now.bytes, now.flops) == (planned.bytes, planned.flops)
    assert now.bytes < 0.7 * AnalysisManager(gm).get(Cost()).total("current").bytes


def test_plan_spec():
    assert plan_spec(meta.LayerPlan(bits=4, group_size=128, sparsity=0.5, pattern="2:4")) == "2:4+w4g128"
    assert plan_spec(meta.LayerPlan(bits=16)) == "dense"
    assert plan_spec(meta.LayerPlan(bits=8, act_bits=8, rank_ratio=0.5)) == "r0.5+w8a8"
    assert plan_spec(meta.LayerPlan(sparsity=0.3)) == "s0.3"
    assert torch.ops.fxc.sparse_nm_linear.default is not None
