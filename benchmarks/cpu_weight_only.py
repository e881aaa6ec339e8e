"""Weight-only int8 / int4 linear on the CPU, torch backend: fp32 F.linear against the old fast path
(whole or tiled dequantization per call, freshly allocated) and the new one
(codegen/torch/weight_only.py: the AMX-int8 plane kernel where the CPU has one, else int8 planes
via torch._int_mm for few rows and scratch tiles + addmm otherwise), side by side, interleaved medians.

    nice -n 10 python benchmarks/cpu_weight_only.py --threads 1 --repeats 9 [--model]

Layers: SmolLM2-135M's shapes (q/o 576x576, gate/up 1536x576, down 576x1536), each timed over `--layers`
distinct weights per call round (as a model's 30 layers are, so decode reads weights that are not all
cache-hot). `--model`: also the whole SmolLM2 at 1x1 and 1x512 tokens, fp32 eager vs quantize{bits=8}
on the old and the new kernels, and quantize{bits=4} and {bits=4,group-size=64} on the new ones.
Ratios are fp32 time / variant time (>1: faster than fp32). Appends to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F
from cpu_backends import interleaved_ms
from harness import record, this_command

from fxc.codegen.torch import weight_only
from fxc.ir import qformat
from fxc.ir.ops import unpacked_columns

SHAPES = [(576, 576), (1536, 576), (576, 1536)]  # [N, K]: q/o, gate/up, down
SCHEMES = {"w8": (8, None, True), "w4": (4, None, True), "w4g64 asym": (4, 64, False)}
OLD_TILE_BYTES = 2 << 20


def old_dequantized_linear(x, qweight, scale, zero_point, bias, bits):
    """The torch backend's weight-only path before this change (commit 4f756af), for comparison."""
    outputs, columns = qweight.shape[0], unpacked_columns(qweight, bits)
    post_scale = bits == 8 and zero_point is None and scale.shape[-1] == 1
    rows = x.reshape(-1, columns)

    def weight_tile(n0, n1):
        if post_scale:
            return qweight[n0:n1].to(x.dtype)
        zero = zero_point[n0:n1] if zero_point is not None else None
        return qformat.dequantize(qweight[n0:n1], scale[n0:n1], zero, bits).to(x.dtype)

    tile = max(OLD_TILE_BYTES // (4 * columns), 1)
    if tile >= outputs:
        y = rows @ weight_tile(0, outputs).t()
    else:
        y = rows.new_empty(rows.shape[0], outputs)
        for n0 in range(0, outputs, tile):
            n1 = min(n0 + tile, outputs)
            torch.mm(rows, weight_tile(n0, n1).t(), out=y[:, n0:n1])
    if post_scale:
        y.mul_(scale.to(y.dtype).reshape(1, -1))
    if bias is not None:
        y.add_(bias.to(y.dtype))
    return y.reshape(*x.shape[:-1], outputs)


def layer_rows(tokens_list: list[int], layers: int, repeats: int, schemes: list[str]) -> list[dict]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    for n, k in SHAPES:
        weights = [torch.randn(n, k, generator=generator) * 0.05 for _ in range(layers)]
        biases = [torch.randn(n, generator=generator) for _ in range(layers)]
        quantized = {s: [qformat.quantize_rtn(w, *SCHEMES[s]) for w in weights] for s in schemes}
        for tokens in tokens_list:
            x = torch.randn(tokens, k, generator=generator)
            count = layers if tokens <= 16 else max(2, layers // 10)  # prefill is compute-bound
            ms = interleaved_ms(layer_candidates(x, weights[:count], biases, quantized), repeats)
            errors = {}
            for s in schemes:
                q = quantized[s][0]
                want = torch.ops.fxc.quantized_linear(x, q.qweight, q.scale, q.zero_point, biases[0], q.bits)
                got = weight_only.weight_only_linear(x, q.qweight, q.scale, q.zero_point, biases[0], q.bits)
                errors[s] = ((got - want).norm() / want.norm()).item()
            rows.append({"layer": f"{n}x{k}", "tokens": tokens, "fp32_ms": ms["fp32"] / count,
                         **{name: ms["fp32"] / value for name, value in ms.items() if name != "fp32"},
                         **{f"{s} err": e for s, e in errors.items()}})
            print(rows[-1], flush=True)
    return rows


def layer_candidates(x, weights, biases, quantized) -> dict:
    """One call round per candidate: every distinct weight once."""
    def fp32():
        return [F.linear(x, w, b) for w, b in zip(weights, biases)]

    def quantized_round(fn, qs):
        return lambda: [fn(x, q.qweight, q.scale, q.zero_point, b, q.bits) for q, b in zip(qs[:len(weights)], biases)]

    candidates = {"fp32": fp32}
    for s, qs in quantized.items():
        candidates[f"{s} old"] = quantized_round(old_dequantized_linear, qs)
        candidates[f"{s} new"] = quantized_round(weight_only.weight_only_linear, qs)
    return candidates


def layer_table(rows: list[dict], schemes: list[str]) -> str:
    names = [f"{s} {label}" for s in schemes for label in ("old", "new")]
    head = f"{'layer [N x K]':<14}{'tokens':>7}{'fp32 ms':>9}" + "".join(f"{n:>17}" for n in names)
    head += "".join(f"{s + ' new err':>20}" for s in schemes)
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r['layer']:<14}{r['tokens']:>7}{r['fp32_ms']:>9.3f}" + "".join(f"{r[n]:>16.2f}x" for n in names)
        lines.append(line + "".join(f"{r[s + ' err']:>20.1e}" for s in schemes))
    return "\n".join(lines)


def candidate_rows(tokens_list: list[int], layers: int, repeats: int) -> list[dict]:
    """torch's own CPU weight-only kernels (float32 activations) against fp32 and the new path."""
    rows = []
    generator = torch.Generator().manual_seed(0)
    for n, k in SHAPES[:2]:
        weights = [torch.randn(n, k, generator=generator) * 0.05 for _ in range(layers)]
        w8 = [qformat.quantize_rtn(w, 8) for w in weights]
        w4 = [qformat.quantize_rtn(w, 4, 64, False) for w in weights]
        int4_packed = [torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            qformat.unpack_int4(q.qweight).to(torch.int32) + 8, 1) for q in w4]  # tinygemm: (u - 8) * s + z
        int4_scales = [torch.stack([q.scale, -q.zero_point * q.scale], -1).transpose(0, 1).contiguous() for q in w4]
        for tokens in tokens_list:
            x = torch.randn(tokens, k, generator=generator)
            count = layers if tokens <= 16 else 2
            candidates = aten_candidates(x, weights[:count], w8, w4, int4_packed, int4_scales)
            ms = interleaved_ms(candidates, repeats)
            rows.append({"layer": f"{n}x{k}", "tokens": tokens, "fp32_ms": ms["fp32"] / count,
                         **{name: ms["fp32"] / value for name, value in ms.items() if name != "fp32"}})
            print(rows[-1], flush=True)
    return rows


