"""The numpy backend reports every op it cannot lower at compile time, all at once, each with its
node and the model source line it came from; nothing fails later at call time."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxc
from fxc.codegen.numpy.backend import NumpyBackend


class Unlowerable(nn.Module):
    def forward(self, x):
        top = torch.topk(x, 2).values  # no numpy kernel
        y = F.dropout(x, 0.5, training=True)  # random: cannot be reproduced
        ordered = torch.sort(x, dim=-1).values  # no numpy kernel
        return top.sum() + y.sum() + ordered.sum() + x.relu().sum()


def test_all_unsupported_ops_are_reported_together_with_their_source_lines():
    x = torch.randn(3, 5)
    with pytest.raises(fxc.BackendError) as caught:
        fxc.compile(Unlowerable(), example_inputs=(x,), backend="numpy")
    message = str(caught.value)
    assert "cannot lower 3 node(s)" in message
    for op, line in [("topk", "torch.topk(x, 2)"), ("dropout", "F.dropout(x, 0.5"), ("sort", "torch.sort(x")]:
        entry = next(text for text in message.splitlines() if f"aten.{op}" in text)
        assert "test_errors.py" in entry and line in entry, entry
    assert "relu" not in message
    assert "training mode" in message


def test_unsupported_lists_the_nodes_and_the_torch_backend_still_runs_the_model():
    gm = fxc.trace(Unlowerable(), (torch.randn(3, 5),))
    names = sorted(str(n.target) for n in NumpyBackend().unsupported(gm))
    assert names == ["aten.dropout.default", "aten.sort.default", "aten.topk.default"]
    assert torch.isfinite(fxc.compile(gm, example_inputs=(torch.randn(3, 5),), backend="torch")(torch.randn(3, 5)))


def test_bfloat16_graphs_are_rejected_at_compile_time():
    model = nn.Linear(4, 4).to(torch.bfloat16)
    with pytest.raises(fxc.BackendError, match="bfloat16"):
        fxc.compile(model, example_inputs=(torch.randn(2, 4, dtype=torch.bfloat16),), backend="numpy")


def test_bad_backend_option_is_an_option_error():
    with pytest.raises(fxc.OptionError, match="sparse-crossover"):
        NumpyBackend(sparse_crossover=1.5)
