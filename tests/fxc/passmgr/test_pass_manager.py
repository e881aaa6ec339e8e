"""Pass manager: analyses cached and invalidated, third-party passes through entry points (and the hint
when the installed metadata predates a group), instruments, failure context, and the model left
untouched by a failing pipeline."""

import importlib.metadata
from dataclasses import dataclass

import pytest
import torch
from tiny_models import cnn, mlp

import fxc
from fxc import ir
from fxc.passmgr import registry
from fxc.passmgr.options import option
from fxc.passmgr.passbase import Analysis, Pass, PassResult


@dataclass(frozen=True)
class CountingAnalysis(Analysis):
    """Counts how often it is computed (stands in for an expensive Hessian)."""

    name = "counting"
    computed = []  # class-level log, cleared by the test

    def compute(self, gm, am):
        CountingAnalysis.computed.append(len(gm.graph.nodes))
        return sum(p.sum().item() for p in gm.parameters())


@dataclass(frozen=True)
class UsesCounting(Pass):
    """Reads `counting`; preserves it when asked to."""

    name = "uses-counting"
    preserve: bool = option(True, "declare the analysis preserved")

    def run(self, gm, am):
        am.get("counting")
        return PassResult(True, frozenset({"counting"}) if self.preserve else frozenset())


@pytest.fixture(autouse=True)
def registered():
    registry.register("fxc.analyses", "counting", CountingAnalysis)
    registry.register("fxc.passes", "uses-counting", UsesCounting)
    CountingAnalysis.computed.clear()
    yield
    registry.unregister("fxc.analyses", "counting")
    registry.unregister("fxc.passes", "uses-counting")


def test_analysis_runs_once_across_preserving_passes_and_again_after_one_that_does_not():
    model, example = mlp()
    fxc.compile(model, passes="uses-counting,uses-counting", example_inputs=example)
    assert len(CountingAnalysis.computed) == 1
    CountingAnalysis.computed.clear()
    fxc.compile(model, passes="uses-counting{preserve=false},uses-counting", example_inputs=example)
    assert len(CountingAnalysis.computed) == 2


def test_dce_preserves_analyses_fold_bn_invalidates():
    model, example = cnn()
    fxc.compile(model, passes="counting,dce,counting,fold-bn,counting", example_inputs=example)
    assert len(CountingAnalysis.computed) == 2


def test_third_party_pass_from_entry_point_usable_by_name(monkeypatch, tmp_path):
    package = tmp_path / "thirdparty_fxc_pass.py"
    package.write_text(
        "from dataclasses import dataclass\n"
        "import torch\n"
        "from fxc import ir\n"
        "from fxc.passmgr.options import option\n"
        "from fxc.passmgr.passbase import Pass, PassResult\n"
        "@dataclass(frozen=True)\n"
        "class ScaleWeights(Pass):\n"
        "    name = 'scale-weights'\n"
        "    factor: float = option(2.0, 'multiply every linear weight')\n"
        "    def run(self, gm, am):\n"
        "        for layer in ir.weight_layers(gm):\n"
        "            ir.set_tensor(gm, layer.weight, ir.get_tensor(gm, layer.weight) * self.factor)\n"
        "        return PassResult(True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.metadata.entry_points()
    fake = importlib.metadata.EntryPoint("scale-weights", "thirdparty_fxc_pass:ScaleWeights", "fxc.passes")

    def entry_points(**kwargs):
        return importlib.metadata.EntryPoints(
            [
                *real.select(group="fxc.passes"),
                fake,
                *[ep for group in ("fxc.analyses", "fxc.backends") for ep in real.select(group=group)],
            ]
        )

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    registry.refresh()
    try:
        assert "scale-weights" in registry.names("fxc.passes")
        model = torch.nn.Linear(4, 3, bias=False)
        x = torch.randn(2, 4)
        cm = fxc.compile(model, passes="dce,scale-weights{factor=3.0}", example_inputs=(x,))
        torch.testing.assert_close(cm(x), 3 * model(x))
        assert str(cm.pipeline) == "dce,scale-weights{factor=3.0}"
    finally:
        monkeypatch.undo()
        registry.refresh()


def test_a_group_missing_from_the_installed_metadata_says_to_reinstall(monkeypatch):
    """A checkout that added the fxc.targets group, installed before it: the lookup says how to fix it."""
    real = importlib.metadata.entry_points()
    groups = [group for group in registry.GROUPS if group != "fxc.targets"]
    older = importlib.metadata.EntryPoints([ep for group in groups for ep in real.select(group=group)])
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kwargs: older)
    registry.refresh()
    try:
        model, example = mlp()
        with pytest.raises(fxc.UnknownNameError) as missing:
            fxc.compile(model, example_inputs=example, target=fxc.Budget(ratio=2))
        message = str(missing.value)
        assert message.startswith("unknown target 'budget' (known: none); no installed package declares an ")
        assert "older than this checkout's pyproject.toml" in message and "`pip install -e .`" in message
        with pytest.raises(fxc.UnknownNameError) as typo:  # a group with entry points: no such hint
            registry.lookup("fxc.backends", "nympy")
        assert str(typo.value) == "unknown backend 'nympy'; did you mean numpy? (known: numpy, torch, triton)"
    finally:
        monkeypatch.undo()
        registry.refresh()


