"""Every Triton kernel (codegen/triton/kernels/) against the numpy reference (codegen/numpy/quant.py,
codegen/common/nm_sparse.py; the op set's torch reference in fxc/ir/ops.py where those are absent), in
Triton's interpreter, through the picker (FusedLinear) and, for the checks, the kernels' own wrappers.

Ragged shapes come from hypothesis; outputs are poisoned with NaN before each launch, so an element
a kernel fails to write fails the comparison. Each case runs with the interpreter's default config
and with a small config that splits M, N and K into several masked blocks."""

import pytest

triton = pytest.importorskip("triton")

import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fxc.codegen.triton.cache import KernelCache  # noqa: E402
from fxc.codegen.triton.epilogue import Epilogue, Step, apply_reference  # noqa: E402
from fxc.codegen.triton.kernels import block_sparse, dequant_gemm, gemv, sparse_nm, tiles, w8a8  # noqa: E402
from fxc.codegen.triton.kernels.block_sparse import block_map  # noqa: E402
from fxc.codegen.triton.picker import FusedLinear  # noqa: E402
from fxc.ir import ops, qformat  # noqa: E402

fxc_ops = torch.ops.fxc
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # sigmoid of large -x: exact 0
SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)
SMALL_GEMM = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_warps=1, num_stages=1)
SMALL = {
    "w8a16_gemm": SMALL_GEMM, "w4a16_gemm": SMALL_GEMM, "w8a8": SMALL_GEMM, "sparse_nm_gemm": SMALL_GEMM,
    "gemv": dict(BLOCK_N=16, BLOCK_K=16, SPLIT_K=3, num_warps=1, num_stages=1),
    "block_sparse_gemm": dict(BLOCK_M=16, BLOCK_N=16, GROUP_M=2, num_warps=1, num_stages=1),
}
EPILOGUES = {
    "none": Epilogue(()),
    "relu": Epilogue((Step("relu"),)),
    "gelu-residual": Epilogue((Step("gelu"), Step("add", operand=0))),
    "silu-gate": Epilogue((Step("silu"), Step("mul", operand=0))),
    "tanh-gelu-scalar": Epilogue((Step("gelu_tanh"), Step("mul", scalar=0.5), Step("add", operand=0))),
    "row-sigmoid": Epilogue((Step("add", operand=0), Step("sigmoid"))),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return KernelCache(tmp_path_factory.mktemp("kernels"), interpret=True)


def _operands(name: str, m: int, n: int) -> list[torch.Tensor]:
    if name == "none" or name == "relu":
        return []
    if name == "row-sigmoid":
        return [torch.randn(n)]
    return [torch.randn(m, n)]


def reference(op, args) -> torch.Tensor:
    """op(*args) in numpy (float32, exact int32 GEMMs), the reference backend's own kernels."""
    try:
        from fxc.codegen.common import nm_sparse
        from fxc.codegen.numpy import quant as nq
    except ImportError:
        return op(*args)
    numpy = lambda t: None if t is None else t.detach().float().numpy() if t.is_floating_point() else t.numpy()
    x = numpy(args[0])
    if op == fxc_ops.quantized_linear.default:
        qweight, scale, zero, bias, bits = args[1:6]
        y = x @ nq.dequantize_rows(numpy(qweight), numpy(scale), numpy(zero), bits).T
    elif op == fxc_ops.int8_linear.default:
        qweight, weight_scale, bias, input_scale = args[1:5]
        if input_scale is None:
            qx, sx = nq.quantize_activations_per_token(x)
        else:
            sx = numpy(input_scale).reshape(1, 1)
            qx = nq.quantize_activations(x, sx)
        y = nq.int8_matmul_exact(qx, numpy(qweight)).astype("float32") * sx * numpy(weight_scale).reshape(1, -1)
    elif op == fxc_ops.sparse_nm_linear.default:
        values, indices, scale, bias, n_keep, m_group = args[1:7]
        kept = numpy(values).astype("float32") * (1 if scale is None else numpy(scale).reshape(-1, 1))
        y = x @ nm_sparse.densify_nm(kept, numpy(indices), n_keep, m_group).T
    else:
        _, weight, bias = args
        y = x @ numpy(weight).T
    return torch.from_numpy(y + (0 if bias is None else numpy(bias)))


def _check(cache, op, args, epilogue_name, tolerance=1e-4, **options):
    """Run with the default config and with SMALL (several masked blocks along M, N and K)."""
    epilogue = EPILOGUES[epilogue_name]
    m, n = args[0].shape[0], args[1].shape[0]
    operands = _operands(epilogue_name, m, n)
    want = apply_reference(epilogue, reference(op, args), operands)
    for configs in (None, SMALL):
        fused = FusedLinear(op, epilogue, cache, poison_outputs=True, configs=configs, **options)
        got = fused(*args, *operands)
        torch.testing.assert_close(got, want.to(got.dtype), rtol=tolerance, atol=tolerance)
        assert fused.launches.total() == 1 and not fused.fallbacks, fused.fallbacks
    return fused


@st.composite
def weight_only_cases(draw):
    bits = draw(st.sampled_from([4, 8]))
    m = draw(st.sampled_from([1, 2, 5, 16, 17, 33]))
    n = draw(st.integers(1, 40))
    group = draw(st.sampled_from([None, 8, 16, 32]))
    if group:
        k = group * draw(st.integers(1, 3))
    else:
        k = draw(st.integers(1, 48))
        k += k % 2 if bits == 4 else 0  # int4 packs two columns per byte
    return bits, m, n, k, group, draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from(sorted(EPILOGUES)))


