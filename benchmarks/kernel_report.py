"""Static report of every Triton kernel config the picker can choose, compiled offline for a CUDA target
(no GPU needed): registers, spills, shared memory, occupancy, grid, tensor-core instructions and the
instruction mix of the main (K) loop, and the width of every global load of the weight stream.

    python benchmarks/kernel_report.py                   # sm_90 (H100 / H200), bf16, the table
    python benchmarks/kernel_report.py --arch 80         # sm_80 (A100)
    python benchmarks/kernel_report.py --check           # exit 1 when a rule below is broken
    python benchmarks/kernel_report.py --json rows.json  # the rows as JSON (tests/codegen/triton/test_kernel_report.py)
    python benchmarks/kernel_report.py --record          # append the table to benchmarks/RESULTS.md

Cases: each kernel template of codegen/triton/picker.py (`TEMPLATES`) with every config of its autotune
table meant for the target (KernelTemplate.fits: some big tiles are for sm_90 only), rendered as the
picker renders it (compute dtype bf16, or --dtype), its launch recorded from the kernel file's own
wrapper on CPU tensors of a decode shape (gemv: M = 1 and M = 16, N = K = 8192) or a prefill shape (the
GEMM templates: M = 2048, N = K = 8192), with fxc's weight layouts (int8 per channel, int4 in groups of
128 with zero points, 2:4 bf16 values, 64 x 64 block map), then compiled by
benchmarks/kernel_report_compile.py. The config column shows what the wrapper launched (gemv and
w4a16_gemm lower BLOCK_K to fit a group of 128). A wrapper that launches more than one kernel (gemv's
split-K reduction, W8A8's row quantization and float path for rows holding inf / nan) adds a row for each.
Rules (--check, and the CI test): no spills (no local-memory instruction, no stack frame); no weight
stream (`WEIGHT_ARGS`) loaded in pieces narrower than 32 bits; the main loop of every GEMM template
holds tensor-core instructions, wgmma (HGMMA / IGMMA) on sm_90 where Triton can use it (BLOCK_M >= 64,
warps a multiple of 4), else mma.sync (HMMA / IMMA); so does the M = 16 GEMV's (either kind).
Columns: regs per thread, spill instructions, shared memory per block, blocks per SM, occupancy (warps
per SM / 64), CTAs of the grid at the case's shape and waves (CTAs / (blocks per SM * SMs)), the main
loop's tensor-core opcodes, the weight-stream load widths in bits (PTX), main-loop SASS instructions,
and those per weight element a thread handles per iteration (BLOCK_N * BLOCK_K / threads). Reads the
kernel files; writes benchmarks/RESULTS.md with --record, a JSON file with --json.
"""

from __future__ import annotations

import os
import sys

os.environ["TRITON_INTERPRET"] = "0"  # the interpreter's kernels cannot be compiled (before triton's import)

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from kernel_report_compile import SM, KernelStats, LaunchRecorder, compile_launch, toolchain_missing  # noqa: E402

from fxc.codegen.triton.cache import KernelCache  # noqa: E402
from fxc.codegen.triton.epilogue import Epilogue, Step  # noqa: E402
from fxc.codegen.triton.kernels import block_sparse, dequant_gemm, gemv, sparse_nm, w8a8  # noqa: E402
from fxc.codegen.triton.picker import FusedLinear  # noqa: E402

fxc_ops = torch.ops.fxc
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
EPILOGUES = {"none": Epilogue(()), "bias": Epilogue((Step("add", operand=0),)),
             "swiglu": Epilogue((Step("silu"), Step("mul", operand=0), Step("add", operand=1)))}
WEIGHT_ARGS = {"gemv": ("q_ptr",), "w8a16_gemm": ("q_ptr",), "w4a16_gemm": ("q_ptr",), "w8a8_gemm": ("q_ptr",),
               "sparse_nm_gemm": ("values_ptr", "indices_ptr"), "block_sparse_gemm": ("w_ptr",)}