@dataclass(frozen=True)
class Breaks(Pass):
    """Zeroes a weight then fails on a node, like a buggy pass would."""

    name = "breaks"

    def run(self, gm, am):
        layer = ir.weight_layers(gm)[0]
        ir.set_tensor(gm, layer.weight, torch.zeros_like(ir.get_tensor(gm, layer.weight)))
        raise fxc.NodeError(layer.node, "cannot handle this layer")


@dataclass(frozen=True)
class Crashes(Pass):
    name = "crashes"

    def run(self, gm, am):
        raise RuntimeError("index out of range")


def test_failure_names_pass_node_source_line_and_passes_before():
    registry.register("fxc.passes", "breaks", Breaks)
    registry.register("fxc.passes", "crashes", Crashes)
    model, example = mlp()
    before = model.layers[0].weight.clone()
    try:
        with pytest.raises(fxc.NodeError) as error:
            fxc.compile(model, passes="dce,fold-bn,breaks", example_inputs=example)
        text = str(error.value)
        assert "cannot handle this layer" in text and "node %linear" in text
        assert "tiny_models.py" in text  # the source line the node came from
        assert "in pass 'breaks'; passes that ran before it: dce, fold-bn" in text
        with pytest.raises(fxc.PassFailure, match="pass 'crashes' failed: RuntimeError: index out of range"):
            fxc.compile(model, passes="dce,crashes", example_inputs=example)
    finally:
        registry.unregister("fxc.passes", "breaks")
        registry.unregister("fxc.passes", "crashes")
    assert torch.equal(model.layers[0].weight, before)  # the user's model is untouched


def test_instruments_time_dump_and_measure_drift(tmp_path):
    model, example = cnn()
    timing, dump, drift = fxc.Timing(), fxc.IRDump(tmp_path), fxc.NumericDrift()
    fxc.compile(model, passes="dce,fold-bn", example_inputs=example, instruments=[timing, dump, drift])
    assert [r[1] for r in timing.records] == ["dce", "fold-bn"]
    assert "folded 2 batch norms" in timing.table()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[0] == "00-input.py" and files[-1].endswith("fold-bn.py")
    assert "batch_norm" in (tmp_path / "00-input.py").read_text()
    assert "batch_norm" not in (tmp_path / files[-1]).read_text()
    assert [name for name, _ in drift.drift] == ["dce", "fold-bn"]
    assert all(value < 1e-5 for _, value in drift.drift)


def test_numeric_drift_sees_a_damaging_pass():
    @dataclass(frozen=True)
    class Damage(Pass):
        name = "damage"

        def run(self, gm, am):
            layer = ir.weight_layers(gm)[0]
            ir.set_tensor(gm, layer.weight, ir.get_tensor(gm, layer.weight) * 1.5)
            return PassResult(True)

    model, example = mlp()
    drift = fxc.NumericDrift()
    fxc.compile(model, passes=[Damage()], example_inputs=example, instruments=[drift])
    assert drift.drift[0][1] > 0.01
