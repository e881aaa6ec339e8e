"""Batch and length generalization: traced from one example of batch 1, the compiled model runs other batch
sizes and sequence lengths on every backend, dense and quantized, and gives the eager model's outputs.

torch.export fixes every input dim whose example size is 1, so fxc traces those dims at size 2
(fxc/frontend/size_one.py); a dim the model cannot take at size 2 stays static, and a batch dim that does
is reported with a FixedBatchWarning naming `dynamic=False`."""

import importlib.util
import warnings

import pytest
import torch
from tiny_models import MLP, first_tensor, tiny_llama
from torch.fx.experimental.symbolic_shapes import is_concrete_int

import fxc
from fxc.frontend.size_one import FixedBatchWarning

pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")

BACKENDS = ["torch", "numpy", "triton"]
SCHEMES = {  # pipeline, largest relative error against the eager (dense) model
    "dense": (None, 1e-5),
    "int8": ("quantize{bits=8}", 0.02),
    "int4-g32": ("quantize{bits=4,group-size=32}", 0.2),
    "w8a8": ("quantize{act-bits=8}", 0.05),
}
SHAPES = [(4, 16), (3, 33)]


def _dims(gm) -> list[list[bool]]:
    """Per placeholder, which dims are dynamic."""
    return [
        [not is_concrete_int(d) for d in n.meta["val"].shape] for n in gm.graph.nodes if n.op == "placeholder"
    ]


def _backend_options(backend, tmp_path):
    if backend != "triton":
        return None
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    return {"cache_dir": str(tmp_path / "kernels")}


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    model, _ = tiny_llama()
    return model, torch.randint(0, 64, (1, 16))


def test_a_batch_one_example_traces_batch_and_length_dynamic(llama):
    model, ids = llama
    with warnings.catch_warnings():
        warnings.simplefilter("error", FixedBatchWarning)
        gm = fxc.trace(model, (ids,))
    assert _dims(gm) == [[True, True]]
    assert ids.shape == (1, 16)  # the caller's example is left as it was


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_llama_traced_at_batch_one_runs_other_batches_and_lengths(llama, backend, scheme, tmp_path):
    model, ids = llama
    options = _backend_options(backend, tmp_path)
    passes, tolerance = SCHEMES[scheme]
    cm = fxc.compile(model, passes, example_inputs=(ids,), backend=backend, backend_options=options)
    for shape in SHAPES:
        x = torch.randint(0, 64, shape)
        with torch.no_grad():
            got, want = first_tensor(cm(x)), model(x).logits
            rows = torch.cat([first_tensor(cm(x[i : i + 1])) for i in range(shape[0])])
        assert got.shape == want.shape
        torch.testing.assert_close(got, rows, rtol=1e-4, atol=1e-4)  # each row as if run alone at batch 1
        assert ((got - want).norm() / want.norm()).item() < tolerance, (shape, scheme)


@pytest.mark.parametrize("frontend", ["export", "symbolic", "dynamo"])
def test_every_frontend_traces_a_batch_one_example_dynamic(frontend):
    model = MLP().eval()
    gm = fxc.trace(model, (torch.randn(1, 16),), frontend=frontend)
    assert _dims(gm) == [[True, False]]
    x = torch.randn(6, 16)
    torch.testing.assert_close(gm(x), model(x))


def test_a_length_one_example_traces_length_dynamic(llama):
    model, _ = llama
    gm = fxc.trace(model, (torch.randint(0, 64, (1, 1)),))
    assert _dims(gm) == [[True, True]]
    x = torch.randint(0, 64, (4, 16))
    torch.testing.assert_close(gm(x).logits, model(x).logits)


def test_calibration_of_another_batch_size_than_a_batch_one_example(llama):
    model, ids = llama
    calibration = [torch.randint(0, 64, (4, 16)) for _ in range(2)]
    cm = fxc.compile(model, "quantize{method=gptq}", example_inputs=(ids,), calibration=calibration)
    x = torch.randint(0, 64, (3, 33))
    with torch.no_grad():
        want = model(x).logits
        assert ((first_tensor(cm(x)) - want).norm() / want.norm()).item() < 0.02


class FixedBatch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):
        assert x.shape[0] == 1, "one row at a time"
        return self.fc(x)


class Grayscale(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_a_batch_the_model_fixes_stays_static_with_a_warning_naming_the_option():
    model, x = FixedBatch().eval(), torch.randn(1, 16)
    named = r"(?s)args\[0\] dim 0 stays fixed at size 1.*one row at a time.*dynamic=False"
    with pytest.warns(FixedBatchWarning, match=named):
        gm = fxc.trace(model, (x,))
    assert _dims(gm) == [[False, False]]  # the batch by the warning; the features by Linear(16, 4)
    torch.testing.assert_close(gm(x), model(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FixedBatchWarning)
        cm = fxc.compile(model, "quantize{bits=8}", example_inputs=(x,), dynamic=False)
    assert _dims(cm.graph) == [[False, False]]
    torch.testing.assert_close(cm(x), model(x), rtol=0.05, atol=0.02)


def test_a_size_one_channel_dim_stays_static_without_a_warning():
    model = Grayscale().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FixedBatchWarning)
        gm = fxc.trace(model, (torch.randn(1, 1, 8, 8),))
    assert _dims(gm) == [[True, False, True, True]]
    x = torch.randn(3, 1, 9, 9)
    torch.testing.assert_close(gm(x), model(x))


def test_shape_mismatch_is_named_with_the_shapes(capfd):
    """A wrong example width is a shape mismatch with the shapes given, in one error, not a
    "try another frontend" hint after the fake-tensor log."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 8))
    with pytest.raises(fxc.TraceError, match=r"shape mismatch: Sequential cannot run on example inputs of shapes "
                                             r"\[4, 17\]") as caught:
        fxc.compile(model, None, example_inputs=(torch.randn(4, 17),))
    assert "try frontend" not in str(caught.value)
    assert "fake_tensor" not in capfd.readouterr().err
