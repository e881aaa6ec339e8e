"""format="hf": the compressed model as a dense Hugging Face folder in its original architecture.

    fxc.export(cm, "dense/", format="hf")
    AutoModelForCausalLM.from_pretrained("dense/")       # the same outputs as cm, in float

Each layer is written as the weight it computes with (graph_view.Layer.dense): quantized weights dequantized, pruning
zeros kept, SmoothQuant's scales already in the weights and norms, a low-rank split multiplied back into one matrix
(the split saves nothing in this format, but the function is the compressed model's). Weights are cast to the model's
float dtype (that of its tensors outside layers). Refused: layers whose shapes the config cannot express (pruned
channels or heads) and tensors outside the architecture (hf_model.match).
Reads the graph view and the config; writes config.json, model.safetensors and the tokenizer files into the folder
it is given; preserves the compiled model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fxc.api.export.graph_view import GraphView, Layer
from fxc.api.export.hf_model import OWNED, architecture, match, write_hf_folder

NAME = "hf"


class Prepared:
    """What will be written, computed and checked before any file is opened."""

    def __init__(self, view: GraphView, config: dict, allow_requantize: bool = False):
        plan = match(view, architecture(config), NAME)
        self.config = plan.config
        self.tensors: dict[str, torch.Tensor] = {}
        for name, source in plan.weights.items():
            value = source.dense() if isinstance(source, Layer) else source
            self.tensors[name] = value.to(plan.dtype) if value.is_floating_point() else value
        self.notes: list[str] = []
        self.errors: dict[str, float] = {}
        self.files = list(OWNED)

    def write(self, folder: Path, tokenizer_folder: Path | None) -> list[str]:
        copied = write_hf_folder(folder, self.config, self.tensors, tokenizer_folder)
        return ["config.json", "model.safetensors", *copied]
