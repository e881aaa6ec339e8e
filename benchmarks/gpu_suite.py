"""GPU suite for backend="triton": correctness first, then timings against torch bf16 (cuBLAS).

    python benchmarks/gpu_suite.py                        # on a GPU: checks, timings, targets (< 5 min on an H200)
    python benchmarks/gpu_suite.py --record               # ... and append the tables to benchmarks/RESULTS.md
    python benchmarks/gpu_suite.py --interpret --small    # on the CPU: the correctness part in Triton's interpreter
    python benchmarks/gpu_suite.py --quick                # a short lease: 2 configs per template, K = N = 4096

On a bare, offline GPU machine where `pip install -e .` cannot build, make fxc importable by hand (fxc.passes
and fxc.codegen live in passes/ and codegen/): `mkdir /tmp/site && cp -r fxc /tmp/site/ && ln -s $PWD/passes
/tmp/site/fxc/passes && ln -s $PWD/codegen /tmp/site/fxc/codegen && PYTHONPATH=/tmp/site python
benchmarks/gpu_suite.py` (not from a folder holding fxc/ as the current directory of `python -c`).

Schemes: benchmarks/gpu_suite_cases.py (int8 / int4 weight-only, W8A8, 2:4 sparse, 50% block-sparse).

1. Correctness (the same checks as tests/codegen, on the device): every config of every template's
   autotune table at ragged shapes (M = 1, 7, 33; N = 1000, K = 1056 on a GPU), then float16 /
   bfloat16 / float32 inputs with a fused SwiGLU-gate + residual epilogue. Outputs are poisoned
   with NaN; each result is compared with the op's torch reference in float32 (relative error).
2. Timings (GPU only): median of triton.testing.do_bench_cudagraph for M = 1, 16, 2048 and K = N in {4096,
   8192} (W8A8 also at 8192^3) against torch bf16 F.linear, with achieved TB/s and TFLOP/s next to
   the measured copy bandwidth and bf16 matmul rate; the issue's targets are marked, and torchao /
   Inductor kernels for the same scheme are timed where installed (benchmarks/gpu_suite_peers.py).
Exit status 1 when a correctness check fails. Reads nothing; --record appends to RESULTS.md.
"""

from __future__ import annotations

import os
import sys

if "--interpret" in sys.argv:  # Triton reads this when it is imported, so before any import below
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from gpu_suite_cases import SCHEMES, make_case, reference  # noqa: E402

from fxc.codegen.triton.cache import KernelCache, interpreter_active, time_on_gpu  # noqa: E402
from fxc.codegen.triton.epilogue import Epilogue, Step, apply_reference  # noqa: E402
from fxc.codegen.triton.kernels import gemv  # noqa: E402
from fxc.codegen.triton.picker import TEMPLATES, FusedLinear  # noqa: E402
from fxc.codegen.triton.template import config_label  # noqa: E402

NO_EPILOGUE = Epilogue(())
SWIGLU_RESIDUAL = Epilogue((Step("silu"), Step("mul", operand=0), Step("add", operand=1)))
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}  # relative Frobenius error
TARGETS = {("w8a16", 1): 1.8, ("w4a16", 1): 3.0, ("w8a8", 8192): 1.6,  # (scheme, M) -> speed-up over bf16
           **{("block50", m): 1.5 for m in (1, 16, 2048)}}
TEMPLATE_OF = {"w8a16": "w8a16_gemm", "w4a16": "w4a16_gemm", "w8a8": "w8a8", "sparse24": "sparse_nm_gemm",
               "block50": "block_sparse_gemm"}


def table(header: tuple, rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(c).rjust(w) for c, w in zip(row, widths))
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, rows)])


def check(case, x, epilogue, cache, configs=None) -> tuple:
    """One poisoned launch against the float32 reference: (template, config, relative error, ok). A forced
    config that does not fit this GPU (shared memory) is reported as skipped, as autotuning skips it."""
    from triton.runtime.errors import OutOfResources

    try:
        return _check(case, x, epilogue, cache, configs)
    except OutOfResources as error:
        template, config = next(iter(configs.items())) if configs else ("?", {})
        return template, config_label(config) + f" skipped: {str(error)[:60]}", float("nan"), True


