"""format="compressed-tensors": a Hugging Face folder whose config.json carries a compressed-tensors
`quantization_config`, which vLLM and transformers (with the compressed-tensors package) load directly.

    fxc.export(cm, "w4/", format="compressed-tensors")
    AutoModelForCausalLM.from_pretrained("w4/")          # transformers decompresses; vllm serve w4/ runs it packed

The on-disk layout is compressed-tensors' own: each quantized Linear gets a QuantizationScheme, the compressor the
package picks for it (`infer_module_format`: pack-quantized for weight-only int4 / int8, int-quantized for W8A8)
writes its tensors, and QuantizationConfig writes the config. fxc's storage maps exactly, integer for integer
(fxc/ir/qformat.py and compressed-tensors both store W = (q - zero) * scale with signed q):
  - weight-only int4 / int8, per group or per channel, symmetric or with zero points -> `strategy` group / channel
    (asymmetric: transformers 5 with compressed-tensors 0.20 loads it only with
    `quantization_config=CompressedTensorsConfig(dequantize=True)`, its packed path expecting unpacked zero points,
    vllm-project/llm-compressor#1618; vLLM reads the packed layout written here);
  - W8A8 (fxc.int8_linear): int8 per-channel weights, activations int8 symmetric per token (`dynamic`) or with a
    static per-tensor `input_scale`. fxc quantizes dynamic activations with max|x| / 127.5, vLLM with max|x| / 127,
    so outputs differ by that rounding only;
  - N:M layers: the weight written dense with its zeros (int8 values with a per-row scale as int8 per channel), and
    a `sparsity_config` (format dense, `sparsity_structure` "2:4") naming them, which vLLM reads for its 2:4 kernels.
Layers left in float are listed in `ignore` (vLLM requires every Linear to be targeted or ignored). Layers vLLM fuses
(q/k/v, gate/up) must share one scheme. Refused, naming the layer: low-rank splits (one weight per Linear here; use
format="hf"), quantized convolutions, shapes the config cannot express (hf_model.match).
Reads the graph view and the config; writes config.json, model.safetensors and the tokenizer files into the folder
it is given; preserves the compiled model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fxc.api.export.graph_view import GraphView, Int8Activations, Layer, WeightOnly
from fxc.api.export.hf_model import OWNED, architecture, match, write_hf_folder
from fxc.errors import ExportError

NAME = "compressed-tensors"
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # layers vLLM runs as one


def _package():
    try:
        import compressed_tensors  # noqa: F401
    except ImportError:
        raise ExportError("format='compressed-tensors' needs the compressed-tensors package: pip install "
                          "'fxc[export]' (or pip install compressed-tensors)") from None


def scheme_args(layer: Layer) -> tuple[dict, dict | None] | None:
    """(weights, input activations) as QuantizationArgs fields; None for a float layer."""
    stored = layer.stored
    if isinstance(stored, WeightOnly):
        planned = layer.quant.group_size if layer.quant is not None else None  # group-size=64 on 64 columns: a group
        grouped = stored.scale.shape[1] > 1 or planned == stored.group_size
        weights = {"num_bits": stored.bits, "type": "int", "symmetric": stored.symmetric,
                   "strategy": "group" if grouped else "channel", "group_size": stored.group_size if grouped else None}
        return weights, None
    if isinstance(stored, Int8Activations):
        weights = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "group_size": None}
        dynamic = stored.input_scale is None
        inputs = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token" if dynamic else "tensor",
                  "dynamic": dynamic}
        return weights, inputs
    return None


class Prepared:
    """What will be written, computed and checked before any file is opened."""

    def __init__(self, view: GraphView, config: dict, allow_requantize: bool = False):
        _package()
        from compressed_tensors.compressors import BaseCompressor
        from compressed_tensors.compressors.format import infer_module_format
        from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

        plan = match(view, architecture(config), NAME)
        groups: dict[str, list[str]] = {}
        schemes: dict[str, dict] = {}
        ignore, sparse = [], {}
        for layer in view.layers.values():
            if layer.low_rank:
                raise ExportError(f"layer {layer.fqn} is split into two low-rank factors; {NAME} stores one weight per "
                                  "Linear of the original architecture (format='hf' multiplies the factors back)")
            if layer.kind != "linear":
                if layer.stored is not None:
                    raise ExportError(f"layer {layer.fqn} is a quantized {layer.kind}; {NAME} quantizes Linear layers "
                                      "only (export it with format='hf')")
                continue
            pattern = f"{layer.nm[0]}:{layer.nm[1]}" if layer.nm else (layer.sparsity.pattern if layer.sparsity else "")
            if ":" in pattern:
                sparse.setdefault(pattern, []).append(layer.fqn)
            args = scheme_args(layer)
            if args is None:
                ignore.append(layer.fqn)
                continue
            key = json.dumps(args, sort_keys=True)
            groups.setdefault(key, []).append(layer.fqn)
            schemes[layer.fqn] = args
        _check_fused(view, schemes)
        config_groups = {}
        self.tensors: dict[str, torch.Tensor] = {}
        layer_of = {layer.fqn: layer for layer in view.layers.values()}
        for index, (key, targets) in enumerate(groups.items()):
            weights, inputs = json.loads(key)
            scheme = QuantizationScheme(targets=targets, weights=QuantizationArgs(**weights),
                                        input_activations=QuantizationArgs(**inputs) if inputs else None)
            scheme.format = infer_module_format(torch.nn.Linear, scheme)
            compressor = BaseCompressor.get_value_from_registry(scheme.format)
            for fqn in targets:
                local = compressor.compress(_local_state(layer_of[fqn], plan.dtype), scheme)
                self.tensors.update({f"{fqn}.{name}": value for name, value in local.items()})
            config_groups[f"group_{index}"] = scheme
        done = {f"{fqn}.weight" for fqn in schemes}
        for name, source in plan.weights.items():
            if name in done:
                continue
            value = source.dense() if isinstance(source, Layer) else source
            self.tensors[name] = value.to(plan.dtype) if value.is_floating_point() else value
        formats = {scheme.format for scheme in config_groups.values()}
        quantization = QuantizationConfig(
            config_groups=config_groups, format=formats.pop() if len(formats) == 1 else "mixed-precision",
            quantization_status="compressed", ignore=ignore)
        import compressed_tensors

        body = {"version": compressed_tensors.__version__, "quant_method": "compressed-tensors",
                **quantization.model_dump(exclude=["quant_method"]), "sparsity_config": _sparsity(sparse, view)}
        self.config = {**plan.config, "quantization_config": json.loads(json.dumps(body, default=str))}
        self.notes = [f"{len(schemes)} quantized Linear layers in {len(config_groups)} scheme group(s), "
                      f"{len(ignore)} left in float (ignore)"] + (
            [f"N:M sparsity recorded for {sum(map(len, sparse.values()))} layers ({', '.join(sparse)})"] if sparse
            else [])
        self.errors: dict[str, float] = {}
        self.files = list(OWNED)

    def write(self, folder: Path, tokenizer_folder: Path | None) -> list[str]:
        copied = write_hf_folder(folder, self.config, self.tensors, tokenizer_folder)
        return ["config.json", "model.safetensors", *copied]


def _local_state(layer: Layer, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The module's state before compression: the float weight, its scales and zero points (compressed-tensors
    re-derives the integers, round((q - z) * s / s) + z = q exactly)."""
    stored = layer.stored
    state = {"weight": layer.dense()}
    if isinstance(stored, WeightOnly):
        state["weight_scale"] = stored.scale.clone()
        if stored.zero is not None:
            state["weight_zero_point"] = stored.zero.round().to(torch.int8)
    else:
        state["weight_scale"] = stored.scale.reshape(-1, 1).clone()
        if stored.input_scale is not None:
            state["input_scale"] = stored.input_scale.to(torch.float32).reshape(1)
    if layer.bias is not None:
        state["bias"] = layer.bias.to(dtype)
    return state


