"""Fixtures of the torch backend's tests: the CPU kernels pinned to one instruction-set family."""

from __future__ import annotations

import pytest


@pytest.fixture
def torch_int8_kernels(monkeypatch):
    """The torch backend as on a CPU with AVX-512 VNNI and without the native kernels (AMX, AVX2): the family whose
    weight-only and W8A8 kernels are torch's own (torch._int_mm int8 planes, dequantized tiles), which is what the
    tests using it test, on any CPU (torch._int_mm is exact everywhere, only slow without VNNI)."""
    from fxc.codegen.torch.native import build as native_build
    from fxc.codegen.torch.native import isa

    monkeypatch.setattr(native_build, "plane_kernel", lambda: None)
    monkeypatch.setattr(native_build, "plane_kernel_status", lambda: "disabled by the test")
    monkeypatch.setattr(native_build, "avx2_kernel", lambda: None)
    monkeypatch.setattr(native_build, "avx2_kernel_status", lambda: "AVX2 kernels disabled by the test")
    monkeypatch.setattr(isa, "machine_family", lambda: "avx512_vnni")
