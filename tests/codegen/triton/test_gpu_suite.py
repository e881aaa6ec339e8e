"""benchmarks/gpu_suite.py runs end to end in Triton's interpreter (--dry-run): the correctness part (every
config of every template's GPU autotune table, plus float32 with a fused epilogue, at tiny shapes), the
timing part (every scheme against the bf16 baseline, weights rotated through copies, roofline columns) and
the decode step of a tiny Llama-shaped model per scheme, timed by wall clock. The timing numbers are not
checked, only that every row is there and that every compiled linear ran a Triton kernel."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("triton")

SUITE = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_suite.py"
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")


def test_gpu_suite_dry_run_in_the_interpreter(capsys):
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    assert suite.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    correctness = out.split("# correctness")[1].split("\n\n")[0]  # the table, up to its blank line
    timing, step = out.split("# timings")[1].split("# decode step")
    rows = [line for line in correctness.splitlines() if line.strip().startswith(suite.SCHEMES)]
    configs = sum(len(t.configs) for t in (suite._template(n) for n in ("w8a16_gemm", "w4a16_gemm", "w8a8",
                                                                         "sparse_nm_gemm", "gemv")))
    assert len(rows) >= configs and all(line.rstrip().endswith("ok") for line in rows)
    assert "correctness ok" in out and "FAIL" not in out
    timed = [line.split() for line in timing.splitlines() if line.strip().startswith(("bf16", *suite.SCHEMES))]
    shapes = suite.DRY_SHAPES  # a row: name (two words), M, N, K, us, vs bf16, limit us, of limit, copies, note
    assert len(timed) == len(shapes) * (1 + len(suite.SCHEMES))
    assert {(int(r[2]), int(r[3]), int(r[4])) for r in timed if r[0] == "bf16"} == set(shapes)
    assert all(row[8].endswith("%") and int(row[9]) >= 1 for row in timed)
    compiled = [line.split() for line in step.splitlines() if line.strip().startswith(("int8", "int4", "W8A8"))]
    assert len(compiled) == 3 and all(row[-1] == "0" for row in compiled)  # every linear ran a Triton kernel
