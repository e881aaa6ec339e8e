"""Dense-target calibration (passes/algorithms/dense_target.py): the target weight is the least-squares fit of the dense
model's output from the compressed model's inputs, equals the original weight where the inputs agree, and
sparse-gpt with fit=dense leaves a smaller model-output error than fit=layer; fit=residual (the default with
enough calibration tokens per input) also fits the residual stream's drift and leaves less error than fit=dense
on a residual network."""

from __future__ import annotations

import copy

import pytest
import torch
from quant_helpers import run, traced
from tiny_models import MLP

from fxc.errors import OptionError
from fxc.passes.algorithms.dense_target import Cross, dense_target_weight
from fxc.passes.rewrites.prune import Prune


def test_target_weight_is_the_least_squares_fit_of_the_dense_output():
    tokens, k, n = 400, 12, 5
    x_dense = torch.randn(tokens, k, dtype=torch.float64)
    x_compressed = x_dense + 0.3 * torch.randn(tokens, k, dtype=torch.float64)  # earlier layers' error
    weight = torch.randn(n, k, dtype=torch.float64)
    hessian = 2 * x_compressed.T @ x_compressed / tokens
    cross = 2 * x_dense.T @ x_compressed / tokens
    got = dense_target_weight(weight, hessian, Cross(cross), damp=0.0, layer="l")
    want = torch.linalg.lstsq(x_compressed, x_dense @ weight.T).solution.T  # min ||W X_c - W0 X_d||
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    outputs = 2 * (x_dense @ weight.T).T @ x_compressed / tokens  # W0 C from the dense layer's output
    got = dense_target_weight(weight, hessian, Cross(outputs, outputs=True), damp=0.0, layer="l")
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    same = dense_target_weight(weight, hessian, Cross(hessian), damp=0.01, layer="l")  # inputs agree: W0 itself
    torch.testing.assert_close(same, weight, rtol=0, atol=1e-12)


def _deep_mlp():
    model = MLP(sizes=(32, 64, 64, 64, 64, 16)).eval()
    mix = torch.randn(32, 32)
    batches = [torch.randn(64, 32) @ mix for _ in range(6)]
    return model, batches


def _output_error(gm, dense, batches) -> float:
    with torch.no_grad():
        got = torch.cat([gm(x) for x in batches])
        want = torch.cat([dense(x) for x in batches])
    return ((got - want).norm() / want.norm()).item()


@pytest.mark.parametrize(
    "pipeline,ratio",  # measured error, fit=dense vs fit=layer: 0.163 vs 0.233 (sparse-gpt), 0.026 vs 0.039 (gptq)
    [("prune{method=sparse-gpt,sparsity=0.6,fit=%s}", 0.9), ("quantize{method=gptq,bits=4,fit=%s}", 0.95)],
)
def test_fit_dense_leaves_less_model_output_error_than_fit_layer(pipeline, ratio):
    model, batches = _deep_mlp()
    errors, graphs = _errors_by_fit(model, batches, pipeline, ("layer", "dense"))
    if pipeline.startswith("prune"):
        for gm in graphs:
            weights = [t for t in gm.state_dict().values() if t.dim() == 2]
            assert len(weights) == 5 and all(abs((w == 0).float().mean().item() - 0.6) < 0.01 for w in weights)
    assert errors["dense"] < ratio * errors["layer"]


def _errors_by_fit(model, batches, pipeline: str, fits: tuple[str, ...]):
    """({fit: model-output error vs the dense model}, the compressed graphs) of `pipeline` % fit for each fit."""
    errors, graphs = {}, []
    for fit in fits:
        gm, am = traced(copy.deepcopy(model), (batches[0],), batches)
        run(gm, am, pipeline % fit)
        errors[fit] = _output_error(gm, model, batches)
        graphs.append(gm)
    return errors, graphs


def test_fit_is_for_sparse_gpt_only():
    with pytest.raises(OptionError, match="option 'fit'.*method=wanda"):
        Prune(method="wanda", fit="dense")


def test_fit_is_for_gptq_only():
    from fxc.passes.rewrites.quantize import Quantize

    with pytest.raises(OptionError, match="option 'fit'.*method=rtn"):
        Quantize(bits=4, fit="dense")


