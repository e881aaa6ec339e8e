"""Compression-aware training (passes/training/qat.py): the fake quantizer is qformat's RTN, training recovers
what post-training int4 loses, and the trained model lowers through the quantize pass to the very
integers the training forward simulated, with the same ops as a post-training plan."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxc
from fxc import ir
from fxc.ir import meta, qformat
from fxc.passes.training import qat
from fxc.passes.training.qat import PlanError

pytestmark = pytest.mark.usefixtures("one_thread")


QUANT_OPS = (torch.ops.fxc.quantized_linear.default, torch.ops.fxc.quantized_conv2d.default)


def teacher(seed: int = 0) -> nn.Sequential:
    """A random MLP whose rows each hold one 10x outlier: per-channel int4 rounds most weights to 0."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            w = torch.randn(layer.weight.shape, generator=g) / layer.weight.shape[1] ** 0.5
            w[torch.arange(w.shape[0]), torch.randint(0, w.shape[1], (w.shape[0],), generator=g)] *= 10
            layer.weight.copy_(w)
            layer.bias.zero_()
    return model


def labelled(model: nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(1)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 1e-3) -> None:
    """The plain loop the README shows."""
    optimizer = torch.optim.Adam(model.parameters(), lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        i = torch.randint(0, len(x), (128,), generator=g)
        loss = F.cross_entropy(model(x[i]), y[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def accuracy(fn, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (fn(x).argmax(1) == y).float().mean().item()


def stored(cm) -> dict[str, qformat.QuantizedWeight]:
    """{module path: the quantized weight a compiled model stores}."""
    out = {}
    for node in cm.graph.graph.nodes:
        if node.op == "call_function" and node.target in QUANT_OPS:
            get = lambda a: None if a is None else ir.get_tensor(cm.graph, a.target)
            out[meta.get(node, meta.LayerInfo).fqn] = qformat.QuantizedWeight(
                get(node.args[1]), get(node.args[2]), get(node.args[3]), node.args[5]
            )
    return out


def op_signature(cm) -> list[tuple]:
    return [
        (str(n.target), meta.get(n, meta.Quantized))
        for n in cm.graph.graph.nodes
        if n.op == "call_function"
    ]


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [None, 16])
def test_forward_is_the_dequantized_rtn_weight_and_gradient_goes_straight_through(symmetric, group_size):
    model = nn.Sequential(nn.Linear(32, 8))
    plan = {"0": qat.LayerTarget(bits=4, group_size=group_size, symmetric=symmetric)}
    trainable = qat.prepare(model, plan)
    expected = qformat.dequantize(*qformat.quantize_rtn(model[0].weight, 4, group_size, symmetric))
    assert torch.equal(trainable[0].weight, expected)
    trainable[0].weight.sum().backward()
    grad = trainable[0].parametrizations.weight.original.grad
    assert grad is not None and grad.abs().sum() > 0
    assert not any(hasattr(m, "parametrizations") for m in model.modules())  # the user's model is untouched


def test_learned_clip_ratios_get_gradients_and_stay_within_rtn_range():
    model = nn.Sequential(nn.Linear(32, 8))
    trainable = qat.prepare(model, {"0": qat.LayerTarget(bits=4, group_size=16, symmetric=False)}, scales="learned")
    fc = trainable[0].parametrizations.weight[0]
    (trainable(torch.randn(4, 32)) ** 2).sum().backward()
    assert fc.clip_high.grad.abs().sum() > 0 and fc.clip_low.grad.abs().sum() > 0
    clipped = fc.deployable(trainable[0].parametrizations.weight.original)
    assert (clipped.amax(1) <= model[0].weight.amax(1)).all() and (clipped.amin(1) >= model[0].weight.amin(1)).all()


def test_qat_recovers_accuracy_lost_by_post_training_int4():
    model = teacher()
    x, y = labelled(model, 3072, seed=1)
    x_test, y_test = labelled(model, 1024, seed=2)
    example = (x_test[:2],)
    post_training = fxc.compile(model, passes="quantize{bits=4}", example_inputs=example)
    trainable = qat.prepare(model, qat.uniform_plan(model, bits=4, skip=()))
    train(trainable, x, y, steps=400)
    deployed = fxc.compile(qat.finish(trainable), passes="quantize{bits=4}", example_inputs=example)
    dense, ptq, qat_acc = (accuracy(f, x_test, y_test) for f in (model, post_training, deployed))
    assert dense == 1.0  # labels come from the dense model
    assert ptq < 0.85, f"int4 should hurt this model (outlier rows), got {ptq:.3f}"
    assert qat_acc > ptq + 0.05, f"QAT {qat_acc:.3f} did not recover from post-training int4 {ptq:.3f}"
    assert accuracy(trainable, x_test, y_test) == qat_acc  # training forward == deployed model


@pytest.mark.parametrize("scales", ["rtn", "learned"])
def test_quantize_pass_stores_the_integers_the_fake_quantizer_saw(scales):
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(256, 64)
    y = torch.randint(0, 8, (256,))
    plan = {
        "0": qat.LayerTarget(bits=4, group_size=32, symmetric=False),
        "2": qat.LayerTarget(bits=8, mask=(torch.rand(8, 32) > 0.5).float(), sparsity=0.5),
    }
    trainable = qat.prepare(model, plan, scales=scales)
    train(trainable, x, y, steps=30, lr=1e-2)
    simulated = qat.simulated_weights(trainable)
    passes = "quantize{bits=4,group-size=32,symmetric=false,layers=[0]},quantize{bits=8,layers=[2]}"
    deployed = fxc.compile(qat.finish(trainable), passes=passes, example_inputs=(x[:2],))
    on_graph = stored(deployed)
    assert set(on_graph) == set(simulated) == {"0", "2"}
    for fqn, qw in simulated.items():
        got = on_graph[fqn]
        assert torch.equal(got.qweight, qw.qweight), fqn
        assert torch.equal(got.scale, qw.scale), fqn
        assert (got.zero_point is None) == (qw.zero_point is None)
        if qw.zero_point is not None:
            assert torch.equal(got.zero_point, qw.zero_point)
    weight2 = qformat.dequantize(*on_graph["2"])
    assert torch.all(weight2[plan["2"].mask == 0] == 0)  # the mask survived training and lowering
    assert torch.allclose(deployed(x[:16]), trainable(x[:16]), atol=1e-5)


def test_trained_plan_lowers_to_the_same_ops_as_a_post_training_plan():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(128, 64)
    passes = "quantize{bits=4,group-size=32}"
    recorder = qat.PlanRecorder()
    post_training = fxc.compile(model, passes=passes, example_inputs=(x[:2],), instruments=[recorder])
    assert {f: t.describe() for f, t in recorder.plan.items()} == {"0": "w4g32", "2": "w4g32"}
    trainable = qat.prepare(model, recorder.plan, scales="learned")
    train(trainable, x, torch.randint(0, 8, (128,)), steps=10)
    trained = fxc.compile(qat.finish(trainable), passes=passes, example_inputs=(x[:2],))
    assert op_signature(trained) == op_signature(post_training)
    assert fxc.ir.cost.model_bytes(trained.graph) == fxc.ir.cost.model_bytes(post_training.graph)


def test_plan_from_graph_reads_bits_and_pruning_masks():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    gm = fxc.trace(model, (torch.randn(2, 64),))
    layers = ir.weight_layers(gm)
    meta.put(layers[0].node, meta.LayerPlan(bits=4, group_size=32, source="test"))
    meta.put(layers[1].node, meta.LayerPlan(bits=16, source="test"))
    weight = ir.get_tensor(gm, layers[1].weight).clone()
    weight[:, ::2] = 0
    ir.set_tensor(gm, layers[1].weight, weight)
    meta.put(layers[1].node, meta.Sparsity("unstructured", 0.5, "test"))
    plan = qat.plan_from_graph(gm)
    assert plan["0"].describe() == "w4g32"
    assert plan["2"].bits is None and torch.equal(plan["2"].mask, (weight != 0).float())


def test_bad_plans_are_rejected_with_the_fix():
    model = nn.Sequential(nn.Linear(48, 8))
    with pytest.raises(PlanError, match="no module there"):
        qat.prepare(model, {"fc": qat.LayerTarget(bits=4)})
    with pytest.raises(PlanError, match="group size 32 does not divide the 48"):
        qat.prepare(model, {"0": qat.LayerTarget(bits=4, group_size=32)})
    with pytest.raises(PlanError, match="scales must be one of"):
        qat.prepare(model, {"0": qat.LayerTarget(bits=4)}, scales="lsq")
    with pytest.raises(PlanError, match="make it with fxc.passes.training.qat.prepare"):
        qat.finish(model)
    with pytest.raises(PlanError, match="already parametrized"):
        qat.prepare(qat.prepare(model, {"0": qat.LayerTarget(bits=4)}), {"0": qat.LayerTarget(bits=4)})


def test_pruning_masks_from_the_pipeline_train_fixed_and_lower_to_the_same_sparse_ops():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(128, 64)
    passes = "prune{pattern=2:4,lower=true,layers=[0]},quantize{bits=8,layers=[2]}"
    recorder = qat.PlanRecorder()
    post_training = fxc.compile(model, passes=passes, example_inputs=(x[:2],), instruments=[recorder])
    assert recorder.plan["0"].pattern == "2:4" and recorder.plan["0"].mask.mean().item() == 0.5
    assert recorder.plan["2"].describe() == "w8"
    trainable = qat.prepare(model, recorder.plan)
    train(trainable, x, torch.randint(0, 8, (128,)), steps=20, lr=1e-2)
    trained = fxc.compile(qat.finish(trainable), passes=passes, example_inputs=(x[:2],))
    assert op_signature(trained) == op_signature(post_training)
    sparse = [n for n in trained.graph.graph.nodes if n.target == torch.ops.fxc.sparse_nm_linear.default]
    assert len(sparse) == 1
    values, indices = (ir.get_tensor(trained.graph, a.target) for a in sparse[0].args[1:3])
    from fxc.ir.ops import densify_nm

    kept = densify_nm(torch.ones_like(values), indices, 2, 4)
    assert torch.equal(kept, recorder.plan["0"].mask)  # the mask the training kept is the one deployed
    assert torch.allclose(trained(x[:16]), trainable(x[:16]), atol=1e-5)


def test_w8a8_plan_simulates_int8_inputs_per_token():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(64, 64) * torch.linspace(0.1, 10, 64)  # rows with very different ranges
    passes = "quantize{act-bits=8}"
    recorder = qat.PlanRecorder()
    fxc.compile(model, passes=passes, example_inputs=(x[:2],), instruments=[recorder])
    assert {t.describe() for t in recorder.plan.values()} == {"w8a8"}
    trainable = qat.prepare(model, recorder.plan)
    train(trainable, x, torch.randint(0, 8, (64,)), steps=5)
    deployed = fxc.compile(qat.finish(trainable), passes=passes, example_inputs=(x[:2],))
    weight_only = qat.prepare(model, {f: qat.LayerTarget(bits=8) for f in recorder.plan})
    weight_only.load_state_dict(trainable.state_dict())
    simulated, without_inputs = trainable(x), weight_only(x)
    assert torch.allclose(deployed(x), simulated, atol=1e-4)
    assert (deployed(x) - without_inputs).abs().max() > 10 * (deployed(x) - simulated).abs().max()
    static = "quantize{act-bits=8,static=true}"
    with pytest.raises(PlanError, match="static input scale"):
        recorder = qat.PlanRecorder()
        fxc.compile(model, passes=static, example_inputs=(x[:2],), calibration=[x[:8]], instruments=[recorder])


def test_planned_rank_trains_two_factors_and_finishes_to_a_weight_of_that_rank():
    from fxc.passes.algorithms.low_rank_math import svd_decomposition

    model = nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 8))
    gm = fxc.trace(model, (torch.randn(2, 48),))
    meta.put(ir.weight_layers(gm)[0].node, meta.LayerPlan(rank_ratio=0.5, source="test"))
    plan = qat.plan_from_graph(gm)
    assert plan["0"].rank == 9  # floor(0.5 * 32 * 48 / (32 + 48)): the low-rank pass's rule
    trainable = qat.prepare(model, plan)
    chain = trainable[0].parametrizations.weight
    assert chain.original0.shape == (32, 9) and chain.original1.shape == (9, 48)
    assert torch.allclose(trainable[0].weight, svd_decomposition(model[0].weight.detach()).approximation(9), atol=1e-5)
    x = torch.randn(128, 48)
    train(trainable, x, torch.randint(0, 8, (128,)), steps=20, lr=1e-2)
    weight = qat.finish(trainable)[0].weight.detach()
    assert not torch.allclose(weight, model[0].weight, atol=1e-3)  # it trained
    assert torch.linalg.matrix_rank(weight).item() == 9
    assert torch.allclose(svd_decomposition(weight).approximation(9), weight, atol=1e-5)  # a rank-9 split is exact
    with pytest.raises(PlanError, match="simulates low rank alone"):
        qat.prepare(model, {"0": qat.LayerTarget(bits=4, rank=9)})


def test_conv_layers_train_and_lower_to_the_same_integers():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))
    x = torch.randn(32, 4, 6, 6)
    trainable = qat.prepare(model, qat.uniform_plan(model, bits=4, group_size=None, skip=()), scales="learned")
    train(trainable, x, torch.randint(0, 4, (32,)), steps=10, lr=1e-2)
    deployed = fxc.compile(qat.finish(trainable), passes="quantize{bits=4}", example_inputs=(x[:2],))
    on_graph, simulated = stored(deployed), qat.simulated_weights(trainable)
    assert set(on_graph) == set(simulated) == {"0", "3"}
    assert all(torch.equal(on_graph[f].qweight, simulated[f].qweight) for f in simulated)
    assert torch.allclose(deployed(x), trainable(x), atol=1e-4)
