"""The picker: which kernel, with which config, serves one fused call of a compressed linear plus its
epilogue. Checking the arguments, allocating and launching is the kernel file's `launch`.

    fused = FusedLinear(torch.ops.fxc.quantized_linear.default, Epilogue((Step("silu"),)), cache)
    y = fused(x, qweight, scale, zero_point, bias, bits)   # the op's arguments, then epilogue operands
    fused.source()                                         # the kernel text the last call ran

Which kernel serves a call (decided here, never in the kernel files):

    fxc.quantized_linear  bits=8  M <= decode_max_m -> kernels/gemv.py (int8 weight load),
                                  else kernels/dequant_gemm.py (template w8a16_gemm)
                          bits=4  M <= decode_max_m -> kernels/gemv.py (int4 weight load),
                                  else kernels/dequant_gemm.py (template w4a16_gemm)
    fxc.int8_linear       kernels/w8a8.py (row quantization kernel + int8 GEMM)
    fxc.sparse_nm_linear  kernels/sparse_nm.py
    aten.linear           kernels/block_sparse.py (the partition sends only weights with many zero blocks;
                          their block map is computed once per weight and kept here)

Per call: the op's own bias becomes the first epilogue step; the kernel's template is rendered for
the epilogue and the compute dtype and loaded through the KernelCache (once per FusedLinear and
rendering); the cache chooses the config (once per kernel text, shapes and dtypes, among the configs
of the template's table meant for the GPU's compute capability and the epilogue's operands:
KernelTemplate.fits); the kernel
file's `launch` writes `out`, which is allocated here in the dtype of the fused chain (NaN-filled
with poison_outputs). Arguments no kernel supports (a dtype, a layout; see `unsupported_reason`)
run through `fallback` (the group's torch graph, or the op's torch reference plus the epilogue) and
are counted in `fallbacks`: slower, never wrong. Kernels compute in float32 under the interpreter
(its bf16 dot is not exact) and in the input's dtype with float32 accumulation on a GPU.
Reads and writes nothing itself (the cache writes kernel files).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import torch
import triton

from fxc.codegen.triton.cache import CompiledKernel, KernelCache
from fxc.codegen.triton.epilogue import Epilogue, Step, apply_reference
from fxc.codegen.triton.kernels import block_sparse, dequant_gemm, gemv, sparse_nm, w8a8
from fxc.codegen.triton.kernels.tiles import FLOAT_DTYPES
from fxc.ir.ops import Int8LinearArgs, QuantizedLinearArgs, SparseNMLinearArgs

fxc_ops = torch.ops.fxc
TEMPLATES = {  # every kernel file's template(s), by name
    template.name: template
    for template in (gemv.TEMPLATE, *dequant_gemm.TEMPLATES.values(), w8a8.TEMPLATE, sparse_nm.TEMPLATE,
                     block_sparse.TEMPLATE)
}
TL_DTYPES = {torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16", torch.float32: "tl.float32"}
LOWERED_OPS = (
    fxc_ops.quantized_linear.default, fxc_ops.int8_linear.default, fxc_ops.sparse_nm_linear.default,
    torch.ops.aten.linear.default,
)
OP_ARITY = {op: len(op._schema.arguments) for op in LOWERED_OPS}
BIAS_INDEX = {op: [a.name for a in op._schema.arguments].index("bias") for op in LOWERED_OPS}


def promoted_dtype(values: list) -> torch.dtype:
    """The dtype torch's type promotion gives an elementwise chain over these tensors."""
    dtype = values[0].dtype
    for value in values[1:]:
        if isinstance(value, torch.Tensor):
            dtype = torch.promote_types(dtype, value.dtype)
    return dtype