def _check(case, x, epilogue, cache, configs=None) -> tuple:
    operands = [torch.randn(x.shape[0], case.weights[0].shape[0], device=x.device, dtype=x.dtype)
                for _ in range(epilogue.operand_count)]
    fused = FusedLinear(case.op, epilogue, cache, poison_outputs=True, configs=configs)
    got = fused(*case.args(x), *operands).float()
    want = apply_reference(epilogue, reference(case, x), [o.float() for o in operands])
    error = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
    template, _, config = fused.last if fused.last else ("torch fallback", None, {})
    return template, config_label(config), error, error <= TOLERANCE[x.dtype]  # NaN (unwritten) fails


def correctness(device: str, small: bool, cache: KernelCache, quick: bool = False) -> tuple[str, bool]:
    n, k = (40, 64) if small else (1000, 1056)
    rows = []
    for scheme in SCHEMES:  # 1. every config of every template's table, bf16 (float32 in the interpreter)
        dtype = torch.float32 if small else torch.bfloat16
        case = make_case(scheme, n, k, device, group_size=32, dtype=dtype)
        for m in (1, 7, 33) if scheme in ("w8a16", "w4a16") else (1, 33):
            template = "gemv" if m <= gemv.MAX_M and scheme in ("w8a16", "w4a16") else TEMPLATE_OF[scheme]
            table_configs = _template(template).configs
            chosen = table_configs[:2] if (quick or (m == 1 and template == "gemv")) else table_configs
            for config in chosen:
                x = torch.randn(m, k, device=device, dtype=dtype)
                rows.append((scheme, str(dtype)[6:], m, n, k, *check(case, x, NO_EPILOGUE, cache, {template: config})))
    dtypes = (torch.bfloat16, torch.float16, torch.float32)
    dtypes = (torch.float32,) if small else dtypes[:1] if quick else dtypes
    for scheme in SCHEMES:  # 2. dtypes and the fused epilogue, the table's first config
        for dtype in dtypes:
            case = make_case(scheme, n, k, device, group_size=32, dtype=dtype)
            for m in (1, 16, 300):
                x = torch.randn(m, k, device=device, dtype=dtype)
                rows.append((scheme, str(dtype)[6:] + "+swiglu", m, n, k, *check(case, x, SWIGLU_RESIDUAL, cache)))
    text = table(("scheme", "dtype", "M", "N", "K", "template", "config", "rel err", "ok"),
                 [(*r[:7], f"{r[7]:.1e}", ("ok" if r[8] else "FAIL") if r[7] == r[7] else "skip") for r in rows])
    return text, all(r[8] for r in rows)


def _template(name: str):
    """The KernelTemplate named `name` (one per kernel file in codegen/triton/kernels/)."""
    return TEMPLATES[name]


def bench(fn) -> float:
    """Median milliseconds of fn replayed from a CUDA graph, so host launch overhead (Python, Triton's
    launcher) is not counted, for the baseline and the kernels alike (the triton backend's own
    autotuner times the same way)."""
    return time_on_gpu(fn)