DOT_KERNELS = ("w8a16_gemm", "w4a16_gemm", "w8a8_gemm", "sparse_nm_gemm", "block_sparse_gemm")
WGMMA, MMA = {"HGMMA", "IGMMA"}, {"HMMA", "IMMA"}
DECODE, PREFILL = (8192, 8192), (2048, 8192, 8192)  # (N, K); (M, N, K)
ABBREVIATIONS = {"BLOCK_M": "m", "BLOCK_N": "n", "BLOCK_K": "k", "SPLIT_K": "split", "GROUP_M": "g",
                 "num_warps": "w", "num_stages": "s"}


@dataclass
class Case:
    """One template config at one shape: what the picker would launch."""

    template: object  # KernelTemplate
    variant: str  # e.g. "int4 M=1"
    config: dict
    hooks: dict  # extra template hooks (gemv's load_weight)
    run: object  # run(compiled, config, epilogue_args, dtype): the kernel file's wrapper on empty CPU tensors
    m: int
    n: int


def cases(arch: int | None = None, epilogue_operands: int = 0) -> list[Case]:
    """Every (template, config) the picker can choose on compute capability `arch` (None: every config of
    every table) with an epilogue reading `epilogue_operands` tensors, at the shapes of the module docstring."""
    out = []
    n, k = DECODE
    for bits in (8, 4):
        weights = _weight_only(n, k, bits)
        for m in (1, 16):
            for config in gemv.TEMPLATE.configs:
                run = _runner(gemv.launch, m, k, weights)
                out.append(Case(gemv.TEMPLATE, f"int{bits} M={m}", config, {"load_weight": gemv.load_weight(bits)},
                                run, m, n))
    m, n, k = PREFILL
    for bits in (8, 4):
        template = dequant_gemm.TEMPLATES[bits]
        out += [Case(template, f"int{bits}", c, {}, _runner(dequant_gemm.launch, m, k, _weight_only(n, k, bits)), m, n)
                for c in template.configs]
    w8 = (torch.empty(n, k, dtype=torch.int8), torch.empty(n), None)
    out += [Case(w8a8.TEMPLATE, "dynamic", c, {}, _runner(w8a8.launch, m, k, w8), m, n) for c in w8a8.TEMPLATE.configs]
    kept = k // 2
    nm = (torch.empty(n, kept, dtype=torch.bfloat16), torch.empty(n, kept, dtype=torch.uint8), None, 2, 4)
    out += [Case(sparse_nm.TEMPLATE, "2:4 bf16", c, {}, _runner(sparse_nm.launch, m, k, nm), m, n)
            for c in sparse_nm.TEMPLATE.configs]
    blocks = _checkerboard_map(n, k, 64)
    dense = (torch.empty(n, k, dtype=torch.bfloat16), blocks)
    out += [Case(block_sparse.TEMPLATE, "50% of 64x64", c, {}, _runner(block_sparse.launch, m, k, dense), m, n)
            for c in block_sparse.TEMPLATE.configs]
    fits = lambda template, config: template.fits(config, arch, epilogue_operands) if hasattr(template, "fits") \
        else True  # the templates of an older checkout (PYTHONPATH) have one table for every target
    return [case for case in out if fits(case.template, case.config)]


