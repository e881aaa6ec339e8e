"""fxc.compile end to end: outputs, report, graph, backends, calibration checks."""

import pytest
import torch
from tiny_models import call, cnn, first_tensor, mlp, tiny_llama

import fxc
from fxc import ir


def test_compile_runs_like_the_model_and_reports():
    model, example = cnn()
    cm = fxc.compile(model, passes="dce,fold-bn", example_inputs=example)
    torch.testing.assert_close(cm(*example), model(*example), rtol=1e-5, atol=1e-5)
    assert isinstance(cm.graph, torch.fx.GraphModule)
    report = cm.report(show=False)
    assert [r.layer for r in report.rows] == ["conv1", "conv2", "fc"]
    assert report.rows[0].weight_shape == (8, 3, 3, 3)
    assert report.rows[0].params == 8 * 27 + 8  # fold-bn gave conv1 a bias
    assert report.rows[2].bytes == (4 * 8 + 4) * 4
    assert report.model_bytes == sum(t.numel() * 4 for t in list(cm.graph.parameters()) + list(cm.graph.buffers()))
    assert "total" in str(report) and "pipeline: dce,fold-bn" in str(report)
    assert cm.backend == "torch"


def test_compile_accepts_pass_objects_and_no_passes():
    model, example = mlp()
    cm = fxc.compile(model, passes=[fxc.passes.FoldBN(), fxc.passes.DeadCodeElimination()], example_inputs=example)
    assert str(cm.pipeline) == "fold-bn,dce"
    torch.testing.assert_close(cm(*example), model(*example))
    torch.testing.assert_close(fxc.compile(model, example_inputs=example)(*example), model(*example))


def test_fold_bn_removes_norms_and_keeps_outputs():
    model, example = cnn()
    cm = fxc.compile(model, passes="fold-bn", example_inputs=example)
    targets = {str(n.target) for n in cm.graph.graph.nodes}
    assert not any("batch_norm" in t for t in targets)
    assert not any("bn" in name for name, _ in cm.graph.named_buffers())  # norm tensors freed
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(cm(x), model(x), rtol=1e-5, atol=1e-5)


def test_dce_removes_unused_computation():
    class Wasteful(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x):
            self.unused(x)
            return self.used(x)

    model, x = Wasteful(), torch.randn(2, 4)
    cm = fxc.compile(model, passes="dce", example_inputs=(x,))
    assert [layer.fqn for layer in ir.weight_layers(cm.graph)] == ["used"]
    assert "unused.weight" not in dict(cm.graph.named_parameters())


def test_hugging_face_model_compiles_and_runs_other_shapes():
    model, example = tiny_llama()
    cm = fxc.compile(model, passes="dce", example_inputs=example)
    other = torch.randint(0, 64, (1, 9))
    torch.testing.assert_close(first_tensor(cm(other)), first_tensor(model(other)))
    assert any(r.op == "aten.embedding" for r in cm.report(show=False).rows)


def test_calibration_shapes_that_do_not_fit_are_named():
    model, example = mlp()
    with pytest.raises(
        fxc.CalibrationError,
        match=r"calibration batch 1: input 0 has shape \(4, 7\) but the traced model takes \(\*, 16\) \(dim 1",
    ):
        fxc.compile(model, passes="dce", example_inputs=example, calibration=[torch.randn(4, 16), torch.randn(4, 7)])
    with pytest.raises(fxc.CalibrationError, match="calibration batch 0: input 0 contains NaN or Inf"):
        fxc.compile(model, example_inputs=example, calibration=[torch.full((4, 16), float("nan"))])
    with pytest.raises(fxc.CalibrationError, match="has 2 tensor inputs but the traced model takes 1"):
        fxc.compile(model, example_inputs=example, calibration=[(torch.randn(4, 16), torch.randn(4, 16))])
    with pytest.raises(fxc.CalibrationError, match="wrap it in a list"):
        fxc.compile(model, example_inputs=example, calibration=torch.randn(4, 16))


def test_calibration_of_other_batch_size_fits_dynamic_dims():
    model, example = mlp()
    cm = fxc.compile(model, passes="act-stats", example_inputs=example, calibration=[torch.randn(6, 16)])
    torch.testing.assert_close(cm(*example), model(*example))


def test_a_pass_needing_calibration_without_it_says_how_to_give_it():
    model, example = mlp()
    with pytest.raises(fxc.CalibrationError, match="hessian needs calibration data; pass calibration="):
        fxc.compile(model, passes="hessian", example_inputs=example)


def test_unknown_backend_and_missing_inputs():
    model, example = mlp()
    with pytest.raises(fxc.UnknownNameError, match="unknown backend 'torhc'; did you mean torch"):
        fxc.compile(model, example_inputs=example, backend="torhc")
    with pytest.raises(fxc.TraceError, match="needs example_inputs"):
        fxc.compile(model)


