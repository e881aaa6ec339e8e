"""format="gguf": one GGUF file (folder/model.gguf) for llama.cpp, written with the `gguf` package.

    fxc.export(cm, "gguf/", format="gguf")                           # exact block types only
    fxc.export(cm, "gguf/", format="gguf", allow_requantize=True)    # others requantized, the added error reported
    AutoModelForCausalLM.from_pretrained("gguf/", gguf_file="model.gguf");  llama-cli -m gguf/model.gguf

Architecture: Llama (model_type llama). Tensor names come from gguf's own map (gguf.get_tensor_name_map), metadata
keys from GGUFWriter's helpers, and the q / k projections are permuted as llama.cpp's convert_hf_to_gguf.py does
(llama.cpp's rotary layout; a row permutation, so quantized blocks move whole). The tokenizer comes from the Hugging
Face folder when it has a byte-level BPE tokenizer.json (gguf_vocab.py).

Block types (32 weights, one float16 scale each): a weight-only plan whose groups are a multiple of 32 columns maps
exactly, integer for integer: int8 symmetric -> Q8_0 (w = d * q), int4 symmetric -> Q4_0 (w = d * (u - 8), u = q + 8),
int4 with zero points -> Q4_1 (w = d * u + m, d = scale, m = -scale * (zero + 8)); a per-channel scale, or a group of
64 or 128, repeats over its blocks. The only change is the scales' rounding to float16, whose relative weight error
per layer is measured and reported (about 1e-4). N:M layers with int8 values are int8 per channel: Q8_0. Anything
else (groups not a multiple of 32, int8 with zero points) has no exact type: refused unless allow_requantize=True,
which requantizes the compressed weight with gguf's reference quantizer (int8 -> Q8_0, int4 -> Q4_0 / Q4_1) and
reports the added relative error per layer. Float layers and tensors keep their dtype (F32 / F16 / BF16; norms F32).
Refused, naming the layer: W8A8 (GGUF has no int8-activation scheme; llama.cpp quantizes activations its own way),
low-rank splits, quantized convolutions, rows not a multiple of 32 columns, other architectures, rope scaling other
than linear.
Reads the graph view, the config and the tokenizer files; writes folder/model.gguf; preserves the compiled model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fxc.api.export.gguf_vocab import add_vocab
from fxc.api.export.graph_view import GraphView, Int8Activations, Layer, WeightOnly
from fxc.api.export.hf_model import architecture, match
from fxc.errors import ExportError

NAME, FILE, BLOCK = "gguf", "model.gguf", 32
_ROPE_OK = ("default", "linear", None)


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ExportError("format='gguf' needs the gguf package: pip install 'fxc[export]'") from None
    return gguf


class Prepared:
    """What will be written, computed and checked before any file is opened."""

    def __init__(self, view: GraphView, config: dict, allow_requantize: bool = False):
        gguf = _gguf()
        if config.get("model_type") != "llama":
            raise ExportError(f"GGUF export writes the Llama architecture (model_type llama); this model is "
                              f"{config.get('model_type')!r} (export it as compressed-tensors or hf)")
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type")) not in _ROPE_OK:
            raise ExportError(f"rope scaling {rope.get('rope_type', rope.get('type'))!r} is not written by fxc's GGUF "
                              "export (llama.cpp needs its rope_freqs / yarn keys); only default and linear are")
        for layer in view.layers.values():
            _check_layer(layer)
        plan = match(view, architecture(config), NAME)
        self.config, self.dtype = plan.config, plan.dtype
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, int(config["num_hidden_layers"]))
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        self.tensors: list[tuple[str, np.ndarray, object]] = []  # (gguf name, array, raw dtype or None)
        self.errors: dict[str, float] = {}
        self.requantized: list[str] = []  # layers with no exact block type, requantized (allow_requantize)
        types: dict[str, int] = {}
        for name, source in plan.weights.items():
            gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ExportError(f"tensor {name} has no llama.cpp name (gguf's tensor map for llama); GGUF export "
                                  "writes the Llama architecture's tensors only")
            rows = heads if name.endswith("q_proj.weight") or name.endswith("q_proj.bias") else (
                kv_heads if name.endswith("k_proj.weight") or name.endswith("k_proj.bias") else None)
            if isinstance(source, Layer) and isinstance(source.stored, WeightOnly):
                array, qtype, error, exact = _quantized(gguf, source, rows, allow_requantize)
                self.errors[source.fqn] = error
                if not exact:
                    self.requantized.append(source.fqn)
                types[qtype.name] = types.get(qtype.name, 0) + 1
                self.tensors.append((gguf_name, array, qtype))
            else:
                value = source.dense() if isinstance(source, Layer) else source
                value = _permute(value, rows) if rows else value
                self.tensors.append((gguf_name, *_float(gguf, value)))
        self.file_type = getattr(gguf.LlamaFileType, f"MOSTLY_{max(types, key=types.get)}") if types else (
            gguf.LlamaFileType.ALL_F32)
        self.notes = [f"{NAME}: " + (", ".join(f"{count} layers {kind}" for kind, count in types.items())
                                     or "no quantized layers") + (" (requantized where no exact type exists)"
                                                                   if self.requantized else " (exact integers)")]
        self.files = [FILE]

    def write(self, folder: Path, tokenizer_folder: Path | None) -> list[str]:
        gguf = _gguf()
        writer = gguf.GGUFWriter(str(folder / FILE), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        _metadata(gguf, writer, self.config, self.file_type)
        note = add_vocab(writer, tokenizer_folder, int(self.config["vocab_size"]))
        if note:
            self.notes.append(note)
        for name, array, raw_dtype in self.tensors:
            writer.add_tensor(name, array, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return [FILE]


def _check_layer(layer: Layer) -> None:
    if layer.low_rank:
        raise ExportError(f"layer {layer.fqn} is split into two low-rank factors; GGUF stores one weight per layer "
                          "of the original architecture (format='hf' multiplies the factors back)")
    if isinstance(layer.stored, Int8Activations):
        raise ExportError(f"layer {layer.fqn} is W8A8 (int8 activations); GGUF has no int8-activation scheme "
                          "(llama.cpp quantizes activations its own way): export it as compressed-tensors, or compress "
                          "with weight-only quantize{bits=8,group-size=32} for Q8_0")
    if layer.kind != "linear" and layer.stored is not None:
        raise ExportError(f"layer {layer.fqn} is a quantized {layer.kind}; GGUF export writes Llama's linear layers")


def _block_type(gguf, stored: WeightOnly):
    """(GGML type, exact) for a weight-only layer."""
    types = gguf.GGMLQuantizationType
    target = types.Q8_0 if stored.bits == 8 else types.Q4_0 if stored.symmetric else types.Q4_1
    exact = stored.group_size % BLOCK == 0 and (stored.bits == 4 or stored.symmetric)
    return target, exact


def _quantized(gguf, layer: Layer, rows: int | None, allow_requantize: bool):
    """(block bytes [N, K/32 * block bytes], GGML type, relative weight error, exact) of a weight-only layer."""
    stored = layer.stored
    qtype, exact = _block_type(gguf, stored)
    n, k = stored.q.shape
    if k % BLOCK:
        raise ExportError(f"layer {layer.fqn} has {k} columns; GGUF blocks hold {BLOCK} (llama.cpp needs rows of a "
                          f"multiple of {BLOCK})")
    per_channel = stored.scale.shape[1] == 1 and (layer.quant is None or layer.quant.group_size is None)
    scheme = f"w{stored.bits} " + ("per channel" if per_channel else f"group {stored.group_size}") + (
        "" if stored.symmetric else " with zero points")
    if not exact and not allow_requantize:
        raise ExportError(f"layer {layer.fqn} ({scheme}) has no exact GGUF block type ({qtype.name} needs "
                          f"{'symmetric ' if stored.bits == 8 else ''}groups of a multiple of {BLOCK}); pass "
                          "allow_requantize=True (--allow-requantize) to requantize it, the added error reported")
    dense = layer.dense()
    order = _permute(torch.arange(n), rows) if rows else None
    if order is not None:
        dense = dense[order]
    if exact:
        array = _blocks(stored, qtype, gguf, order, layer.fqn)
    else:
        array = gguf.quants.quantize(dense.numpy().astype(np.float32), qtype)
    back = torch.from_numpy(gguf.quants.dequantize(array, qtype).reshape(n, k).copy())
    error = float((back - dense).norm() / dense.norm().clamp_min(1e-30))
    return array, qtype, error, exact


def _blocks(stored: WeightOnly, qtype, gguf, order: torch.Tensor | None, fqn: str) -> np.ndarray:
    """fxc's integers and scales as GGML blocks: [N, K/32 * bytes] uint8 (layouts in the module docstring)."""
    q, scale, zero = stored.q, stored.scale, stored.zero
    if order is not None:
        q, scale = q[order], scale[order]
        zero = zero[order] if zero is not None else None
    n, k = q.shape
    per_block = stored.group_size // BLOCK
    d = scale.repeat_interleave(per_block, dim=1)  # [N, K/32]
    parts = [_half(d, fqn)]
    if qtype == gguf.GGMLQuantizationType.Q8_0:
        parts.append(q.contiguous().view(torch.uint8).reshape(n, k // BLOCK, BLOCK))
    else:
        if qtype == gguf.GGMLQuantizationType.Q4_1:
            parts.append(_half(-(scale * (zero + 8)).repeat_interleave(per_block, dim=1), fqn))
        u = (q.to(torch.int16) + 8).to(torch.uint8).reshape(n, k // BLOCK, BLOCK)
        parts.append(u[..., : BLOCK // 2] | (u[..., BLOCK // 2:] << 4))  # element j low nibble, j + 16 high nibble
    return torch.cat(parts, dim=-1).reshape(n, -1).numpy()


def _half(values: torch.Tensor, fqn: str) -> torch.Tensor:
    half = values.to(torch.float16)
    if not torch.isfinite(half).all():
        raise ExportError(f"layer {fqn} has a scale beyond float16's range (65504), which GGUF blocks store")
    return half.unsqueeze(-1).contiguous().view(torch.uint8)


def _float(gguf, value: torch.Tensor) -> tuple[np.ndarray, object]:
    """A float tensor in its own precision: F32, F16, or BF16 bytes; 1-D tensors (norms) always F32."""
    if value.dim() == 1 or value.dtype == torch.float32 or not value.is_floating_point():
        return value.to(torch.float32).numpy(), None
    if value.dtype == torch.float16:
        return value.numpy(), None
    return gguf.quants.quantize(value.to(torch.float32).numpy(), gguf.GGMLQuantizationType.BF16), (
        gguf.GGMLQuantizationType.BF16)


def _permute(weights: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's rotary layout for q / k rows (convert_hf_to_gguf.py, LlamaModel.permute)."""
    shape = weights.shape
    return weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _metadata(gguf, writer, config: dict, file_type) -> None:
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    rope = config.get("rope_parameters") or {}
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    writer.add_name(Path(str(config.get("_name_or_path") or "fxc-export")).name or "fxc-export")
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(config["vocab_size"]))
    if head_dim != int(config["hidden_size"]) // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    scaling = config.get("rope_scaling") or rope
    if scaling.get("rope_type", scaling.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