def aten_candidates(x, weights, w8, w4, int4_packed, int4_scales) -> dict:
    """One call round per candidate over the distinct weights."""
    new, aten = weight_only.weight_only_linear, torch.ops.aten
    count = len(weights)

    def each(fn):
        return lambda: [fn(i) for i in range(count)]

    return {
        "fp32": each(lambda i: F.linear(x, weights[i])),
        "w8 new": each(lambda i: new(x, w8[i].qweight, w8[i].scale, None, None, 8)),
        "w8 aten._weight_int8pack_mm": each(lambda i: aten._weight_int8pack_mm(x, w8[i].qweight,
                                                                                w8[i].scale.reshape(-1))),
        "w4g64 new": each(lambda i: new(x, w4[i].qweight, w4[i].scale, w4[i].zero_point, None, 4)),
        "w4g64 aten._weight_int4pack_mm": each(lambda i: aten._weight_int4pack_mm_for_cpu(x, int4_packed[i], 64,
                                                                                            int4_scales[i])),
    }


def candidate_table(rows: list[dict]) -> str:
    names = [name for name in rows[0] if name not in ("layer", "tokens", "fp32_ms")]
    head = f"{'layer [N x K]':<14}{'tokens':>7}{'fp32 ms':>9}" + "".join(f"{n:>33}" for n in names)
    lines = [head, "-" * len(head)]
    for r in rows:
        ratios = "".join(f"{r[n]:>32.2f}x" for n in names)
        lines.append(f"{r['layer']:<14}{r['tokens']:>7}{r['fp32_ms']:>9.3f}" + ratios)
    return "\n".join(lines)


