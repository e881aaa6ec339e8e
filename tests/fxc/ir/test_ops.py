"""The op set: each op's reference semantics against a plain float computation, and a graph holding
the ops still runs, exports and compiles."""

import pytest
import torch
import torch.nn.functional as F

import fxc  # noqa: F401  (registers the ops)
from fxc.ir import qformat


@pytest.mark.parametrize("bits,group", [(8, None), (8, 16), (4, None), (4, 8)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_quantized_linear_matches_float_dequantized_weight(bits, group, symmetric):
    w, x, b = torch.randn(6, 32), torch.randn(3, 32), torch.randn(6)
    q = qformat.quantize_rtn(w, bits, group, symmetric)
    # the float computation, written out from the format's definition
    ints = qformat.unpack(q.qweight, bits).float()
    gs = group or 32
    zero = torch.zeros_like(q.scale) if q.zero_point is None else q.zero_point
    w_hat = (ints - zero.repeat_interleave(gs, 1)) * q.scale.repeat_interleave(gs, 1)
    y = torch.ops.fxc.quantized_linear(x, q.qweight, q.scale, q.zero_point, b, bits)
    torch.testing.assert_close(y, x @ w_hat.T + b)
    lo, hi = qformat.qrange(bits)
    # error bound of round-to-nearest: half a step per weight
    assert ((w - w_hat).abs() <= q.scale.repeat_interleave(gs, 1) / 2 + 1e-6).all()
    assert ints.min() >= lo and ints.max() <= hi


def test_int4_packing_round_trips_and_halves_bytes():
    q = torch.randint(-8, 8, (5, 12), dtype=torch.int8)
    packed = qformat.pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 6)
    assert torch.equal(qformat.unpack_int4(packed), q)
    assert packed[0, 0] == (int(q[0, 0]) & 0xF) | ((int(q[0, 1]) & 0xF) << 4)


def test_int4_unpacking_reads_every_byte_the_same_from_torch_and_numpy():
    import numpy as np

    packed = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(8, 32)
    signed = lambda nibble: nibble - 16 if nibble >= 8 else nibble  # noqa: E731
    want = torch.tensor([[signed(b & 0xF), signed(b >> 4)] for b in range(256)], dtype=torch.int8).reshape(8, 64)
    assert torch.equal(qformat.unpack_int4(packed), want)
    from_numpy = qformat.unpack(packed.numpy(), 4)  # the numpy backend's call: numpy in, numpy out
    assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.int8
    assert np.array_equal(from_numpy, want.numpy())
    with pytest.raises(ValueError, match="bits must be one of"):
        qformat.unpack(packed, 3)


def test_the_op_set_registers_without_an_fxc_ops_attribute():
    assert torch.ops.fxc.quantized_linear is not None  # registered by `import fxc`
    assert not hasattr(fxc, "ops")  # the op definitions are fxc.ir.ops


def test_quantized_conv2d_matches_float_conv():
    w, x = torch.randn(4, 2, 3, 3), torch.randn(1, 4, 6, 6)
    q = qformat.quantize_rtn(w.reshape(4, -1), 8)
    w_hat = qformat.dequantize(q.qweight, q.scale, None, 8).view(4, 2, 3, 3)
    y = torch.ops.fxc.quantized_conv2d(x, q.qweight, q.scale, None, None, 8, [4, 2, 3, 3], [1, 1], [1, 1], [1, 1], 2)
    torch.testing.assert_close(y, F.conv2d(x, w_hat, None, 1, 1, 1, 2))


def test_int8_linear_dynamic_is_per_token_int8_matmul():
    x, w, b = torch.randn(3, 5, 16), torch.randn(8, 16), torch.randn(8)
    qw = qformat.quantize_rtn(w, 8)
    y = torch.ops.fxc.int8_linear(x, qw.qweight, qw.scale.view(-1), b, None)
    rows = x.reshape(-1, 16)
    sx = rows.abs().amax(-1, keepdim=True) / 127.5
    qx = torch.round(rows / sx).clamp(-128, 127)
    expected = (qx @ qw.qweight.float().T) * sx * qw.scale.view(1, -1) + b
    torch.testing.assert_close(y, expected.view(3, 5, 8))
    # and it approximates the float layer: each product is off by at most half a step of x and of w
    half_x, half_w = sx / 2, qw.scale.view(1, -1) / 2
    bound = rows.abs().sum(-1, keepdim=True) * half_w + half_x * w.abs().sum(-1).view(1, -1) + 16 * half_x * half_w
    assert ((y.view(-1, 8) - F.linear(rows, w, b)).abs() <= bound * 1.0001 + 1e-5).all()


def test_int8_linear_static_scale_and_exact_accumulator():
    x, w = torch.randn(4, 300), torch.randn(3, 300)
    qw = qformat.quantize_rtn(w, 8)
    scale = torch.tensor(x.abs().max().item() / 127.5)
    y = torch.ops.fxc.int8_linear(x, qw.qweight, qw.scale.view(-1), None, scale)
    qx = torch.round(x / scale).clamp(-128, 127).to(torch.int64)
    acc = qx @ qw.qweight.to(torch.int64).T  # exact integer reference
    torch.testing.assert_close(y, acc.float() * scale * qw.scale.view(1, -1))


def test_sparse_nm_linear_matches_dense_masked_weight():
    w, x = torch.randn(4, 8), torch.randn(2, 8)
    keep = w.abs().view(4, 2, 4).topk(2, dim=-1).indices.sort(-1).values  # 2:4
    values = torch.gather(w.view(4, 2, 4), 2, keep).reshape(4, 4)
    dense = torch.zeros(4, 2, 4).scatter(2, keep, values.view(4, 2, 2)).view(4, 8)
    y = torch.ops.fxc.sparse_nm_linear(x, values, keep.reshape(4, 4).to(torch.uint8), None, None, 2, 4)
    torch.testing.assert_close(y, x @ dense.T)
    assert (dense.view(4, 2, 4) == 0).sum(-1).eq(2).all()


class Quantized(torch.nn.Module):
    def __init__(self):
        super().__init__()
        q = qformat.quantize_rtn(torch.randn(8, 16), 4, 8)
        self.register_buffer("qweight", q.qweight)
        self.register_buffer("scale", q.scale)

    def forward(self, x):
        return torch.relu(torch.ops.fxc.quantized_linear(x, self.qweight, self.scale, None, None, 4))


def test_graph_with_fxc_ops_runs_exports_and_compiles():
    model, x = Quantized(), torch.randn(3, 16)
    expected = model(x)
    gm = fxc.trace(model, (x,))
    assert any(n.target == torch.ops.fxc.quantized_linear.default for n in gm.graph.nodes)
    torch.testing.assert_close(gm(x), expected)
    torch._dynamo.reset()
    compiled = torch.compile(gm, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), expected)
    torch._dynamo.reset()


