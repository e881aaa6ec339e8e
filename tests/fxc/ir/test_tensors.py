"""fxc.ir's tensor helpers: register_tensor puts a tensor at a dotted name, add_tensor at an unused one."""

from __future__ import annotations

import torch

from fxc import ir


def test_register_tensor_makes_the_path_and_keeps_the_kind():
    root = torch.nn.Module()
    weight = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    ir.register_tensor(root, "a.b.weight", weight, "parameter")
    ir.register_tensor(root, "a.scale", torch.zeros(2))
    ir.register_tensor(root, "c.table", torch.arange(3), "attribute")
    assert root.a.b._parameters["weight"] is weight
    assert "scale" in root.a._buffers
    assert "table" not in root.c._buffers and torch.equal(root.c.table, torch.arange(3))
    assert ir.get_tensor(root, "a.b.weight") is weight


def test_add_tensor_picks_an_unused_name_and_stores_a_detached_buffer():
    gm = torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph())
    ir.register_tensor(gm, "fc.qweight", torch.zeros(1))
    value = torch.ones(2, requires_grad=True)
    name = ir.add_tensor(gm, "fc.qweight", value)
    assert name == "fc.qweight_1"
    stored = gm.fc._buffers["qweight_1"]
    assert not stored.requires_grad and torch.equal(stored, value.detach())