def model_rows(tokens_list: list[int], repeats: int) -> list[dict]:
    import fxc
    from fxc.eval.realdata import load_smollm2

    model, _ = load_smollm2()
    rows = []
    for tokens in tokens_list:
        ids = torch.randint(100, 40000, (1, tokens), generator=torch.Generator().manual_seed(0))
        traced = fxc.trace(model, (ids,))
        new = fxc.compile(traced, passes="quantize{bits=8}", example_inputs=(ids,), backend="torch")
        old_graph = new.runner.graph.__deepcopy__()  # the same graph, weight-only nodes on the old kernel
        for node in list(old_graph.nodes):
            if node.target is weight_only.weight_only_linear:
                node.target, node.args = old_dequantized_linear, node.args[:6]
        for node in list(old_graph.nodes):
            if node.target is weight_only.shared_planes:
                old_graph.erase_node(node)
        old = torch.fx.GraphModule(new.runner, old_graph)
        w4 = {name: fxc.compile(traced, passes=p, example_inputs=(ids,), backend="torch")
              for name, p in (("w4", "quantize{bits=4}"), ("w4g64", "quantize{bits=4,group-size=64}"))}
        with torch.no_grad():
            want = new.graph(ids).logits  # the reference ops
            error = ((new(ids).logits - want).norm() / want.norm()).item()
            ms = interleaved_ms({"fp32 eager": partial(model, ids), "w8 old": partial(old, ids),
                                 "w8 new": partial(new, ids)} | {n: partial(m, ids) for n, m in w4.items()}, repeats)
        rows.append({"tokens": tokens, "fp32_ms": ms["fp32 eager"], "old": ms["fp32 eager"] / ms["w8 old"],
                     "new": ms["fp32 eager"] / ms["w8 new"], "w4": ms["fp32 eager"] / ms["w4"],
                     "w4g64": ms["fp32 eager"] / ms["w4g64"], "err": error})
        print(rows[-1], flush=True)
    return rows


def model_table(rows: list[dict]) -> str:
    head = (f"{'SmolLM2-135M (lm_head fp32)':<32}{'fp32 ms':>9}{'w8 old':>9}{'w8 new':>9}{'w4':>9}{'w4g64':>9}"
            f"{'w8 new vs reference op':>24}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{'1 x ' + str(r['tokens']) + ' tokens':<32}{r['fp32_ms']:>9.1f}{r['old']:>8.2f}x"
                     f"{r['new']:>8.2f}x{r['w4']:>8.2f}x{r['w4g64']:>8.2f}x{r['err']:>24.1e}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--layers", type=int, default=30, help="distinct weights per shape (decode rounds)")
    parser.add_argument("--tokens", default="1,512")
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--model", action="store_true", help="also the whole SmolLM2 at 1x1 and 1x512")
    parser.add_argument("--model-only", action="store_true")
    parser.add_argument("--candidates", action="store_true",
                        help="only torch's own kernels (_weight_int8pack_mm, _weight_int4pack_mm_for_cpu) vs new")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokens = [int(t) for t in args.tokens.split(",")]
    schemes = args.schemes.split(",")
    title = f"weight-only int8/int4 linear, CPU torch backend: fp32 / variant time, {args.threads} thread(s)"
    if args.candidates:
        table = candidate_table(candidate_rows(tokens, args.layers, args.repeats))
        record(f"weight-only candidates: torch's CPU kernels with float32 activations, fp32 / variant time, "
               f"{args.threads} thread(s) (median of {args.repeats} interleaved)", this_command(), table,
               "Both aten kernels take float32 activations on the CPU but run 2-100x slower than fp32 here.")
        return
    if not args.model_only:
        table = layer_table(layer_rows(tokens, args.layers, args.repeats, schemes), schemes)
        record(title + f" (median of {args.repeats} interleaved)", this_command(), table,
               "Ratios >1 are faster than fp32 F.linear (with bias) on the same inputs; err: new vs the reference op.")
    if args.model or args.model_only:
        table = model_table(model_rows(tokens, args.repeats))
        record(f"SmolLM2 weight-only int8, whole model, CPU torch backend, {args.threads} thread(s)"
               f" (median of {args.repeats} interleaved)", this_command(), table,
               "Ratios: fp32 eager time / variant time. err: new kernels vs the graph's reference ops.")


if __name__ == "__main__":
    main()
