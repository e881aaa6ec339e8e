"""The Hugging Face side of an export: the original architecture a compiled model must still fit, and its folder.

    target = architecture(hf_config)                 # the transformers class and its state dict's names and shapes
    plan = match(view, target, "compressed-tensors") # every tensor of that state dict, from the compressed graph
    write_hf_folder(tmp, plan.config, tensors, hf_folder)

`architecture` builds the model class named by config.json's `architectures` on the meta device (no memory, no
weights) to learn the names and shapes its `from_pretrained` expects, which tensors are tied (an LM head tied to the
embedding) and which buffers are not saved (rotary frequencies). `match` pairs them with the graph (graph_view.py):
a layer's weight is `<module path>.weight`; any other tensor keeps its dotted name. Everything is checked before a
byte is written, and a mismatch is an ExportError naming the layer: a shape the config cannot express (pruned
channels or heads), a tensor the architecture does not have, one it needs and the graph lost. A tied pair the
compression made different (a quantized LM head beside a dense embedding) is written untied
(`tie_word_embeddings=false`).

`write_hf_folder` writes config.json, model.safetensors and, from the model's own Hugging Face folder when known,
generation_config.json and the tokenizer files (copied as they are). Reads config dicts, the graph's tensors and
the tokenizer files of `hf_folder`; writes only into the folder it is given; preserves everything it reads.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fxc.api.export.graph_view import GraphView, Layer
from fxc.errors import ExportError

CONFIG, WEIGHTS = "config.json", "model.safetensors"
COPIED = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "vocab.txt", "chat_template.jinja")
OWNED = (CONFIG, WEIGHTS, *COPIED)


@dataclass
class Architecture:
    config: dict  # config.json as recorded
    class_name: str
    shapes: dict[str, tuple[int, ...]]  # the state dict from_pretrained fills: name -> shape
    tied: dict[str, str]  # name -> the first name of the same parameter (the LM head -> the embedding)
    unsaved: set[str]  # buffers that are not part of the state dict (rotary frequencies)


@dataclass
class Plan:
    """Every tensor of the architecture's state dict, from the graph: a Layer for a layer's weight, else a tensor."""

    config: dict
    weights: dict[str, Layer | torch.Tensor] = field(default_factory=dict)  # state-dict name -> where it comes from
    dtype: torch.dtype = torch.float32  # the model's float dtype (of its tensors outside layers)


def architecture(config: dict) -> Architecture:
    """The architecture config.json names, built on the meta device."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    names = config.get("architectures") or []
    model_class = getattr(transformers, names[0], None) if names else None
    model_type = config.get("model_type")
    config_class = CONFIG_MAPPING[model_type] if isinstance(model_type, str) and model_type in CONFIG_MAPPING else None
    if model_class is None or config_class is None:
        raise ExportError(f"the model's config.json names architecture {names[:1] or 'none'} (model_type "
                          f"{config.get('model_type')!r}), which this transformers does not have; export needs the "
                          "original architecture to lay the weights out")
    hf_config = config_class.from_dict({k: v for k, v in config.items() if k != "quantization_config"})
    with torch.device("meta"):
        model = model_class(hf_config)
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            tied[name] = first[id(parameter)]
        else:
            first[id(parameter)] = name
    state = model.state_dict()
    shapes = {name: tuple(value.shape) for name, value in state.items()}
    unsaved = {name for name, _ in model.named_buffers()} - set(state)
    return Architecture(config, names[0], shapes, tied, unsaved)


