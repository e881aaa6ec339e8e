"""The `torch` backend: runs the compressed GraphModule as is, every fxc op through its torch
implementation. Reads the graph; writes nothing."""

from __future__ import annotations

import torch.fx

from fxc.backend import Backend


class TorchBackend(Backend):
    name = "torch"

    def compile(self, gm: torch.fx.GraphModule, example_inputs):
        return gm