def test_example_inputs_default_to_first_calibration_batch():
    model, example = mlp()
    cm = fxc.compile(model, passes="act-stats", calibration=[example[0]])
    torch.testing.assert_close(call(cm, example), call(model, example))


def test_verify_rejects_broken_contracts():
    model, example = mlp()
    gm = fxc.trace(model, example)
    node = ir.weight_layers(gm)[0].node
    node.meta["fxc.mine"] = "made up"
    with pytest.raises(fxc.NodeError, match="declare keys in fxc/ir/meta.py"):
        ir.verify(gm)
    del node.meta["fxc.mine"]
    del node.meta["val"]
    with pytest.raises(fxc.NodeError, match="without meta\\['val'\\]"):
        ir.verify(gm)
    ir.refresh_meta(gm)
    ir.verify(gm)


def test_a_budget_runs_the_pass_registered_for_it_under_fxc_targets():
    from dataclasses import dataclass

    from fxc.passmgr import registry

    assert registry.lookup("fxc.targets", fxc.Budget.name) is fxc.passes.Auto  # pyproject.toml's entry

    @dataclass(frozen=True)
    class Recorded(fxc.Pass):
        name = "recorded"
        scope: str = fxc.option("layers", "what the budget counts")
        ratio: float | None = fxc.option(None, "dense / compressed size")

        def run(self, gm, am):
            return fxc.PassResult(changed=False)

    model, example = mlp()
    registry.register("fxc.targets", "budget", Recorded)
    try:
        cm = fxc.compile(model, passes="dce", example_inputs=example, target=fxc.Budget(ratio=2))
    finally:
        registry.unregister("fxc.targets", "budget")
    assert cm.pipeline.passes[-1] == Recorded(scope="layers", ratio=2.0)
    with pytest.raises(fxc.OptionError, match="target must be an fxc.Budget"):
        fxc.compile(model, example_inputs=example, target="auto{ratio=2}")


def test_subpackages_load_on_first_attribute_access():
    import subprocess
    import sys

    code = (
        "import sys, fxc; assert 'fxc.passes' not in sys.modules and 'fxc.codegen' not in sys.modules; "
        "print(fxc.passes.Prune.name, fxc.codegen.__name__); "
        "exec('try:\\n fxc.no_such_thing\\nexcept AttributeError as e: print(e)')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["prune fxc.codegen", "module 'fxc' has no attribute 'no_such_thing'"]


def test_planning_passes_print_nothing_unless_asked(capsys):
    """Library calls print nothing by default: auto and mixed-precision keep their tables to themselves (the
    plans are in the report); print-plan / print-allocation still show them."""
    from tiny_models import MLP

    model, calibration = MLP().eval(), [torch.randn(8, 16) for _ in range(2)]
    quiet = {
        "auto": dict(passes=None, target=fxc.Budget(ratio=2.0)),
        "mixed-precision": dict(passes="mixed-precision{avg-bits=6.0},quantize"),
    }
    for name, how in quiet.items():
        cm = fxc.compile(model, calibration=calibration, **how)
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err == "", name
        assert any(row.plan != "dense" for row in cm.report(show=False).rows), name
    fxc.compile(model, "auto{ratio=2.0,print-plan=true}", calibration=calibration)
    assert "layer" in capsys.readouterr().out.splitlines()[1]  # the plan table's header
    fxc.compile(model, "mixed-precision{avg-bits=6.0,print-allocation=true},quantize", calibration=calibration)
    assert "mixed-precision: planned 3 layers" in capsys.readouterr().out


def test_report_counts_the_dense_size_before_any_pass():
    """Channel pruning shrinks the layers themselves; the report's dense size is still the original model's."""
    from tiny_models import MLP

    model = MLP().eval()
    calibration = [torch.randn(8, 16) for _ in range(2)]
    cm = fxc.compile(model, "prune{pattern=channel,sparsity=0.5}", calibration=calibration)
    report = cm.report(show=False)
    original = sum(p.numel() * p.element_size() for p in model.parameters())
    assert report.rows[0].weight_shape == (16, 16)  # half of layers.0's 32 output channels are gone
    assert report.dense_bytes == original
    assert report.model_bytes < original and report.dense_bytes / report.model_bytes > 1.2
    assert f"dense fp32 {original:,} bytes, {original / report.model_bytes:.2f}x smaller" in str(report)
    again = fxc.compile(cm.graph, "dce", example_inputs=(torch.randn(2, 16),)).report(show=False)
    assert again.dense_bytes == original  # a compressed graph compiled again keeps the original's size