def match(view: GraphView, target: Architecture, format_name: str) -> Plan:
    """The plan that fills `target`'s state dict from `view`, or an ExportError before anything is written."""
    if view.problems:
        raise ExportError(f"{format_name} export: {view.problems[0]}")
    plan = Plan(dict(target.config))
    where = f"{target.class_name} with the model's config.json"
    for fqn, layer in view.layers.items():
        name = f"{fqn}.weight"
        if name not in target.shapes:
            raise ExportError(f"layer {fqn}: {where} has no weight {name}; {format_name} needs the original modules")
        _check_shape(name, tuple(layer.shape), target, format_name, f"layer {fqn}: its weight")
        plan.weights[name] = layer
        if (layer.bias is None) != (f"{fqn}.bias" not in target.shapes):
            has = "has a bias" if layer.bias is not None else "has no bias"
            raise ExportError(f"layer {fqn} {has} and {where} says otherwise; {format_name} cannot express it")
        if layer.bias is not None:
            _check_shape(f"{fqn}.bias", tuple(layer.bias.shape), target, format_name, f"layer {fqn}: its bias")
            plan.weights[f"{fqn}.bias"] = layer.bias
    floats = [t for t in view.tensors.values() if t.is_floating_point()]
    if floats:
        plan.dtype = max(floats, key=lambda t: t.numel()).dtype
    for name, tensor in view.tensors.items():
        if name in target.unsaved:
            continue
        if name in plan.weights:  # a layer's weight name, read elsewhere too: a tied tensor (the embedding)
            free = [n for n in _tie_group(name, target) if n not in plan.weights]
            if not free:
                raise ExportError(f"tensor {name} is both a layer's weight and another tensor; {format_name} export "
                                  "cannot tell which is which")
            name = free[0]
        if name not in target.shapes:
            raise ExportError(f"tensor {name} is not a tensor of {where}; {format_name} export holds only the "
                              "original architecture's tensors")
        _check_shape(name, tuple(tensor.shape), target, format_name, f"tensor {name}")
        plan.weights[name] = tensor
    for name, other in target.tied.items():  # tied names: one tensor unless the compression made them differ
        if name in plan.weights and other in plan.weights and not _same(plan.weights[name], plan.weights[other]):
            plan.config["tie_word_embeddings"] = False
        elif name in plan.weights and other not in plan.weights:
            plan.weights[other] = plan.weights.pop(name)
        else:
            plan.weights.pop(name, None)
    if plan.config.get("tie_word_embeddings") is False:
        untied = {name for name, other in target.tied.items() if other in plan.weights and name not in plan.weights}
        for name in untied:
            plan.weights[name] = plan.weights[target.tied[name]]
    missing = [n for n in target.shapes if n not in plan.weights and target.tied.get(n) not in plan.weights]
    if missing:
        raise ExportError(f"{format_name} export: the compressed graph has no tensor for {missing[0]}"
                          f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}, which {where} needs")
    return plan


def _tie_group(name: str, target: Architecture) -> list[str]:
    """Every name of the parameter `name` is one of (itself first)."""
    first = target.tied.get(name, name)
    return [name, *(n for n in [first, *target.tied] if n != name and target.tied.get(n, n) == first)]


def _check_shape(name: str, shape: tuple, target: Architecture, format_name: str, what: str) -> None:
    want = target.shapes[name]
    if shape != want:
        raise ExportError(
            f"{what} is {list(shape)} but {target.class_name} with the model's config.json has {list(want)} ({name}); "
            f"{format_name} export needs the original shapes (pruned channels or heads change shapes that one "
            "config.json cannot express per layer)"
        )


def _same(a, b) -> bool:
    """Two sources hold the same values (a dense layer is its float weight)."""
    a, b = (x.weight if isinstance(x, Layer) and x.stored is None and not x.halves else x for x in (a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a is b or (a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b)))
    return a is b


def write_hf_folder(folder: Path, config: dict, tensors: dict[str, torch.Tensor], hf_folder: Path | None) -> list[str]:
    """config.json, model.safetensors and the Hugging Face folder's tokenizer files; returns the files copied."""
    from safetensors.torch import save_file

    save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(folder / WEIGHTS),
              metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n")
    copied = []
    for name in COPIED if hf_folder is not None else ():
        source = Path(hf_folder) / name
        if source.is_file() and not source.is_symlink():
            shutil.copyfile(source, folder / name)
            copied.append(name)
    return copied
