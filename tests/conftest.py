"""Shared test set-up. TRITON_INTERPRET must be set before anything imports triton, so it is the
first thing here: Triton kernels then run on the CPU through the interpreter."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