def compute_capability(device: torch.device) -> int | None:
    """The CUDA compute capability of `device` as 10 * major + minor (90 for an H100), None off CUDA."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def unsupported_reason(op, args: tuple) -> str | None:
    """Why no kernel serves `op(*args)` (tensors or fake tensors), or None when one does."""
    if op not in LOWERED_OPS:
        return f"no Triton template for {op}"
    x = args[0]
    if x.dtype not in FLOAT_DTYPES:
        return f"input dtype {x.dtype} (templates take float16, bfloat16, float32)"
    if op == fxc_ops.quantized_linear.default:
        _, qweight, scale, zero_point, _, bits = QuantizedLinearArgs(*args)
        expected = torch.int8 if bits == 8 else torch.uint8
        if bits not in (4, 8) or qweight.dtype != expected or qweight.dim() != 2:
            return f"qweight {qweight.dtype} {tuple(qweight.shape)} with bits={bits} is not a qformat layout"
        k = qweight.shape[1] * (2 if bits == 4 else 1)
        if scale.dim() != 2 or scale.shape[0] != qweight.shape[0] or k % scale.shape[1]:
            return f"scale of shape {tuple(scale.shape)} does not give [N, G] groups of K={k}"
        if zero_point is not None and tuple(zero_point.shape) != tuple(scale.shape):
            return f"zero point of shape {tuple(zero_point.shape)} differs from the scale's"
    elif op == fxc_ops.int8_linear.default:
        _, qweight, weight_scale, _, input_scale = Int8LinearArgs(*args)
        if qweight.dtype != torch.int8 or qweight.dim() != 2 or weight_scale.numel() != qweight.shape[0]:
            return f"qweight {qweight.dtype} {tuple(qweight.shape)} / weight scale {tuple(weight_scale.shape)}"
        if input_scale is not None and input_scale.numel() != 1:
            return f"input scale of shape {tuple(input_scale.shape)} (the template takes one per-tensor scale)"
    elif op == torch.ops.aten.linear.default:
        weight = args[1]
        if weight.dim() != 2 or weight.dtype != x.dtype:
            return f"weight {weight.dtype} {tuple(weight.shape)} for an input of {x.dtype}"
    else:
        _, values, indices, scale, _, n_keep, m_group = SparseNMLinearArgs(*args)
        if values.dtype not in (*FLOAT_DTYPES, torch.int8) or indices.dtype != torch.uint8:
            return f"values {values.dtype} / indices {indices.dtype} (templates take float or int8 / uint8)"
        if not 0 < n_keep < m_group or values.shape[1] % n_keep:
            return f"{n_keep}:{m_group} sparsity with {values.shape[1]} kept values per row"
        if scale is not None and scale.numel() != values.shape[0]:
            return f"scale of shape {tuple(scale.shape)} is not per output channel"
    return None


class FusedLinear:
    """A callable graph target: `op(*op_args)` followed by `epilogue`, in one kernel launch."""

    def __init__(self, op, epilogue: Epilogue, cache: KernelCache, name: str = "fused_linear",
                 out_dtype: torch.dtype | None = None, fallback: Callable[..., torch.Tensor] | None = None,
                 decode_max_m: int = gemv.MAX_M, configs: dict[str, dict] | None = None,
                 poison_outputs: bool = False, block: int = 64):
        if op not in LOWERED_OPS:
            raise ValueError(f"FusedLinear lowers {[str(o) for o in LOWERED_OPS]}, not {op}")
        self.op, self.epilogue, self.cache = op, epilogue, cache
        self.__name__ = name
        self.out_dtype = out_dtype
        self.fallback = fallback or self._reference
        self.decode_max_m = min(decode_max_m, gemv.MAX_M)
        self.configs = configs or {}
        self.poison_outputs = poison_outputs
        self.arity = OP_ARITY[op]
        self.launches: Counter[str] = Counter()  # template name -> kernel launches
        self.fallbacks: Counter[str] = Counter()  # reason -> torch runs
        self.last: tuple[str, CompiledKernel, dict] | None = None
        self._compiled: dict[tuple, CompiledKernel] = {}  # (template, epilogue, dtype, hooks) -> kernels
        self.block = block  # aten.linear: the block size of the weight's block map
        self._block_maps: dict[tuple, block_sparse.BlockMap] = {}  # the last weight's

    def __repr__(self) -> str:
        return f"FusedLinear({self.__name__}: {self.op} + {self.epilogue.describe()})"

    def source(self) -> str:
        """The kernel text of the last launch (`render_and_load(...).source` shows one before any run)."""
        return self.last[1].source if self.last else ""

    def __call__(self, *args):
        op_args, operands = args[: self.arity], list(args[self.arity :])
        reason = unsupported_reason(self.op, op_args) or self._runtime_reason(op_args[0], operands)
        if reason:
            self.fallbacks[reason] += 1
            return self.fallback(*args)
        x = op_args[0]
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k)
        n = op_args[1].shape[0]
        out_dtype = self.out_dtype or promoted_dtype([x, *operands])
        make = torch.full if self.poison_outputs else lambda shape, _, **kw: torch.empty(shape, **kw)
        out = make((x2.shape[0], n), float("nan"), dtype=out_dtype, device=x.device)
        if x2.shape[0] > 0:
            self._launch(x2, op_args, operands, out)
        return out.view(*lead, n)

    def _runtime_reason(self, x: torch.Tensor, operands: list) -> str | None:
        tensors = [x, *(o for o in operands if isinstance(o, torch.Tensor))]
        if any(t.dtype not in FLOAT_DTYPES for t in tensors[1:]):
            return "an epilogue operand is not float16/bfloat16/float32"
        if not self.cache.interpret and any(not t.is_cuda for t in tensors):
            return "a CPU tensor outside the interpreter"
        return None

    # -- picking and launching ------------------------------------------------------------------

    def _launch(self, x: torch.Tensor, op_args: tuple, operands: list, out: torch.Tensor) -> None:
        m, k = x.shape
        n = out.shape[1]
        epilogue, operands = self._with_bias(op_args[BIAS_INDEX[self.op]], operands)
        kernel, template, hooks, weights, options = self._pick(x, op_args)
        compiled = self.render_and_load(template, epilogue, x.dtype, hooks)
        epilogue_args = epilogue.runtime_args(operands, m, n)
        run = lambda config: kernel.launch(compiled, config, x, *weights, epilogue_args=epilogue_args, out=out,
                                           **options)
        key = (template.name, triton.next_power_of_2(m), n, k, str(x.dtype), str(out.dtype))
        arch, operands_read = compute_capability(x.device), sum(1 for o in operands if isinstance(o, torch.Tensor))
        config = self.cache.choose(compiled, key, template, run, valid=lambda c: template.fits(c, arch, operands_read),
                                   forced=self.configs.get(template.name))
        run(config)
        self.launches[template.name] += 1
        self.last = (template.name, compiled, config)

    def _with_bias(self, bias, operands: list) -> tuple[Epilogue, list]:
        if bias is None:
            return self.epilogue, operands
        shifted = tuple(replace(s, operand=s.operand + 1) if s.operand is not None else s for s in self.epilogue.steps)
        return Epilogue((Step("add", operand=0), *shifted)), [bias, *operands]

    def _pick(self, x: torch.Tensor, op_args: tuple):
        """(kernel module, template, its extra template hooks, its launch arguments after x, launch keywords)."""
        if self.op == fxc_ops.quantized_linear.default:
            _, qweight, scale, zero_point, _, bits = QuantizedLinearArgs(*op_args)
            weights = (qweight, scale, zero_point, bits)
            if x.shape[0] <= self.decode_max_m:
                return gemv, gemv.TEMPLATE, {"load_weight": gemv.load_weight(bits)}, weights, {}
            return dequant_gemm, dequant_gemm.TEMPLATES[bits], {}, weights, {}
        if self.op == fxc_ops.int8_linear.default:
            _, qweight, weight_scale, _, input_scale = Int8LinearArgs(*op_args)
            return w8a8, w8a8.TEMPLATE, {}, (qweight, weight_scale, input_scale), {"interpret": self.cache.interpret}
        if self.op == torch.ops.aten.linear.default:
            return block_sparse, block_sparse.TEMPLATE, {}, (op_args[1], self._block_map(op_args[1])), {}
        _, values, indices, scale, _, n_keep, m_group = SparseNMLinearArgs(*op_args)
        return sparse_nm, sparse_nm.TEMPLATE, {}, (values, indices, scale, n_keep, m_group), {}

    def _block_map(self, weight: torch.Tensor) -> block_sparse.BlockMap:
        """The weight's block map, recomputed when the weight changes (another tensor, or written in place)."""
        key = (weight.data_ptr(), weight._version, self.block)
        if key not in self._block_maps:
            self._block_maps = {key: block_sparse.block_map(weight, self.block)}
        return self._block_maps[key]

    def render_and_load(self, template, epilogue: Epilogue, x_dtype: torch.dtype, extra_hooks: dict) -> CompiledKernel:
        """The kernels of `template` filled in for this epilogue and dtype (rendered once per FusedLinear)."""
        key = (template.name, epilogue, x_dtype, tuple(sorted(extra_hooks.items())))
        if key not in self._compiled:
            self._compiled[key] = self._render_and_load(template, epilogue, x_dtype, extra_hooks)
        return self._compiled[key]

    def _render_and_load(self, template, epilogue: Epilogue, x_dtype: torch.dtype, extra_hooks: dict) -> CompiledKernel:
        compute = "tl.float32" if self.cache.interpret else TL_DTYPES[x_dtype]
        hooks = {
            "epilogue_params": epilogue.params(),
            "epilogue": epilogue.code(),
            "compute_dtype": compute,
            "dot_precision": '"ieee"' if compute == "tl.float32" else "None",
            **extra_hooks,
        }
        hooks = {name: text for name, text in hooks.items() if name in template.hooks}
        return self.cache.load(template.render(**hooks), template.kernels)

    def _reference(self, *args) -> torch.Tensor:
        op_args, operands = args[: self.arity], list(args[self.arity :])
        y = self.op(*op_args)
        return apply_reference(self.epilogue, y, operands).to(self.out_dtype or y.dtype)