@SETTINGS
@given(case=weight_only_cases())
def test_weight_only_matches_reference(cache, case):
    bits, m, n, k, group, symmetric, with_bias, epilogue = case
    weight = qformat.quantize_rtn(torch.randn(n, k), bits, group, symmetric)
    bias = torch.randn(n) if with_bias else None
    args = (torch.randn(m, k), weight.qweight, weight.scale, weight.zero_point, bias, bits)
    fused = _check(cache, fxc_ops.quantized_linear.default, args, epilogue)
    assert fused.last[0] == ("gemv" if m <= 16 else f"w{bits}a16_gemm")


@SETTINGS
@given(m=st.integers(1, 40), n=st.integers(1, 40), k=st.integers(1, 70), static=st.booleans(),
       with_bias=st.booleans(), epilogue=st.sampled_from(sorted(EPILOGUES)))
def test_w8a8_matches_reference(cache, m, n, k, static, with_bias, epilogue):
    weight = qformat.quantize_rtn(torch.randn(n, k), 8)
    input_scale = torch.tensor(0.03) if static else None
    bias = torch.randn(n) if with_bias else None
    args = (torch.randn(m, k) * 2, weight.qweight, weight.scale.reshape(-1), bias, input_scale)
    _check(cache, fxc_ops.int8_linear.default, args, epilogue, tolerance=1e-5)


def test_w8a8_row_quantization_is_exact_with_ties(cache):
    """qx and sx bit-identical to qformat's, including x / s exactly halfway between integers."""
    halves = torch.tensor([127.5, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 126.5, -126.5, -127.5])  # scale 1
    x = torch.cat([halves.repeat(3, 1) * torch.tensor([[1.0], [0.25], [8.0]]), torch.zeros(1, 11)])
    x = torch.cat([x, torch.randn(5, 11) * 4])
    compiled = FusedLinear(fxc_ops.int8_linear.default, Epilogue(()), cache).render_and_load(
        w8a8.TEMPLATE, Epilogue(()), torch.float32, {})
    qx = torch.full(x.shape, 99, dtype=torch.int8)
    sx = torch.full((x.shape[0],), float("nan"))
    compiled["w8a8_quantize_rows"][(3,)](x, qx, sx, None, x.shape[0], x.shape[1], x.stride(0), x.stride(1),
                                         STATIC=False, ROWS=4, BLOCK_K=8)
    want_q, want_s = qformat.quantize_activations_per_token(x)
    assert torch.equal(qx, want_q)
    assert torch.equal(sx, want_s.reshape(-1))
    assert qx[0, 1:4].tolist() == [0, 2, 2]  # round half to even
    assert qx[0, [0, 10]].tolist() == [127, -128]  # 127.5 rounds to 128 and clamps; -127.5 to -128