def _weight_only(n: int, k: int, bits: int) -> tuple:
    if bits == 8:  # one scale per output channel
        return torch.empty(n, k, dtype=torch.int8), torch.empty(n, 1), None, 8
    return torch.empty(n, k // 2, dtype=torch.uint8), torch.empty(n, k // 128), torch.empty(n, k // 128), 4


def _checkerboard_map(n: int, k: int, block: int) -> block_sparse.BlockMap:
    bands, kblocks = n // block, k // block
    nonzero = (torch.arange(bands)[:, None] + torch.arange(kblocks)[None, :]) % 2 == 0
    order = torch.argsort((~nonzero).to(torch.int8), dim=1, stable=True)
    counts = nonzero.sum(dim=1).to(torch.int32)
    return block_sparse.BlockMap(counts, order[:, : int(counts.max())].to(torch.int32).contiguous(), block, 0.5)


def _runner(launch, m: int, k: int, weights: tuple):
    def run(compiled, config, epilogue_args, dtype):
        x = torch.empty(m, k, dtype=dtype)
        out = torch.empty(m, weights[0].shape[0], dtype=dtype)
        launch(compiled, config, x, *weights, epilogue_args=epilogue_args, out=out)

    return run


# -- compiling and checking ----------------------------------------------------------------------


def report(arch: int, dtype: torch.dtype, epilogue_name: str, quick: bool = False,
           progress=lambda text: None, dump: Path | None = None, only: str | None = None) -> list[dict]:
    """One row (a dict) per compiled kernel of every case; with `dump`, each kernel's TTGIR, PTX and SASS
    written there as <kernel>-<variant>-<config>.<ext>."""
    epilogue = EPILOGUES[epilogue_name]
    cache = KernelCache(Path(tempfile.gettempdir()) / "fxc-kernel-report", interpret=False)
    rows, seen = [], {}
    selected = [c for c in cases(arch, epilogue.operand_count)
                if not only or only in f"{c.template.name} {c.variant} {label(c.config)}"]
    if quick:  # the first config of each template and variant
        firsts = {}
        selected = [firsts.setdefault((c.template.name, c.variant), c) for c in selected
                    if (c.template.name, c.variant) not in firsts]
    for case in selected:
        op = fxc_ops.quantized_linear.default  # FusedLinear renders any template; the op only names it
        compiled = FusedLinear(op, epilogue, cache).render_and_load(case.template, epilogue, dtype, case.hooks)
        operands = [torch.empty(case.m, case.n, dtype=dtype) for _ in range(epilogue.operand_count)]
        recorder = LaunchRecorder()
        case.run(recorder, case.config, epilogue.runtime_args(operands, case.m, case.n), dtype)
        for launch in recorder.launches:
            key = (compiled.digest, launch.kernel, repr(sorted(launch.kwargs.items())),
                   tuple(a for a in launch.args if isinstance(a, int)))
            if key not in seen:
                started = time.perf_counter()
                seen[key] = compile_launch(compiled[launch.kernel], launch, arch)
                seconds = time.perf_counter() - started
                progress(f"{launch.kernel} {case.variant} {label(launch.kwargs)}: {seconds:.1f} s")
                if dump:
                    _dump(dump, f"{launch.kernel}-{case.variant}-{label(launch.kwargs)}", seen[key])
            rows.append(row(case, launch, seen[key]))
    return rows


def _dump(folder: Path, name: str, stats: KernelStats) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-=" else "_" for c in name)
    for ext, text in stats.texts.items():
        (folder / f"{stem}.{ext}").write_text(text)


def row(case: Case, launch, stats: KernelStats) -> dict:
    kwargs = launch.kwargs
    threads = 32 * stats.warps
    tile = kwargs.get("BLOCK_N", 0) * kwargs.get("BLOCK_K", 0) if launch.kernel in WEIGHT_ARGS else 0
    loop = stats.mix.loop
    weight_bits = sorted({b for arg in WEIGHT_ARGS.get(launch.kernel, ()) for b in stats.load_widths.get(arg, ())})
    result = dict(
        kernel=launch.kernel, variant=case.variant, config=label(kwargs), arch=stats.arch, m=case.m,
        block_m=kwargs.get("BLOCK_M"), warps=stats.warps, regs=stats.regs, spills=stats.spills,
        shared=stats.shared, blocks_per_sm=stats.blocks_per_sm,
        occupancy=stats.blocks_per_sm * stats.warps / SM[stats.arch]["warps"], ctas=stats.ctas,
        waves=round(stats.waves, 2), loop_tensor=sorted({op.split(".")[0] for op in stats.mix.loop_tensor_ops}),
        loop_tensor_ops=stats.mix.loop_tensor_ops, kernel_tensor=stats.mix.kernel["tensor"], weight_bits=weight_bits,
        load_widths={arg: sorted(bits) for arg, bits in stats.load_widths.items()},
        loop_instructions=loop["instructions"], loop_int=loop["int"],
        instr_per_weight=round(loop["instructions"] / (tile / threads), 2) if tile else None,
    )
    result["violations"] = violations(result)
    return result


def label(kwargs: dict) -> str:
    return " ".join(f"{short}{kwargs[key]}" for key, short in ABBREVIATIONS.items() if key in kwargs)


def expected_tensor(row: dict) -> set[str] | None:
    """The tensor-core opcodes a row's main loop must hold (None: none required): the GEMM templates wgmma
    on sm_90 where Triton can use it, else mma.sync; the M = 16 GEMV either."""
    if row["kernel"] == "gemv" and row["block_m"] == 16:
        return WGMMA | MMA
    if row["kernel"] not in DOT_KERNELS:
        return None
    if row["arch"] >= 90 and row["block_m"] >= 64 and row["warps"] % 4 == 0:
        return WGMMA
    return MMA


def violations(row: dict) -> list[str]:
    """The rules of the module docstring that `row` breaks, as sentences."""
    broken = []
    if row["spills"]:
        broken.append(f"{row['spills']} spill instructions / stack bytes")
    if row["blocks_per_sm"] == 0:
        broken.append(f"{row['shared']} bytes of shared memory do not fit sm_{row['arch']}")
    narrow = [b for b in row["weight_bits"] if b < 32]
    if narrow:
        broken.append(f"weight loaded in {narrow}-bit pieces")
    want = expected_tensor(row)
    if want and not want & set(row["loop_tensor"]):
        broken.append(f"main loop without {'/'.join(sorted(want))} (has {row['loop_tensor'] or 'none'})")
    return broken


def table(rows: list[dict]) -> str:
    header = ("kernel", "variant", "config", "regs", "spill", "smem KiB", "blk/SM", "occ", "CTAs", "waves",
              "loop tensor ops", "weight bits", "loop instr", "instr/w", "rules")
    lines = [(r["kernel"], r["variant"], r["config"], r["regs"], r["spills"], f"{r['shared'] / 1024:.0f}",
              r["blocks_per_sm"], f"{r['occupancy']:.0%}", r["ctas"],
              f"{r['waves']:.2f}" if r["blocks_per_sm"] else "-",
              _tensor_text(r), ",".join(map(str, r["weight_bits"])) or "-", r["loop_instructions"],
              "-" if r["instr_per_weight"] is None else f"{r['instr_per_weight']:.1f}",
              "; ".join(r["violations"]) or "ok") for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    fmt = lambda line: "  ".join(str(c).ljust(w) if i < 3 or i >= 10 else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(line, widths))).rstrip()
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, lines)])


