"""Gradual magnitude pruning (passes/training/gradual_prune.py): the cubic schedule of Zhu & Gupta, masks that
follow it step by step inside a plain training loop, and a result the passes lower like any other."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxc
from fxc import ir
from fxc.ir import meta, qformat
from fxc.passes.training import qat
from fxc.passes.training.gradual_prune import GradualPruner, cubic_sparsity, magnitude_mask, sparsity_of
from fxc.passes.training.qat import PlanError

pytestmark = pytest.mark.usefixtures("one_thread")


def model_and_data():
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    x = torch.randn(512, 32)
    y = (x[:, :4] - x[:, 4:8]).argmax(1)
    return model, x, y


def test_cubic_schedule_matches_zhu_and_gupta():
    assert cubic_sparsity(0, 0.8, begin=10, end=110) == 0.0
    assert cubic_sparsity(10, 0.8, begin=10, end=110) == 0.0
    assert cubic_sparsity(60, 0.8, begin=10, end=110) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cubic_sparsity(110, 0.8, begin=10, end=110) == 0.8
    assert cubic_sparsity(500, 0.8, begin=10, end=110, initial=0.2) == 0.8
    values = [cubic_sparsity(t, 0.9, 0, 100, 0.1) for t in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))  # never decreases
    gains = [b - a for a, b in zip(values, values[1:])]
    assert gains[0] > gains[50] > gains[-1]  # prunes fast early, slowly near the end


def test_pruner_reaches_target_sparsity_on_schedule_while_training():
    model, x, y = model_and_data()
    trainable = qat.prepare(model, qat.uniform_plan(model, bits=None, skip=()))
    pruner = GradualPruner(trainable, final_sparsity=0.75, begin_step=5, end_step=45, every=10)
    optimizer = torch.optim.Adam(trainable.parameters(), 1e-2)
    seen = []
    for step in range(1, 61):
        i = torch.randint(0, len(x), (64,))
        loss = F.cross_entropy(trainable(x[i]), y[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step()
        for fqn, fraction in sparsity_of(trainable).items():
            numel = trainable.get_submodule(fqn).parametrizations.weight.original.numel()
            expected = round(pruner.sparsity_at(step, 0.75) * numel) / numel
            assert fraction == pytest.approx(expected, abs=1e-7), (step, fqn)
        seen.append(sparsity_of(trainable)["0"])
    assert seen[13] == 0.0 and seen[14] > 0.0  # s_i at begin (step 5); first rise at step 15
    assert seen[43] < 0.75 and seen[44] == 0.75 and seen[-1] == 0.75  # target reached at end_step, then held
    assert len(set(seen[4:44])) == 4  # updates at 5, 15, 25, 35 (then 45): every 10 steps
    finished = qat.finish(trainable)
    for fqn in ("0", "2"):
        weight = finished.get_submodule(fqn).weight
        assert (weight == 0).float().mean().item() == pytest.approx(0.75, abs=1e-7)
    accuracy = (finished(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.6, f"the pruned model should still learn this easy task, got {accuracy:.3f}"


def test_pruned_weights_stay_pruned_and_a_plan_mask_is_a_floor():
    weight = torch.randn(8, 16)
    fixed = (torch.rand(8, 16) > 0.3).float()
    first = magnitude_mask(weight, fixed, 0.5)
    assert torch.all(first[fixed == 0] == 0) and (first == 0).sum() == 64
    grown = weight.clone()
    grown[first == 0] = 100.0  # pruned weights that grew back in the raw tensor stay pruned
    assert torch.all(magnitude_mask(grown, first, 0.6)[first == 0] == 0)
    assert torch.equal(magnitude_mask(weight, first, 0.1), first)  # a lower target never un-prunes


def test_plan_sparsity_targets_each_layer_and_quantization_composes():
    model, x, y = model_and_data()
    plan = {
        "0": qat.LayerTarget(bits=4, group_size=32, sparsity=0.5),
        "2": qat.LayerTarget(bits=8),  # quantized, left dense
    }
    trainable = qat.prepare(model, plan)
    pruner = GradualPruner(trainable, begin_step=0, end_step=4, every=2)
    optimizer = torch.optim.SGD(trainable.parameters(), 0.1)
    for _ in range(4):
        loss = F.cross_entropy(trainable(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step()
    assert sparsity_of(trainable) == {"0": 0.5, "2": 0.0}
    deployed = fxc.compile(
        qat.finish(trainable),
        passes="quantize{bits=4,group-size=32,layers=[0]},quantize{bits=8,layers=[2]}",
        example_inputs=(x[:2],),
    )
    node = next(n for n in deployed.graph.graph.nodes if n.target == torch.ops.fxc.quantized_linear.default)
    tensors = [None if a is None else ir.get_tensor(deployed.graph, a.target) for a in node.args[1:4]]
    dequantized = qformat.dequantize(*tensors, node.args[5])
    mask = trainable.get_submodule("0").parametrizations.weight[0].mask
    assert torch.all(dequantized[mask == 0] == 0)  # int4 lowering keeps the pruned zeros
    assert torch.allclose(deployed(x), trainable(x), atol=1e-5)


def test_bad_schedules_and_patterns_are_rejected():
    model, _, _ = model_and_data()
    dense = qat.prepare(model, qat.uniform_plan(model, bits=4, skip=()))
    with pytest.raises(PlanError, match="no layer has a sparsity target"):
        GradualPruner(dense)
    with pytest.raises(PlanError, match="begin_step < end_step"):
        GradualPruner(dense, final_sparsity=0.5, begin_step=10, end_step=10)
    with pytest.raises(PlanError, match=r"final_sparsity must be in \[0, 1\)"):
        GradualPruner(dense, final_sparsity=1.0)
    nm = qat.prepare(model, {"0": qat.LayerTarget(sparsity=0.5, pattern="2:4")})
    with pytest.raises(PlanError, match="schedules unstructured sparsity"):
        GradualPruner(nm)


def test_gradually_pruned_model_lowers_like_a_post_training_pruned_one():
    model, x, y = model_and_data()
    trainable = qat.prepare(model, qat.uniform_plan(model, bits=None, sparsity=0.6, skip=()))
    pruner = GradualPruner(trainable, begin_step=0, end_step=6, every=2)
    optimizer = torch.optim.Adam(trainable.parameters(), 1e-2)
    for _ in range(8):
        loss = F.cross_entropy(trainable(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step()
    passes = "prune{sparsity=0.6},quantize{bits=8}"
    finished = qat.finish(trainable)
    trained = fxc.compile(finished, passes=passes, example_inputs=(x[:2],))
    post_training = fxc.compile(model, passes=passes, example_inputs=(x[:2],))
    signature = lambda cm: [
        (str(n.target), meta.get(n, meta.Sparsity), meta.get(n, meta.Quantized)) for n in cm.graph.graph.nodes
    ]
    assert signature(trained) == signature(post_training)
    # the prune pass found nothing more to remove: its magnitude mask is exactly the trained one
    pruned_again = fxc.compile(finished, passes="prune{sparsity=0.6}", example_inputs=(x[:2],))
    for fqn in ("0", "2"):
        weight = ir.get_tensor(pruned_again.graph, f"{fqn}.weight")
        assert torch.equal(weight, finished.get_submodule(fqn).weight.detach())