def test_bad_bits_rejected():
    q = qformat.quantize_rtn(torch.randn(4, 8), 8)
    with pytest.raises(ValueError, match="bits must be one of"):
        torch.ops.fxc.quantized_linear(torch.randn(1, 8), q.qweight, q.scale, None, None, 3)
    with pytest.raises(ValueError, match="group size 3 does not divide"):
        qformat.quantize_rtn(torch.randn(4, 8), 8, 3)


# --- typed views of op arguments, and the backend-internal plane_linear --------------------------------


def test_each_view_names_its_ops_schema_arguments_in_order():
    from fxc.ir import ops

    assert set(ops.OP_ARGUMENTS) == set(ops.OPS)
    for op, view in ops.OP_ARGUMENTS.items():
        assert view.OP is op
        assert view._fields == tuple(a.name for a in op._schema.arguments)


def _quantized_linear_node(kwargs: dict):
    graph = torch.fx.Graph()
    x, w, s = graph.placeholder("x"), graph.placeholder("w"), graph.placeholder("s")
    args = (x, w, s, None, None, 4)
    positional = args[: len(args) - len(kwargs)]
    node = graph.call_function(torch.ops.fxc.quantized_linear.default, positional, kwargs)
    return node, x, w, s


@pytest.mark.parametrize("kwargs", [{}, {"bits": 4}, {"bias": None, "bits": 4}])
def test_view_reads_positional_and_keyword_arguments(kwargs):
    from fxc.ir.ops import QuantizedLinearArgs, op_arguments

    node, x, w, s = _quantized_linear_node(kwargs)
    args = QuantizedLinearArgs.of(node)
    assert (args.x, args.qweight, args.scale, args.zero_point, args.bias, args.bits) == (x, w, s, None, None, 4)
    assert op_arguments(node) == args
    assert QuantizedLinearArgs(*args) == args  # the same view over run-time values in schema order


def test_view_of_the_wrong_node_or_a_missing_argument_is_a_node_error():
    from fxc.ir.ops import Int8LinearArgs, QuantizedLinearArgs, op_arguments

    node, *_ = _quantized_linear_node({})
    with pytest.raises(fxc.NodeError, match="Int8LinearArgs reads"):
        Int8LinearArgs.of(node)
    node.args = node.args[:5]
    with pytest.raises(fxc.NodeError, match="missing its argument 'bits'"):
        QuantizedLinearArgs.of(node)
    relu = node.graph.call_function(torch.ops.aten.relu.default, (node,))
    with pytest.raises(fxc.NodeError, match="not an op of fxc's op set"):
        op_arguments(relu)


@pytest.mark.parametrize("bits,group,symmetric", [(8, None, True), (4, 8, False)])
def test_plane_linear_is_quantized_linear_on_rows(bits, group, symmetric):
    from fxc.ir import ops

    q = qformat.quantize_rtn(torch.randn(6, 32), bits, group, symmetric)
    rows, bias = torch.randn(5, 32), torch.randn(6)
    want = torch.ops.fxc.quantized_linear(rows, q.qweight, q.scale, q.zero_point, bias, bits)
    got = torch.ops.fxc_native.plane_linear(rows, q.qweight, q.scale, q.zero_point, bias, bits)
    torch.testing.assert_close(got, want)
    assert ops.plane_linear._qualname == "fxc_native::plane_linear"
    assert torch.ops.fxc_native.plane_linear.default not in ops.OPS  # backend-internal, not the IR contract
