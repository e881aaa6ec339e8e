"""Shared test set-up. TRITON_INTERPRET must be set before anything imports triton, so it is the
first thing here: Triton kernels then run on the CPU through the interpreter. tests/ goes on
sys.path so test files can `from tiny_models import ...`."""

import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def without_native_kernels(monkeypatch):
    """The torch backend as on a CPU without the AMX plane kernel (its torch kernels are what it tests)."""
    from fxc.codegen.torch.native import build as native_build

    monkeypatch.setattr(native_build, "plane_kernel", lambda: None)
    monkeypatch.setattr(native_build, "plane_kernel_status", lambda: "disabled by the test")


@pytest.fixture
def one_thread():
    """Tiny matmuls run fastest (and steadiest on shared cores) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