def test_gptq_defaults_to_fit_residual_and_convolutions_keep_the_layer_fit(monkeypatch):
    """With enough calibration tokens per input (test_calibration_size_defaults.py: with few, fit=layer)."""
    from tiny_models import cnn

    from fxc.passes.algorithms import layer_inputs
    from fxc.passes.rewrites.quantize import Quantize

    assert Quantize(method="gptq").fit is None  # None: chosen per layer from its calibration (quantize.run)
    twins = []
    twin = layer_inputs.DenseTwin
    monkeypatch.setattr(layer_inputs, "DenseTwin", lambda *a, **k: twins.append(1) or twin(*a, **k))
    model, example = cnn()
    gm, am = traced(model, example, [torch.randn(4, *example[0].shape[1:]) for _ in range(3)])
    run(gm, am, "quantize{method=gptq,skip=[],layers=[conv*],fit=residual}")  # convolutions only: no dense model
    assert twins == []
    run(gm, am, "quantize{method=gptq,skip=[],fit=residual}")  # conv segments of a mixed graph have no cross
    assert twins == [1]
    model_dense, batches = _residual_stack(rows=256)
    outputs = {}
    for spec in ("", ",fit=residual", ",fit=dense"):
        gm, am = traced(copy.deepcopy(model_dense), (batches[0],), batches)
        run(gm, am, f"quantize{{method=gptq,bits=4{spec}}}")
        outputs[spec] = gm(batches[0])
    assert torch.equal(outputs[""], outputs[",fit=residual"])  # the default is fit=residual
    assert not torch.equal(outputs[""], outputs[",fit=dense"])


def test_sparse_gpt_defaults_to_fit_residual():
    """With enough calibration tokens per input (test_calibration_size_defaults.py: with few, fit=layer)."""
    model, batches = _residual_stack(rows=256)
    outputs = {}
    for spec in ("", ",fit=residual", ",fit=dense"):
        gm, am = traced(copy.deepcopy(model), (batches[0],), batches)
        run(gm, am, f"prune{{method=sparse-gpt,sparsity=0.6{spec}}}")
        outputs[spec] = gm(batches[0])
    assert torch.equal(outputs[""], outputs[",fit=residual"])  # the default is fit=residual
    assert not torch.equal(outputs[""], outputs[",fit=dense"])


class _ResidualStack(torch.nn.Module):
    """x + fc2(gelu(fc1(x))), `blocks` times, then a head: the layers fc2 add into a residual stream."""

    def __init__(self, dim=24, hidden=96, blocks=4):
        super().__init__()
        self.fc1 = torch.nn.ModuleList(torch.nn.Linear(dim, hidden) for _ in range(blocks))
        self.fc2 = torch.nn.ModuleList(torch.nn.Linear(hidden, dim) for _ in range(blocks))
        self.head = torch.nn.Linear(dim, 8)

    def forward(self, x):
        for fc1, fc2 in zip(self.fc1, self.fc2):
            x = x + fc2(torch.nn.functional.gelu(fc1(x)))
        return self.head(x)


def _residual_stack(rows: int = 64):
    torch.manual_seed(0)
    model = _ResidualStack().eval()
    mix = torch.randn(24, 24)
    return model, [torch.randn(rows, 24) @ mix for _ in range(12)]


@pytest.mark.parametrize(
    "pipeline,ratio",  # measured error, fit=residual vs fit=dense: 0.082 vs 0.097 (sparse-gpt), 0.016 vs 0.019 (gptq)
    [
        ("prune{method=sparse-gpt,sparsity=0.5,layers=[fc*],fit=%s}", 0.92),
        ("quantize{method=gptq,bits=4,layers=[fc*],fit=%s}", 0.9),
    ],
)
def test_fit_residual_leaves_less_model_output_error_than_fit_dense(pipeline, ratio):
    """The blocks' layers compressed, the head kept dense: the stream reaching it is closer to the dense one."""
    model, batches = _residual_stack()
    errors, _ = _errors_by_fit(model, batches, pipeline, ("dense", "residual"))
    assert errors["residual"] < ratio * errors["dense"]


