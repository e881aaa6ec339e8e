"""GPU suite for backend="triton": correctness first, then timings against torch bf16 (cuBLAS).

    python benchmarks/gpu_suite.py --record               # on a GPU: everything, appended to benchmarks/RESULTS.md
    python benchmarks/gpu_suite.py --quick --record       # a short lease: fewer configs and shapes, no peers
    python benchmarks/gpu_suite.py --dry-run              # on the CPU: all of it in Triton's interpreter, tiny shapes
    python benchmarks/gpu_suite.py --interpret --small    # on the CPU: the correctness part only

On a bare, offline GPU machine where `pip install -e .` cannot build, make fxc importable by hand (fxc.passes
and fxc.codegen live in passes/ and codegen/): `mkdir /tmp/site && cp -r fxc /tmp/site/ && ln -s $PWD/passes
/tmp/site/fxc/passes && ln -s $PWD/codegen /tmp/site/fxc/codegen && PYTHONPATH=/tmp/site python
benchmarks/gpu_suite.py` (not from a folder holding fxc/ as the current directory of `python -c`).

Schemes: benchmarks/gpu_suite_cases.py (int8 / int4 weight-only, W8A8, 2:4 sparse, 50% block-sparse).

1. Correctness (the same checks as tests/codegen, on the device): every config of every template's
   autotune table at ragged shapes (M = 1, 7, 33; N = 1000, K = 1056 on a GPU), then float16 /
   bfloat16 / float32 inputs with a fused SwiGLU-gate + residual epilogue. Outputs are poisoned
   with NaN; each result is compared with the op's torch reference in float32 (relative error).
2. Timings (benchmarks/gpu_suite_timing.py): CUDA-graph replay medians at M = 1, 16, 2048 for N = K = 8192
   and the MLP shapes 4096 -> 11008 / 11008 -> 4096 (W8A8 also at 8192^3) against torch bf16 F.linear,
   weights rotated through enough copies to stay out of L2, each row with its roofline limit (bytes over
   the measured copy bandwidth, FLOPs over the measured bf16 / int8 matmul rate) and the issue's targets;
   torchao / Inductor / torch 2:4 / torch BSR kernels for the same scheme where installed
   (benchmarks/gpu_suite_peers.py).
3. A decode step (benchmarks/gpu_suite_model.py): the decoder layers of a random Llama-3.2-1B-shaped model,
   one token, torch bf16 against fxc.compile(..., backend="triton") per scheme (int8 / int4 weight-only,
   W8A8).
--dry-run runs 2 and 3 too, in the interpreter at tiny shapes, timed by wall clock: it checks the code
path, its numbers mean nothing.
Exit status 1 when a correctness check fails. Reads nothing; --record appends to RESULTS.md.
"""

from __future__ import annotations

import os
import sys

if "--interpret" in sys.argv or "--dry-run" in sys.argv:  # Triton reads this when imported: before any import below
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from gpu_suite_cases import SCHEMES, make_case, reference  # noqa: E402
from gpu_suite_model import decode_step  # noqa: E402
from gpu_suite_timing import DRY_SHAPES, QUICK_SHAPES, SHAPES, Bench, table, timings  # noqa: E402

from fxc.codegen.triton.cache import KernelCache, interpreter_active, time_on_gpu  # noqa: E402
from fxc.codegen.triton.epilogue import Epilogue, Step, apply_reference  # noqa: E402
from fxc.codegen.triton.kernels import gemv  # noqa: E402
from fxc.codegen.triton.picker import TEMPLATES, FusedLinear  # noqa: E402
from fxc.codegen.triton.template import config_label  # noqa: E402

NO_EPILOGUE = Epilogue(())
SWIGLU_RESIDUAL = Epilogue((Step("silu"), Step("mul", operand=0), Step("add", operand=1)))
QUICK_CONFIGS = 4  # --quick: autotune the first 4 configs of each template's table (each one timed is a compile)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}  # relative Frobenius error
TEMPLATE_OF = {"w8a16": "w8a16_gemm", "w4a16": "w4a16_gemm", "w8a8": "w8a8", "sparse24": "sparse_nm_gemm",
               "block50": "block_sparse_gemm"}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interpret", action="store_true", help="run in Triton's interpreter on the CPU")
    parser.add_argument("--small", action="store_true", help="tiny shapes; correctness only")
    parser.add_argument("--dry-run", action="store_true", help="everything, timings included, in the interpreter "
                        "on the CPU at tiny shapes (wall-clock numbers, meaningless): checks the script end to end")
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds after which timings are skipped")
    parser.add_argument("--quick", action="store_true", help="a short lease: correctness of two configs per "
                        "template in bf16; timings at N = K = 8192 (and W8A8 at 8192^3), the first QUICK_CONFIGS "
                        "configs of each table autotuned, no peers")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    interpret = interpreter_active()
    if (args.interpret or args.dry_run) and not interpret:
        print("--interpret / --dry-run: TRITON_INTERPRET=1 must be set before triton is imported; run the script "
              "directly")
        return 2
    if not interpret and not torch.cuda.is_available():
        print("no CUDA GPU: run with --dry-run (or --interpret --small) for the CPU checks")
        return 2
    device = "cpu" if interpret else "cuda"
    cache = KernelCache(interpret=interpret, autotune=False)
    text, ok = correctness(device, args.small or interpret, cache, args.quick)
    print(f"# correctness ({'interpreter' if interpret else torch.cuda.get_device_name()})\n{text}\n")
    sections = [("correctness", text)]
    if ok and (args.dry_run or not (interpret or args.small)):
        bench = Bench.wall_clock() if args.dry_run else Bench.on_gpu(time_on_gpu)
        shapes = DRY_SHAPES if args.dry_run else QUICK_SHAPES if args.quick else SHAPES
        tuning = KernelCache(interpret=interpret, autotune=not interpret,
                             max_configs=QUICK_CONFIGS if args.quick else None)
        timing = timings(bench, tuning, shapes, args.budget, started, peers=not args.quick)
        title = "timings (dry run: Triton's interpreter on the CPU, wall clock; not speeds)" if args.dry_run else \
            "timings"
        print(f"# {title}\n{timing}\n")
        sections.append((title, timing))
        step = decode_step(bench, tempfile.mkdtemp(prefix="fxc-gpu-suite-"), args.budget, started, args.dry_run)
        print(f"# decode step{' (dry run)' if args.dry_run else ''}\n{step}\n")
        sections.append(("decode step (dry run)" if args.dry_run else "decode step", step))
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