def _tensor_text(row: dict) -> str:
    """`HGMMA.64x128x16 x4`: each tensor-core opcode of the main loop with its first suffix, and its count."""
    return ", ".join(f"{'.'.join(op.split('.')[:2])} x{count}" for op, count in row["loop_tensor_ops"].items()) or "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, choices=sorted(SM), help="CUDA compute capability x10")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="activation / compute dtype")
    parser.add_argument("--epilogue", default="none", choices=sorted(EPILOGUES), help="fused epilogue to render")
    parser.add_argument("--quick", action="store_true", help="the first config of each template and variant")
    parser.add_argument("--only", help="compile only the cases whose kernel, variant or config contains this text")
    parser.add_argument("--check", action="store_true", help="exit 1 when a row breaks a rule")
    parser.add_argument("--json", type=Path, help="write the rows to this JSON file")
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    parser.add_argument("--label", default="", help="words added to the recorded title (which kernels these are)")
    parser.add_argument("--verbose", action="store_true", help="print each compile as it finishes")
    parser.add_argument("--dump", type=Path, help="write each kernel's TTGIR, PTX and SASS to this folder")
    args = parser.parse_args(argv)
    missing = toolchain_missing(args.arch)
    if missing:
        print(f"kernel_report: cannot compile for sm_{args.arch}: {missing}")
        return 2
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")
    started = time.perf_counter()
    rows = report(args.arch, DTYPES[args.dtype], args.epilogue, args.quick,
                  progress=print if args.verbose else lambda text: None, dump=args.dump, only=args.only)
    text = table(rows)
    broken = [r for r in rows if r["violations"]]
    summary = (f"sm_{args.arch}, {args.dtype}, epilogue {args.epilogue}: {len(rows)} kernels, "
               f"{len(broken)} breaking a rule; {time.perf_counter() - started:.0f} s")
    print(text + "\n" + summary)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.record:
        from harness import record

        record(f"Triton kernels compiled offline for sm_{args.arch} ({args.dtype}, epilogue {args.epilogue})"
               + (f": {args.label}" if args.label else ""),
               "python benchmarks/kernel_report.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               text, notes=summary)
    return 1 if args.check and broken else 0


if __name__ == "__main__":
    sys.exit(main())