def _pack_nm(weight: torch.Tensor, n: int, m: int):
    rows, cols = weight.shape
    groups = weight.view(rows, cols // m, m)
    keep = groups.abs().topk(n, dim=-1).indices.sort(dim=-1).values
    values = groups.gather(-1, keep).reshape(rows, -1)
    return values, keep.reshape(rows, -1).to(torch.uint8)


@SETTINGS
@given(m=st.integers(1, 40), out=st.integers(1, 40), groups=st.integers(1, 12),
       pattern=st.sampled_from([(2, 4), (1, 4), (4, 8), (1, 3)]), int8_values=st.booleans(),
       epilogue=st.sampled_from(sorted(EPILOGUES)))
def test_sparse_nm_matches_reference(cache, m, out, groups, pattern, int8_values, epilogue):
    n_keep, m_group = pattern
    values, indices = _pack_nm(torch.randn(out, groups * m_group), n_keep, m_group)
    scale = None
    if int8_values:
        quantized = qformat.quantize_rtn(values, 8)
        values, scale = quantized.qweight, quantized.scale
    args = (torch.randn(m, groups * m_group), values, indices, scale, torch.randn(out), n_keep, m_group)
    _check(cache, fxc_ops.sparse_nm_linear.default, args, epilogue)


@SETTINGS
@given(m=st.integers(1, 40), n=st.integers(1, 70), k=st.integers(1, 70), block=st.sampled_from([16, 32]),
       zero=st.floats(0.0, 1.0), with_bias=st.booleans(), epilogue=st.sampled_from(sorted(EPILOGUES)))
def test_block_sparse_matches_dense_linear(cache, m, n, k, block, zero, with_bias, epilogue):
    weight = torch.randn(n, k)
    tiles = torch.rand(-(-n // block), -(-k // block)) < zero  # all-zero tiles, ragged at the edges
    weight[tiles.repeat_interleave(block, 0).repeat_interleave(block, 1)[:n, :k]] = 0
    args = (torch.randn(m, k), weight, torch.randn(n) if with_bias else None)
    _check(cache, torch.ops.aten.linear.default, args, epilogue, block=block)


def test_block_map_lists_only_nonzero_tiles():
    weight = torch.zeros(40, 50)
    weight[0, 17] = weight[39, 49] = weight[20, 0] = 1.0
    counts, columns, block, zero = block_map(weight, 16)  # bands of rows 0-15, 16-31, 32-39; K tiles 0..3
    assert counts.tolist() == [1, 1, 1] and block == 16
    assert [columns[band, : counts[band]].tolist() for band in range(3)] == [[1], [0], [3]]
    assert zero == pytest.approx(1 - 3 / 12)


@pytest.mark.parametrize("bits", [4, 8])
def test_bfloat16_inputs(cache, bits):
    """bf16 activations (interpreter computes in float32): the reference's result to bf16 accuracy."""
    weight = qformat.quantize_rtn(torch.randn(24, 64), bits, 32)
    x = torch.randn(19, 64).to(torch.bfloat16)
    args = (x, weight.qweight, weight.scale, None, torch.randn(24).to(torch.bfloat16), bits)
    fused = _check(cache, fxc_ops.quantized_linear.default, args, "relu", tolerance=5e-2)
    assert fused(*args).dtype == torch.bfloat16


def test_launch_wrapper_alone_allocates_out(cache):
    """A kernel file's `launch` without the picker: it allocates out in x's dtype and runs the epilogue."""
    weight = qformat.quantize_rtn(torch.randn(24, 64), 4, 32, symmetric=False)
    x, residual = torch.randn(20, 64), torch.randn(20, 24)
    epilogue = Epilogue((Step("relu"), Step("add", operand=0)))
    template = dequant_gemm.TEMPLATES[4]
    compiled = FusedLinear(fxc_ops.quantized_linear.default, epilogue, cache).render_and_load(
        template, epilogue, torch.float32, {})
    out = dequant_gemm.launch(compiled, template.interpreter_config, x, weight.qweight, weight.scale,
                              weight.zero_point, 4, epilogue.runtime_args([residual], 20, 24))
    want = torch.relu(ops.quantized_linear(x, weight.qweight, weight.scale, weight.zero_point, None, 4)) + residual
    assert out.shape == (20, 24) and out.dtype == torch.float32
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)


def _bad_calls():
    """(kernel module, launch arguments after (compiled, config), error the wrapper raises)."""
    x, q8 = torch.randn(4, 32), torch.zeros(8, 32, dtype=torch.int8)
    scale = torch.ones(8, 2)
    blocks = block_map(torch.randn(8, 32), 16)
    return {
        "w8a16-int4-weight": (dequant_gemm, (x, torch.zeros(8, 16, dtype=torch.uint8), scale, None, 8),
                              r"w8a16_gemm: qweight must be int8 \[8, 32\] on cpu, got uint8 \[8, 16\]"),
        "w4a16-int8-weight": (dequant_gemm, (x, q8, scale, None, 4),
                              r"w4a16_gemm: qweight must be uint8 \[8, 16\] on cpu, got int8 \[8, 32\]"),
        "w8a16-float64-x": (dequant_gemm, (x.double(), q8, scale, None, 8),
                            r"w8a16_gemm: x must be float16, bfloat16 or float32 \[\*, \*\] on cpu, got float64"),
        "w4a16-odd-k": (dequant_gemm, (torch.randn(4, 31), torch.zeros(8, 16, dtype=torch.uint8), scale, None, 4),
                        r"w4a16_gemm: K=31 is odd"),
        "w8a16-groups": (dequant_gemm, (x, q8, torch.ones(8, 3), None, 8), r"w8a16_gemm: scale has 3 groups"),
        "w8a16-zero-shape": (dequant_gemm, (x, q8, scale, torch.zeros(8, 1), 8),
                             r"w8a16_gemm: zero_point must be \[8, 2\] on cpu, got float32 \[8, 1\]"),
        "w8a16-out-shape": (dequant_gemm, (x, q8, scale, None, 8, (), torch.empty(4, 9)), r"out must be .* \[4, 8\]"),
        "dequant-bits": (dequant_gemm, (x, q8, scale, None, 2), r"dequant_gemm serves bits 4 or 8, got bits=2"),
        "gemv-large-m": (gemv, (torch.randn(17, 32), q8, scale, None, 8), r"gemv serves M <= 16"),
        "w8a8-scale": (w8a8, (x, q8, torch.ones(7), None),
                       r"w8a8: weight_scale must be \[8\] on cpu, got float32 \[7\]"),
        "sparse-pattern": (sparse_nm, (x, torch.randn(8, 16), torch.zeros(8, 16, dtype=torch.uint8), None, 2, 3),
                           r"2:3 sparsity does not fit K=32"),
        "block-sparse-map": (block_sparse, (x, torch.randn(8, 32), blocks._replace(columns=blocks.columns.t())),
                             r"block_sparse_gemm: columns must be int32 \[1, \*\]"),
    }


@pytest.mark.parametrize("case", sorted(_bad_calls()))
def test_launch_wrappers_check_their_inputs(case):
    kernel, args, error = _bad_calls()[case]
    with pytest.raises(ValueError, match=error):
        kernel.launch(None, {}, *args)  # the checks run before the kernel or its config is touched


def test_empty_batch_and_leading_dims(cache):
    weight = qformat.quantize_rtn(torch.randn(8, 32), 8)
    fused = FusedLinear(fxc_ops.quantized_linear.default, Epilogue(()), cache, poison_outputs=True)
    x = torch.randn(2, 3, 32)
    got = fused(x, weight.qweight, weight.scale, None, None, 8)
    torch.testing.assert_close(got, ops.quantized_linear(x, weight.qweight, weight.scale, None, None, 8))
    assert fused(torch.randn(0, 32), weight.qweight, weight.scale, None, None, 8).shape == (0, 8)


def test_unsupported_dtype_falls_back_to_torch_and_is_counted(cache):
    weight = qformat.quantize_rtn(torch.randn(8, 32), 8)
    fused = FusedLinear(fxc_ops.quantized_linear.default, Epilogue((Step("relu"),)), cache)
    x = torch.randn(3, 32, dtype=torch.float64)
    got = fused(x, weight.qweight, weight.scale, None, None, 8)
    torch.testing.assert_close(got, torch.relu(ops.quantized_linear(x, weight.qweight, weight.scale, None, None, 8)))
    assert sum(fused.fallbacks.values()) == 1 and "float64" in next(iter(fused.fallbacks))
    assert fused.launches.total() == 0


# -- the paths a hypothesis draw may miss: every scale mode, split-K, ragged K, 2:4 -------------------


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("m", [1, 5])  # BLOCK_M = 1 (CUDA cores) and 16 (tl.dot)
@pytest.mark.parametrize("group,k,block_k,split_k", [
    (None, 96, 32, 1),  # per row, K a multiple of BLOCK_K (EVEN_K: no K mask)
    (None, 102, 32, 3),  # per row, ragged last tile, three K splits (the last one shorter)
    (64, 192, 128, 2),  # per tile: BLOCK_K lowered from 128 to the group's 64
    (8, 48, 32, 1),  # per element: groups of 8 are too small for a tile
])
@pytest.mark.parametrize("symmetric", [True, False])
def test_gemv_scale_modes_split_k_and_ragged_k(cache, bits, m, group, k, block_k, split_k, symmetric):
    weight = qformat.quantize_rtn(torch.randn(37, k), bits, group, symmetric)
    args = (torch.randn(m, k), weight.qweight, weight.scale, weight.zero_point, torch.randn(37), bits)
    config = {"gemv": dict(BLOCK_N=16, BLOCK_K=block_k, SPLIT_K=split_k, num_warps=1, num_stages=1)}
    fused = FusedLinear(fxc_ops.quantized_linear.default, EPILOGUES["relu"], cache, poison_outputs=True,
                        configs=config)
    want = apply_reference(EPILOGUES["relu"], reference(fxc_ops.quantized_linear.default, args), [])
    torch.testing.assert_close(fused(*args), want, rtol=1e-4, atol=1e-4)
    assert fused.launches["gemv"] == 1 and not fused.fallbacks


def test_scale_mode_lowers_block_k_to_fit_a_group():
    modes = tiles.SCALE_MODES
    assert tiles.scale_mode(1, 4096, 256) == (modes["per row"], 256)
    assert tiles.scale_mode(32, 128, 256) == (modes["per tile"], 128)
    assert tiles.scale_mode(32, 128, 64) == (modes["per tile"], 64)
    assert tiles.scale_mode(64, 96, 128) == (modes["per tile"], 32)  # 96 = 3 * 32
    assert tiles.scale_mode(128, 16, 128) == (modes["per element"], 128)  # a 16-column tile is too short
    assert tiles.scale_mode(10, 33, 64) == (modes["per element"], 64)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group,k", [(None, 96), (None, 100), (32, 128), (8, 48)])
def test_dequant_gemm_scale_modes_and_ragged_k(cache, bits, group, k):
    """Per column (EVEN_K and a ragged K), per tile (BLOCK_K 64 lowered to 32) and per element, asymmetric."""
    weight = qformat.quantize_rtn(torch.randn(40, k), bits, group, symmetric=False)
    args = (torch.randn(35, k), weight.qweight, weight.scale, weight.zero_point, None, bits)
    configs = {f"w{bits}a16_gemm": dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=64, GROUP_M=2, num_warps=1, num_stages=1)}
    fused = FusedLinear(fxc_ops.quantized_linear.default, Epilogue(()), cache, poison_outputs=True, configs=configs)
    torch.testing.assert_close(fused(*args), reference(fxc_ops.quantized_linear.default, args), rtol=1e-4, atol=1e-4)
    assert fused.launches[f"w{bits}a16_gemm"] == 1 and not fused.fallbacks


@pytest.mark.parametrize("int8_values", [False, True])
@pytest.mark.parametrize("k", [64, 68])  # the 2:4 path with whole and ragged K tiles
def test_sparse_2_4_path_with_unsorted_indices(cache, int8_values, k):
    """The 2:4 path reads each tile's kept values and indices as one block; indices need not be sorted."""
    values, indices = _pack_nm(torch.randn(37, k), 2, 4)
    values, indices = values.flip(-1).contiguous(), indices.flip(-1).contiguous()  # slot order reversed
    scale = None
    if int8_values:
        quantized = qformat.quantize_rtn(values, 8)
        values, scale = quantized.qweight, quantized.scale
    args = (torch.randn(19, k), values, indices, scale, torch.randn(37), 2, 4)
    _check(cache, fxc_ops.sparse_nm_linear.default, args, "silu-gate")


def test_template_fits_by_arch_and_epilogue():
    w8 = dequant_gemm.TEMPLATES[8]
    big = w8.configs[1]  # 128 x 256 x 64, 8 warps: sm_90 only
    assert not w8.fits(big, 80) and w8.fits(big, 90) and w8.fits(big, None)
    assert w8.configs[0] in w8.configs_for(80) and big not in w8.configs_for(80)
    assert w8.fits(w8.configs[0], 90, epilogue_operands=2)  # 128 x 128 on 8 warps: 64 per thread
    assert not w8.fits(big, 90, epilogue_operands=1)  # 128 per thread and as many again for the operand
