"""Static checks of the Triton kernels compiled offline for sm_90 and sm_80 (benchmarks/kernel_report.py):
every config the picker can choose on that target compiles without spills, streams its weight in loads at
least 32 bits wide (128-bit for the weight-only and 2:4 GEMMs), and runs its GEMM main loop on the tensor
cores (wgmma where Triton can use it on sm_90, mma.sync otherwise). The report runs in a subprocess, since
this process runs Triton in its interpreter (tests/conftest.py), whose kernels cannot be compiled; it is
skipped, with the report's reason, where the CUDA toolchain of the triton wheel (ptxas, cuobjdump) is
missing. The text parsers of benchmarks/kernel_report_asm.py are checked here on hand-written PTX and
SASS, with no toolchain. Writes the JSON rows to a pytest temporary folder."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from kernel_report_asm import load_bits, main_loop, ptx_load_widths, sass_mix  # noqa: E402
from kernel_report_compile import occupancy  # noqa: E402

# -- the parsers, on hand-written text -------------------------------------------------------------

PTX = """
	ld.param.b64 	%rd1, [k_param_0];
	ld.param.b64 	%rd2, [k_param_1];
	ld.param.b32 	%r1, [k_param_2];
	mad.wide.s32 	%rd3, %r1, 2, %rd1;
	add.s64 	%rd4, %rd2, 64;
	mov.b64 	%rd5, %rd4;
$L__BB0_2:
	@%p1 ld.global.v4.b32 { %r2, %r3, %r4, %r5 }, [ %rd3 + 0 ];
	cp.async.cg.shared.global [ %r6 + 0 ], [ %rd5 + 0 ], 0x10, %r7;
	@%p2 ld.global.b8 { %rs1 }, [ %rd5 + 0 ];
	add.s64 	%rd5, %rd5, 128;
	@%p3 bra 	$L__BB0_2;
"""

SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0020*/              @!P0 BRA 0x90 ;
        /*0030*/                   LDGSTS.E.BYPASS.128 [R8], desc[UR4][R2.64] ;
        /*0040*/                   LDG.E.U8 R9, desc[UR4][R6.64] ;
        /*0050*/                   LOP3.LUT R10, R9, 0xf, RZ, 0xc0, !PT ;
        /*0060*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4].tnspB, R24 ;
        /*0070*/                   STL [R1], R10 ;
        /*0080*/               @P1 BRA 0x30 ;
        /*0090*/                   EXIT ;
        /*00a0*/                   BRA 0xa0;
"""


def test_ptx_load_widths_follow_each_address_to_its_pointer_argument():
    widths = ptx_load_widths(PTX, ["x_ptr", "q_ptr", "K"])
    assert widths == {"x_ptr": {128}, "q_ptr": {128, 8}}  # v4.b32; a 16-byte cp.async and a byte load


def test_sass_mix_counts_the_main_loop_and_the_kernel():
    mix = sass_mix(SASS)
    assert mix.loop["tensor"] == 1 and mix.loop_tensor_ops == {"HGMMA.64x128x16.F32.BF16": 1}
    assert mix.loop["load"] == 2 and mix.loop_load_bits == {128: 1, 8: 1}  # the LDG.E.128 is before the loop
    assert mix.loop["int"] == 1 and mix.spills == 1 and mix.kernel["load"] == 3
    assert mix.loop["instructions"] == 6  # 0x30 .. 0x80


def test_main_loop_is_the_first_outermost_backward_branch():
    at = lambda address, op="NOP", rest="": (address, op, "", rest)
    code = [at(0x10), at(0x20), at(0x30, "BRA", " 0x20"), at(0x40, "BRA", " 0x10"), at(0x50), at(0x60, "BRA", " 0x50"),
            at(0x70, "BRA", " 0x70")]  # nested 0x20-0x30 in 0x10-0x40; a later loop; the trap's self-branch
    assert main_loop(code) == (0x10, 0x40)
    assert main_loop([at(0x10), at(0x20, "BRA", " 0x30")]) is None


def test_load_bits_from_suffixes():
    assert [load_bits(s) for s in (".E.128", ".E.64", ".E", ".E.U8", ".E.S16", ".E.BYPASS.128")] == [
        128, 64, 32, 8, 16, 128]


def test_occupancy_from_registers_shared_memory_and_warps():
    assert occupancy(90, regs=32, shared=0, warps=4) == 16  # 2048 threads
    assert occupancy(90, regs=128, shared=0, warps=8) == 2  # 65536 / (128 * 256)
    assert occupancy(90, regs=64, shared=100 * 1024, warps=4) == 2  # shared memory: 228 KiB / (100 + 1) KiB
    assert occupancy(80, regs=64, shared=200 * 1024, warps=4) == 0  # more than sm_80's 163 KiB per block


# -- the kernels, compiled offline -------------------------------------------------------------------


ARCHS = (90, 80)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One kernel_report.py process per target, started together (each compiles ~100 kernels)."""
    folder = tmp_path_factory.mktemp("report")
    started = {}
    for arch in ARCHS:
        command = [sys.executable, str(BENCHMARKS / "kernel_report.py"), "--arch", str(arch), "--json",
                   str(folder / f"sm_{arch}.json")]
        started[arch] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield {arch: (process, folder / f"sm_{arch}.json") for arch, process in started.items()}
    for process in started.values():
        process.kill()


@pytest.fixture(scope="module", params=ARCHS, ids=lambda arch: f"sm_{arch}")
def report(request, runs):
    arch = request.param
    process, out = runs[arch]
    stdout, stderr = process.communicate(timeout=1800)
    if process.returncode == 2 and "cannot compile" in stdout:
        pytest.skip(stdout.strip())
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return arch, json.loads(out.read_text())


def test_every_config_keeps_every_rule(report):
    arch, rows = report
    assert rows and {r["kernel"] for r in rows} >= {"gemv", "w8a16_gemm", "w4a16_gemm", "w8a8_gemm",
                                                    "sparse_nm_gemm", "block_sparse_gemm"}
    broken = [(r["kernel"], r["variant"], r["config"], r["violations"]) for r in rows if r["violations"]]
    assert not broken


def test_no_spills_and_every_block_fits(report):
    _, rows = report
    assert all(r["spills"] == 0 and r["blocks_per_sm"] >= 1 for r in rows)


def test_prefill_main_loops_run_on_the_tensor_cores(report):
    arch, rows = report
    for row in rows:
        if row["kernel"] in ("w8a16_gemm", "w4a16_gemm", "w8a8_gemm", "sparse_nm_gemm", "block_sparse_gemm"):
            wgmma = arch >= 90 and row["block_m"] >= 64
            want = ({"IGMMA"} if row["kernel"] == "w8a8_gemm" else {"HGMMA"}) if wgmma else {"HMMA", "IMMA"}
            assert want & set(row["loop_tensor"]), (row["kernel"], row["config"], row["loop_tensor"])


def test_weight_streams_load_128_bits_at_a_time(report):
    """The GEMMs' weight tiles are wide enough for 16-byte loads in every config, and they get them; no
    weight stream (the GEMV's included) is read in pieces narrower than 32 bits."""
    _, rows = report
    for row in rows:
        if row["kernel"] in ("w8a16_gemm", "w4a16_gemm", "w8a8_gemm", "sparse_nm_gemm", "block_sparse_gemm"):
            assert 128 in row["weight_bits"], (row["kernel"], row["config"], row["load_widths"])
        assert all(bits >= 32 for bits in row["weight_bits"])