def _check_fused(view: GraphView, schemes: dict[str, dict]) -> None:
    for names in FUSED:
        parents: dict[str, list[str]] = {}
        for fqn in view.layers:
            parent, _, leaf = fqn.rpartition(".")
            if leaf in names:
                parents.setdefault(parent, []).append(fqn)
        for members in parents.values():
            found = {json.dumps(schemes.get(fqn), sort_keys=True) for fqn in members}
            if len(found) > 1:
                described = ", ".join(f"{fqn.rpartition('.')[2]}: {_describe(schemes.get(fqn))}" for fqn in members)
                raise ExportError(f"layers {', '.join(members)} have different schemes ({described}); vLLM runs "
                                  f"{'/'.join(names)} as one fused layer, so {NAME} needs one scheme for them")


def _describe(args) -> str:
    if args is None:
        return "float"
    weights, inputs = args
    text = f"w{weights['num_bits']}" + (f"g{weights['group_size']}" if weights["group_size"] else "")
    return text + ("a8" if inputs else "")


def _sparsity(sparse: dict[str, list[str]], view: GraphView) -> dict:
    """compressed-tensors' sparsity_config (format dense: the zeros are in the weights) for the N:M layers."""
    if not sparse:
        return {}
    from compressed_tensors.config import DenseSparsityConfig

    pattern = max(sparse, key=lambda p: len(sparse[p]))
    targets = sparse[pattern]
    zeros = sum(int((view.layers[f].dense() == 0).sum()) for f in targets)
    total = sum(view.layers[f].dense().numel() for f in targets)
    config = DenseSparsityConfig(targets=targets, sparsity_structure=pattern, global_sparsity=zeros / max(total, 1))
    return json.loads(config.model_dump_json(exclude={"registry_requires_subclass"}))
