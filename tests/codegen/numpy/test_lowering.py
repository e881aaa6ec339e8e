"""The numpy lowering itself: the generated function calls no torch, weights are shared with the
module (not copied) and read-only, constant subgraphs are folded at compile time, dead values are
freed, and inputs/outputs follow the graph's pytree specs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import fxc
from tests import tiny_models
from tests.codegen.numpy.numpy_check import torch_calls


class Folding(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4))

    def forward(self, x, *, shift):
        table = (self.w * 2).exp()  # depends on the weight only: folded
        return {"sum": x + table + shift, "size": x.shape[0] * 2}


def test_constant_subgraphs_fold_and_weights_are_shared_read_only():
    model = Folding()
    x, shift = torch.randn(3, 4), torch.randn(4)
    compiled = fxc.compile(model, example_inputs=((x,), {"shift": shift}), backend="numpy")
    code = compiled.runner.code
    assert "k_exp(" not in code and "k_mul(" not in code and "k_add(" in code  # mul_1: the size arithmetic
    out = compiled(x, shift=shift)
    torch.testing.assert_close(out["sum"], x + (model.w * 2).exp() + shift, rtol=1e-6, atol=1e-6)
    assert out["size"] == 6  # a SymInt output is a Python int


def test_weights_are_shared_with_the_module_and_read_only():
    model, example = tiny_models.mlp()
    compiled = fxc.compile(model, example_inputs=example, backend="numpy")
    arrays = [v for k, v in compiled.runner.program.fn.__globals__.items() if k.startswith("c_")]
    for name, tensor in compiled.graph.named_parameters():
        shared = [a for a in arrays if isinstance(a, np.ndarray) and np.shares_memory(a, tensor.detach().numpy())]
        assert len(shared) == 1, name
        assert not shared[0].flags.writeable


def test_generated_function_runs_without_calling_torch():
    pytest.importorskip("transformers")
    from fxc.frontend.kv_inputs import step_batch

    model, example = tiny_models.tiny_llama(layers=1)
    compiled = fxc.compile(model, example_inputs=example, backend="numpy")  # a KV-cache step graph
    step, _ = step_batch(example, compiled.kv_cache)  # input_ids, mask, positions, empty past: the graph's inputs
    inputs = [t.numpy() for t in torch.utils._pytree.tree_leaves(step)]
    calls, outputs = torch_calls(lambda: compiled.runner.run_numpy(*inputs))
    assert calls == []
    assert isinstance(outputs[0], np.ndarray) and outputs[0].shape == (2, 12, 64)
    assert "del " in compiled.runner.code  # dead values are freed as the function runs


def test_keyword_and_positional_inputs_follow_the_traced_signature():
    model, example = tiny_models.mlp()
    compiled = fxc.compile(model, example_inputs=example, backend="numpy")
    x = torch.randn(5, 16)
    torch.testing.assert_close(compiled(x), compiled(x=x))
    with pytest.raises(fxc.InputError, match=r"takes 1 inputs \(x\); got 2"):
        compiled(x, x)