def peaks(device: str) -> tuple[float, float]:
    """(copy bandwidth TB/s, bf16 matmul TFLOP/s) measured on this GPU."""
    src = torch.empty(2**30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_tbs = 2 * src.numel() / (bench(lambda: dst.copy_(src)) * 1e-3) / 1e12
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    flops = 2 * 8192**3 / (bench(lambda: a @ a) * 1e-3) / 1e12
    return copy_tbs, flops


def timings(device: str, cache: KernelCache, budget_s: float, started: float, quick: bool = False) -> str:
    import gpu_suite_peers

    copy_tbs, bf16_tflops = peaks(device)
    rows = []
    sizes = (4096,) if quick else (4096, 8192)
    shapes = [(m, d, d) for d in sizes for m in (1, 16, 2048)] + [(8192, 8192, 8192)]
    for m, n, k in shapes:
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        dense = torch.randn(n, k, device=device, dtype=torch.bfloat16)
        t_bf16 = bench(lambda x=x, dense=dense: torch.nn.functional.linear(x, dense))
        baseline_rates = _rates(m, n, k, dense.numel() * 2, t_bf16)
        rows.append(("bf16 cuBLAS", m, n, k, f"{t_bf16 * 1e3:.1f}", "1.00", *baseline_rates, ""))
        print(*rows[-1], flush=True)
        for scheme in SCHEMES if m != 8192 else ("w8a8",):
            if time.perf_counter() - started > budget_s:
                rows.append((scheme, m, n, k, "skipped: time budget", "", "", "", ""))
                continue
            case = make_case(scheme, n, k, device)
            fused = FusedLinear(case.op, NO_EPILOGUE, cache)
            args = case.args(x)
            fused(*args)  # autotunes once for this shape
            t = bench(lambda fused=fused, args=args: fused(*args))
            target = TARGETS.get((scheme, m))
            mark = "" if target is None else f"target {target}x: {'met' if t_bf16 / t >= target else 'MISSED'}"
            rows.append((f"{scheme} ({fused.last[0]})", m, n, k, f"{t * 1e3:.1f}", f"{t_bf16 / t:.2f}",
                         *_rates(m, n, k, case.weight_bytes, t), mark))
            print(*rows[-1], flush=True)
            if quick:
                continue
            for peer, t_peer in gpu_suite_peers.times(scheme, case, x, bench):
                rows.append((f"  {peer}", m, n, k, f"{t_peer * 1e3:.1f}" if t_peer else "n/a", f"{t_bf16 / t_peer:.2f}"
                             if t_peer else "", "", "", f"fxc {t_peer / t:.2f}x faster" if t_peer else ""))
    head = f"copy bandwidth {copy_tbs:.2f} TB/s, bf16 matmul {bf16_tflops:.0f} TFLOP/s (8192^3)"
    return head + "\n" + table(("kernel", "M", "N", "K", "us", "vs bf16", "TB/s", "TFLOP/s", "note"), rows)


def _rates(m, n, k, weight_bytes, ms) -> tuple[str, str]:
    seconds = ms * 1e-3
    moved = weight_bytes + 2 * m * k + 2 * m * n
    return f"{moved / seconds / 1e12:.2f}", f"{2 * m * n * k / seconds / 1e12:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interpret", action="store_true", help="run in Triton's interpreter on the CPU")
    parser.add_argument("--small", action="store_true", help="tiny shapes; correctness only")
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds after which timings are skipped")
    parser.add_argument("--quick", action="store_true", help="a short lease: two configs per template, bf16 only, "
                        "K = N = 4096 (and W8A8 at 8192^3), no peers")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    interpret = interpreter_active()
    if args.interpret and not interpret:
        print("--interpret: TRITON_INTERPRET=1 must be set before triton is imported; run the script directly")
        return 2
    if not interpret and not torch.cuda.is_available():
        print("no CUDA GPU: run with --interpret --small for the correctness part on the CPU")
        return 2
    device = "cpu" if interpret else "cuda"
    cache = KernelCache(interpret=interpret, autotune=False)
    text, ok = correctness(device, args.small or interpret, cache, args.quick)
    print(f"# correctness ({'interpreter' if interpret else torch.cuda.get_device_name()})\n{text}\n")
    sections = [("correctness", text)]
    if ok and not interpret and not args.small:
        timing = timings(device, KernelCache(interpret=False, autotune=True), args.budget, started, args.quick)
        print(f"# timings\n{timing}\n")
        sections.append(("timings", timing))
    print(f"total {time.perf_counter() - started:.0f} s; correctness {'ok' if ok else 'FAILED'}")
    if args.record:
        _record(sections, " ".join(["python benchmarks/gpu_suite.py", *(argv if argv is not None else sys.argv[1:])]))
    return 0 if ok else 1


def _record(sections, command: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = f"{platform.machine()} CPU, {os.cpu_count()} cores"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{cpu}, no GPU (Triton interpreter)"
    body = "".join(f"\n{name}:\n```\n{text}\n```\n" for name, text in sections)
    if len(sections) == 1:
        body += "\nTimings not run: no GPU (correctness part only, in Triton's interpreter on the CPU).\n"
    section = (f"\n## Triton backend GPU suite\n\n- date: {datetime.date.today().isoformat()}\n- commit: {commit}\n"
               f"- machine: {gpu}, torch {torch.__version__}\n- command: `{command}`\n{body}")
    with (Path(__file__).parent / "RESULTS.md").open("a") as f:
        f.write(section)


if __name__ == "__main__":
    sys.exit(main())
