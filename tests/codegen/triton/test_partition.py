"""Partition rules: which elementwise followers fuse into a compressed linear's kernel and which stop
the chain, checked on small graphs; every lowered graph still matches the torch backend."""

import pytest

pytest.importorskip("triton")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fxc  # noqa: E402
from fxc.codegen.triton.partition import partition  # noqa: E402
from fxc.ir import qformat  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")
fxc_ops = torch.ops.fxc


class QuantizedBlock(torch.nn.Module):
    """A weight-only int8 linear (16 -> 24) followed by `tail(y, x2, row)`."""

    def __init__(self, tail, dtype=torch.float32):
        super().__init__()
        weight = qformat.quantize_rtn(torch.randn(24, 16), 8)
        self.register_buffer("qweight", weight.qweight)
        self.register_buffer("scale", weight.scale)
        self.register_buffer("row", torch.randn(24, dtype=dtype))
        self.tail = tail

    def forward(self, x, other):
        y = fxc_ops.quantized_linear(x, self.qweight, self.scale, None, None, 8)
        return self.tail(y, other, self.row)


def _square(t):
    return t * t


CASES = {
    # name: (tail, other's shape, expected describe() of the one group)
    "relu-residual": (lambda y, o, r: F.relu(y) + o, (3, 24), "fxc.quantized_linear + relu -> add(operand 0)"),
    "row-bias-scalar": (lambda y, o, r: (o + (y + r) * 0.5), (3, 24),
                        "fxc.quantized_linear + add(operand 0) -> mul(0.5) -> add(operand 1)"),
    "gelu-tanh-gate": (lambda y, o, r: F.gelu(y, approximate="tanh") * o, (3, 24),
                       "fxc.quantized_linear + gelu_tanh -> mul(operand 0)"),
    "two-users": (lambda y, o, r: y + F.relu(y), (3, 24), "fxc.quantized_linear"),
    "alpha": (lambda y, o, r: torch.add(y, o, alpha=2.0), (3, 24), "fxc.quantized_linear"),
    "broadcast-up": (lambda y, o, r: y + o, (2, 3, 24), "fxc.quantized_linear"),
    "self-product": (lambda y, o, r: _square(F.silu(y)), (3, 24), "fxc.quantized_linear + silu"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fusion_rules(case, tmp_path):
    tail, other_shape, expected = CASES[case]
    model = QuantizedBlock(tail).eval()
    example = (torch.randn(3, 16), torch.randn(other_shape))
    graph = fxc.trace(model, example)
    part = partition(graph)
    assert [group.describe() for group in part.groups] == [expected]
    assert not part.fallbacks
    lowered = fxc.compile(graph, example_inputs=example, backend="triton",
                          backend_options={"poison_outputs": True, "cache_dir": str(tmp_path)})
    torch.testing.assert_close(lowered(*example), model(*example), rtol=1e-5, atol=1e-5)


def test_fuse_epilogue_off_keeps_the_chain_in_torch(tmp_path):
    model = QuantizedBlock(CASES["relu-residual"][0]).eval()
    example = (torch.randn(3, 16), torch.randn(3, 24))
    graph = fxc.trace(model, example)
    assert [g.describe() for g in partition(graph, fuse_epilogue=False).groups] == ["fxc.quantized_linear"]
    lowered = fxc.compile(graph, example_inputs=example, backend="triton",
                          backend_options={"fuse_epilogue": False, "cache_dir": str(tmp_path)})
    torch.testing.assert_close(lowered(*example), model(*example), rtol=1e-5, atol=1e-5)


def test_unsupported_input_dtype_is_a_reported_fallback(tmp_path):
    model = QuantizedBlock(CASES["relu-residual"][0], dtype=torch.float64).double().eval()
    model.scale = model.scale.float()
    example = (torch.randn(3, 16, dtype=torch.float64), torch.randn(3, 24, dtype=torch.float64))
    graph = fxc.trace(model, example)
    part = partition(graph)
    assert not part.groups and len(part.fallbacks) == 1
    assert "torch.float64" in part.fallbacks[0].reason and "runs in torch" in part.fallbacks[0].reason
    lowered = fxc.compile(graph, example_inputs=example, backend="triton", backend_options={"cache_dir": str(tmp_path)})
    torch.testing.assert_close(lowered(*example), model(*example))
    assert "1 fxc ops in torch" in lowered.runner.summary()


class TwoLinears(torch.nn.Module):
    """80 -> 50 (half of its 16 x 16 weight tiles zero) -> gelu -> 50 -> 20 (dense)."""

    def __init__(self):
        super().__init__()
        self.sparse, self.dense = torch.nn.Linear(80, 50), torch.nn.Linear(50, 20)
        rows, cols = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
        zero_tiles = ((rows + cols) % 2 == 1).repeat_interleave(16, 0).repeat_interleave(16, 1)[:50, :80]
        with torch.no_grad():
            self.sparse.weight[zero_tiles] = 0

    def forward(self, x):
        return self.dense(F.gelu(self.sparse(x)))


def test_dense_linear_with_zero_tiles_takes_the_block_sparse_template(tmp_path):
    model = TwoLinears().eval()
    example = (torch.randn(3, 7, 80),)
    options = {"block_sparse_block": 16, "poison_outputs": True, "cache_dir": str(tmp_path)}
    lowered = fxc.compile(model, example_inputs=example, backend="triton", backend_options=options)
    assert [g.describe() for g in lowered.runner.partition.groups] == [
        "aten.linear (block-sparse, 50% zero tiles) + gelu"
    ]
    torch.testing.assert_close(lowered(*example), model(*example), rtol=1e-5, atol=1e-5)
    call = next(iter(lowered.runner.calls.values()))
    assert dict(call.launches) == {"block_sparse_gemm": 1}
    off = fxc.compile(model, example_inputs=example, backend="triton",
                      backend_options={**options, "block_sparse_min_zero": 1.1})
    assert not off.runner.partition.groups
