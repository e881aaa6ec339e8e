"""fxc.export: a compressed model in the formats serving engines load.

    fxc.export(cm, "w4/", format="compressed-tensors")   # HF folder + quantization_config: vLLM, transformers
    fxc.export(cm, "gguf/", format="gguf")               # gguf/model.gguf (Q8_0 / Q4_0 / Q4_1): llama.cpp
    fxc.export(cm, "dense/", format="hf")                # dense safetensors in the original architecture
    fxc.export("saved/", "w4/", format="compressed-tensors")   # a folder fxc.save wrote (loaded, no pass runs)

One file per format (to_hf.py, to_compressed_tensors.py, to_gguf.py with gguf_vocab.py), over two shared readers:
graph_view.py (the compressed graph's layers by module path, as stored) and hf_model.py (the original architecture
from the model's Hugging Face config, and the folder layout). The config is the one fxc.compile recorded from a
transformers model (`gm.meta["fxc.hf_config"]`, kept by fxc.save); for other models `hf_folder=` names a Hugging
Face folder whose config.json describes the architecture. Tokenizer files come from `hf_folder`, else from the
folder the model was loaded from when the recorded config names one that exists here.

Every check runs before anything is written: a plan the format cannot hold (a low-rank split, shapes the config
cannot express, W8A8 for GGUF, a scheme with no exact GGUF type unless allow_requantize=True) raises ExportError
naming the layer and what the format lacks. The folder is written atomically (fxc/api/atomic_folder.py): a crash
leaves the old folder or the new one. The returned Exported says what was written and, for GGUF, the weight error
per layer that the format adds (fp16 block scales; requantization when allowed).
Reads the compiled model (or the saved folder) and the Hugging Face folder's config and tokenizer files; writes only
the output folder; preserves the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fxc.api.atomic_folder import write_folder
from fxc.api.backend import CompiledModule
from fxc.api.compiler import HF_CONFIG
from fxc.api.export.graph_view import read_graph
from fxc.errors import ExportError

FORMATS = ("compressed-tensors", "gguf", "hf")
__all__ = ["FORMATS", "Exported", "export"]


@dataclass
class Exported:
    """What fxc.export wrote: the folder, its files, notes and, for GGUF, the relative weight error the format adds
    per quantized layer (Frobenius norm, against the compressed model's own weight): float16 block scales for exact
    layers, requantization for the layers named in `requantized`."""

    path: Path
    format: str
    files: list[str]
    notes: list[str] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)
    requantized: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"exported {self.format} to {self.path}/: {', '.join(self.files)}", *self.notes]
        exact = [v for name, v in self.errors.items() if name not in self.requantized]
        if exact:
            lines.append(f"weight error of float16 block scales: max {max(exact):.2g}, mean "
                         f"{sum(exact) / len(exact):.2g} (relative, {len(exact)} exact layers)")
        again = [self.errors[name] for name in self.requantized]
        if again:
            lines.append(f"weight error added by requantization: max {max(again):.3g}, mean "
                         f"{sum(again) / len(again):.3g} (relative, {len(again)} layers):")
            lines += [f"  {name}: {self.errors[name]:.3g}" for name in self.requantized]
        return "\n".join(lines)


def export(model: CompiledModule | str | Path, path: str | Path, format: str, *, allow_requantize: bool = False,
           hf_folder: str | Path | None = None) -> Exported:
    """Write `model` (what fxc.compile returns, or a folder fxc.save wrote) to the folder `path` in `format`:
    "compressed-tensors", "gguf" or "hf". allow_requantize: GGUF only, requantize layers whose plan has no exact
    GGUF block type (the added error is reported). hf_folder: the model's Hugging Face folder, for its config when
    fxc did not record one and for the tokenizer files."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    gm = _graph(model)
    hf = Path(hf_folder) if hf_folder is not None else None
    config = _config(gm, hf)
    if format == "hf":
        from fxc.api.export import to_hf as writer
    elif format == "compressed-tensors":
        from fxc.api.export import to_compressed_tensors as writer
    else:
        from fxc.api.export import to_gguf as writer
    prepared = writer.Prepared(read_graph(gm), config, allow_requantize)  # every check, before any file is opened
    tokenizer = hf if hf is not None else _recorded_folder(config)
    written: list[str] = []

    def write(folder: Path) -> None:
        written.extend(prepared.write(folder, tokenizer))

    folder = write_folder(Path(path), write, owned=prepared.files)
    notes = list(prepared.notes)
    if tokenizer is None and format != "gguf":
        notes.append("no tokenizer files (give hf_folder= / --hf-folder to copy them)")
    return Exported(folder, format, written, notes, dict(prepared.errors), list(getattr(prepared, "requantized", [])))


def _graph(model: Any):
    if isinstance(model, CompiledModule):
        return model.graph
    if isinstance(model, (str, Path)):
        from fxc.api.serialize import load

        # checked like any load; the plain torch backend runs the graph as it is, so nothing is lowered or built
        return load(model, backend="torch", backend_options={"fast": False}).graph
    raise TypeError(f"fxc.export takes what fxc.compile returns or a folder fxc.save wrote, got {type(model).__name__}")


def _config(gm, hf_folder: Path | None) -> dict:
    """The model's Hugging Face config: the one fxc.compile recorded, else hf_folder's config.json."""
    recorded = gm.meta.get(HF_CONFIG)
    if recorded is not None:
        return dict(recorded)
    if hf_folder is not None:
        file = hf_folder / "config.json"
        if not file.is_file():
            raise ExportError(f"{hf_folder} has no config.json; give the model's Hugging Face folder")
        return json.loads(file.read_text())
    raise ExportError("the model's Hugging Face config is unknown (fxc records it when it compiles a transformers "
                      "model); give the Hugging Face folder it came from: hf_folder= (fxc export --hf-folder)")


def _recorded_folder(config: dict) -> Path | None:
    """The folder the model was loaded from, when the recorded config names one that exists here."""
    name = config.get("_name_or_path")
    if isinstance(name, str) and name and Path(name).is_dir() and any(
            (Path(name) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return Path(name)
    return None