def test_residual_cross_pairs_the_stream_drift_with_the_compressed_inputs():
    """For a layer adding into a stream h, the cross is 2 (Y_d - b + h_d - h_c)ᵀ X_c / n, in float64."""
    from fxc import ir
    from fxc.passes.algorithms.dense_target import DenseTwin
    from fxc.passmgr.calibration import Calibration
    from fxc.passmgr.sequential import CalibrationRunner, segments

    model, batches = _residual_stack()
    gm, _ = traced(copy.deepcopy(model), (batches[0],), batches)
    calibration = Calibration.of([(b,) for b in batches])
    runner, twin = CalibrationRunner(gm, calibration), DenseTwin(gm, calibration, residual=True)
    checked = 0
    for segment in segments(gm):
        (layer,) = segment.layers
        stream = twin._residual(layer.node)
        if stream is not None:
            source = layer.node.args[0]
            compressed = [[v.double() for v in vs] for vs in runner.values([source, stream])]
            twin_nodes = [twin.nodes[n.name] for n in (source, stream)]
            dense = [[v.double() for v in vs] for vs in twin.runner.values(twin_nodes)]
            w0 = ir.get_tensor(gm, layer.weight).double()
            targets = [xd @ w0.T + hd - hc for (xc, hc), (xd, hd) in zip(compressed, dense)]
            want = 2 * sum(t.T @ xc for t, (xc, _) in zip(targets, compressed)) / (64 * len(batches))
            cross = twin.cross_covariances(runner, segment)[layer.node.name]
            assert cross.outputs
            torch.testing.assert_close(cross.times_weight(w0), want, rtol=1e-5, atol=1e-5)
            checked += 1
        else:
            twin.cross_covariances(runner, segment)  # fc1 / head: the dense inputs, no stream
        ir.set_tensor(gm, layer.weight, ir.get_tensor(gm, layer.weight) * 0.9)  # compress: the streams drift apart
        runner.advance(segment)
        twin.advance(segment)
    assert checked == 4


def test_twin_measures_narrowing_layers_from_their_dense_outputs():
    """A layer with fewer outputs than inputs gets W0 C from the dense outputs less the bias (the cheaper
    product), the others C; either form equals W0 C computed from the inputs in float64."""
    from fxc import ir
    from fxc.passes.algorithms.dense_target import DenseTwin
    from fxc.passmgr.calibration import Calibration
    from fxc.passmgr.sequential import CalibrationRunner, segments

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 48, bias=False), torch.nn.ReLU(), torch.nn.Linear(48, 16, bias=False),
        torch.nn.ReLU(), torch.nn.Linear(16, 8),
    ).eval()
    batches = [(torch.randn(20, 16),) for _ in range(3)]
    gm, _ = traced(copy.deepcopy(model), batches[0], [b[0] for b in batches])
    calibration = Calibration.of(batches)
    runner, twin = CalibrationRunner(gm, calibration), DenseTwin(gm, calibration)
    forms = {}
    for segment in segments(gm):
        (layer,) = segment.layers
        compressed = [v[0].double() for v in runner.values([layer.node.args[0]])]
        dense = [v[0].double() for v in twin.runner.values([twin.nodes[layer.node.args[0].name]])]
        w0 = ir.get_tensor(gm, layer.weight).double()
        want = w0 @ (2 * sum(d.T @ c for d, c in zip(dense, compressed)) / 60)
        cross = twin.cross_covariances(runner, segment)[layer.node.name]
        forms[layer.fqn] = cross.outputs
        torch.testing.assert_close(cross.times_weight(w0), want, rtol=1e-5, atol=1e-5)
        ir.set_tensor(gm, layer.weight, ir.get_tensor(gm, layer.weight) * 0.9)  # compress: inputs differ downstream
        runner.advance(segment)
        twin.advance(segment)
    assert forms == {"0": False, "2": True, "4": True}  # 16 -> 48: C; 48 -> 16 and 16 -> 8 (bias): outputs


@pytest.mark.parametrize(
    "factory,writers",
    [
        ("tiny_llama", {"self_attn.o_proj", "mlp.down_proj"}),
        ("tiny_bert", {"attention.output.dense", "output.dense"}),  # through the eval-mode dropout before the add
    ],
)
def test_the_layers_adding_into_the_residual_stream_are_found(factory, writers):
    import tiny_models

    from fxc import ir
    from fxc.passes.algorithms.dense_target import DenseTwin
    from fxc.passmgr.calibration import Calibration

    model, example = getattr(tiny_models, factory)()
    gm = traced(model, example)[0]
    twin = DenseTwin(gm, Calibration.of([example]), residual=True)
    found = {layer.fqn.split(".", 3)[-1] for layer in ir.weight_layers(gm, ("linear",)) if twin._residual(layer.node)}
    assert found == writers
    assert DenseTwin(gm, Calibration.of([example])).residual is False  # fit=dense: no stream
