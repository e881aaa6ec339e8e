"""benchmarks/gpu_suite.py's correctness part runs in Triton's interpreter: every config of every
template's GPU autotune table, plus float32 with a fused epilogue, at tiny shapes."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("triton")

SUITE = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_suite.py"
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp")


def test_gpu_suite_correctness_part_in_the_interpreter(capsys):
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    assert suite.main(["--interpret", "--small"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().startswith(("w8a16", "w4a16", "w8a8", "sparse24"))]
    configs = sum(len(t.configs) for t in (suite._template(n) for n in ("w8a16_gemm", "w4a16_gemm", "w8a8",
                                                                         "sparse_nm_gemm", "gemv")))
    assert len(rows) >= configs and all(line.rstrip().endswith("ok") for line in rows)
    assert "correctness ok" in out and "FAIL" not in out
