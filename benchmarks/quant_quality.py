"""Quantization quality on real models: SmolLM2-135M perplexity (with llm-compressor / torchao peers),
MiniLM embeddings and WordSim-353, EfficientNet-Lite0 top-1 agreement on real photos.

    python benchmarks/quant_quality.py smollm2 --calib 16 --eval 8 --seq 512 \
        --peer-llmc /tmp/peer-llmc/bin/python --peer-torchao /tmp/peer-torchao/bin/python
    python benchmarks/quant_quality.py minilm
    python benchmarks/quant_quality.py efficientnet           # needs efficientnet-lite-pytorch, scikit-image
    ... --no-record                                           # print only

SmolLM2: one trace, then every configuration compiles a copy of that graph with the same wiki_splits
calibration (first 60% of the dump) and is scored on the same held-out windows (last 40%). Mixed precision
runs plan and quantize as two pipelines on one graph, so the size the plan promised is checked against
fxc.ir.cost.model_bytes of the quantized graph. Peers run in their own venvs (benchmarks/quant_peers.py) on
the same token ids. MiniLM and EfficientNet live in benchmarks/quant_quality_vision.py. Reads the
real-model packages; appends to benchmarks/RESULTS.md; writes a temporary token file for the peers.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402

import fxc  # noqa: E402
from fxc.ir.cost import model_bytes  # noqa: E402
from fxc.passes.rewrites.mixed_precision import planned_bytes  # noqa: E402
from fxc.passmgr.calibration import Calibration  # noqa: E402

SMOLLM = {  # name: (plan pipeline or None, quantize pipeline)
    "W8 per-channel RTN": (None, "quantize{bits=8}"),
    "W4 g64 GPTQ": (None, "quantize{method=gptq,bits=4,group-size=64}"),
    "W4 g64 GPTQ (fit=dense)": (None, "quantize{method=gptq,bits=4,group-size=64,fit=dense}"),  # no stream fit
    "W4 g64 GPTQ (fit=layer)": (None, "quantize{method=gptq,bits=4,group-size=64,fit=layer}"),  # classic GPTQ
    # mixed GPTQ plans score each candidate by the error GPTQ leaves (method=gptq), not RTN's; the default
    # measure (auto = jacobian for linear layers) weighs each layer's error by how it reaches the output
    "mixed 4.5 bits GPTQ": (
        "mixed-precision{avg-bits=4.5,method=gptq,print-allocation=false}",
        "quantize{method=gptq}",
    ),
    "mixed 4.5 bits GPTQ (measure=layer)": (
        "mixed-precision{avg-bits=4.5,method=gptq,measure=layer,print-allocation=false}",
        "quantize{method=gptq}",
    ),
    "mixed 6 bits GPTQ": ("mixed-precision{avg-bits=6.0,method=gptq,print-allocation=false}", "quantize{method=gptq}"),
    "W4 g64 RTN": (None, "quantize{bits=4,group-size=64}"),
    "mixed 4.5 bits RTN": ("mixed-precision{avg-bits=4.5,print-allocation=false}", "quantize"),
    "mixed 6 bits RTN": ("mixed-precision{avg-bits=6.0,print-allocation=false}", "quantize"),
    "W8A8 dynamic": (None, "quantize{act-bits=8}"),
    "W8A8 dynamic + SmoothQuant": (None, "smooth-quant{alpha=0.5},quantize{act-bits=8}"),
}
PEERS = {  # peer config: which venv option runs it
    "llm-compressor GPTQ W4A16 g64": "llmc",
    "llm-compressor RTN W4A16 g64": "llmc",
    "torchao int8 weight-only": "torchao",
    "torchao int8 dynamic (W8A8)": "torchao",
}


def quantized_layer_bits(gm) -> tuple[int, int]:
    """(stored bytes, weights) of the layers quantize replaced: their buffers except the bias."""
    from fxc import ir
    from fxc.ir import cost

    stored = weights = 0
    for node in cost.layer_nodes(gm):
        if not str(node.target).startswith("fxc."):
            continue
        bias_index = 3 if node.target == torch.ops.fxc.int8_linear.default else 4
        tensors = [a for i, a in enumerate(node.args) if isinstance(a, torch.fx.Node) and i != bias_index]
        stored += sum(ir.get_tensor(gm, a.target).nbytes for a in tensors if a.op == "get_attr")
        shape = cost.weight_shape(gm, node)
        weights += shape[0] * int(torch.tensor(shape[1:]).prod())
    return stored, weights


def run_smollm(args) -> tuple[str, str]:
    model, tokenizer = harness.load_smollm2()
    calib, evaluation = harness.wiki_splits(tokenizer, args.seq, args.calib, args.eval)
    base = fxc.trace(model, (calib[0],))
    dense_ppl = harness.perplexity(base, evaluation)
    dense_mb = model_bytes(base) / 2**20
    rows = [("fp32 (dense)", dense_ppl, "32", dense_mb, 0.0, "")]
    print(rows[-1], flush=True)
    plans: dict[str, str] = {}
    for name, (plan, quant) in SMOLLM.items():
        if args.only and name not in args.only.split(","):
            continue
        try:
            rows.append(_smollm_config(name, plan, quant, base, calib, evaluation, plans))
        except Exception as error:  # one failing configuration must not lose the others
            rows.append((name, float("nan"), "-", None, 0.0, f"failed: {type(error).__name__}: {error}"[:150]))
        print(rows[-1], flush=True)
    peer_rows = run_peers(args, calib, evaluation)
    table = _table(rows + peer_rows, dense_ppl)
    notes = "\n".join(f"- {name}: {summary}" for name, summary in plans.items())
    return table, notes


_PLAN_GRAPH: dict[str, object] = {}  # one planning graph, so sensitivity is computed once for both budgets


def _smollm_config(name, plan, quant, base, calib, evaluation, plans) -> tuple:
    check = ""
    seconds = 0.0  # the passes' time only: copying the 513 MB graph for each configuration is the harness's
    if plan is not None:
        if not _PLAN_GRAPH:
            graph = copy.deepcopy(base)
            _PLAN_GRAPH.update(graph=graph, am=fxc.AnalysisManager(graph, Calibration.of(calib)))
        with harness.timed() as t:
            (result,) = fxc.Pipeline.parse(plan).run(_PLAN_GRAPH["graph"], _PLAN_GRAPH["am"])
        seconds += t.seconds
        plans[name] = result.summary
        gm = copy.deepcopy(_PLAN_GRAPH["graph"])
        expected, dense = planned_bytes(gm)
        promised = model_bytes(gm) - dense + expected
    else:
        gm = copy.deepcopy(base)
    with harness.timed() as t:
        fxc.Pipeline.parse(quant).run(gm, fxc.AnalysisManager(gm, Calibration.of(calib)))
    seconds += t.seconds
    if plan is not None:
        check = "= plan" if model_bytes(gm) == promised else f"plan {promised:,} != {model_bytes(gm):,}"
    stored, weights = quantized_layer_bits(gm)
    ppl = harness.perplexity(gm, evaluation)
    return (name, ppl, f"{8 * stored / weights:.3f}", model_bytes(gm) / 2**20, seconds, check)


def run_peers(args, calib, evaluation) -> list[tuple]:
    venvs = {"llmc": args.peer_llmc, "torchao": args.peer_torchao}
    if not any(venvs.values()):
        return []
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "tokens.pt"
        torch.save({"calib": calib, "eval": evaluation}, data)
        gguf = _gguf()
        for config, venv in PEERS.items():
            python = venvs[venv]
            if not python:
                continue
            command = [python, str(Path(__file__).with_name("quant_peers.py")), "--gguf", gguf, "--data", str(data)]
            done = subprocess.run([*command, "--config", config], capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                rows.append((config, float("nan"), "-", float("nan"), 0.0, "failed: " + " | ".join(tail)[:150]))
            else:
                r = json.loads(line[len("RESULT ") :])
                rows.append((config, r["ppl"], r["bits"], r["mb"], r["seconds"], r.get("note", "")))
            print(rows[-1], flush=True)
    return rows


def _gguf() -> str:
    from fxc.eval.realdata import smollm2_gguf

    return str(smollm2_gguf())


def _table(rows, dense_ppl) -> str:
    head = f"{'configuration':<32} {'ppl':>8} {'Δppl':>7} {'bits/w':>7} {'MiB':>7} {'quant s':>8}  size check"
    lines = [head, "-" * len(head)]
    for name, ppl, bits, mb, seconds, check in rows:
        size = "-" if mb is None or mb != mb else f"{mb:.1f}"
        lines.append(f"{name:<32} {ppl:>8.3f} {ppl - dense_ppl:>+7.3f} {bits:>7} {size:>7} {seconds:>8.1f}  {check}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=("smollm2", "minilm", "efficientnet"))
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--eval", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--peer-llmc", default=None, help="python of a venv with llmcompressor")
    parser.add_argument("--peer-torchao", default=None, help="python of a venv with torchao")
    parser.add_argument("--only", default="", help="comma-separated SmolLM2 configuration names to run")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.model == "smollm2":
        table, notes = run_smollm(args)
        title = "Quantization on SmolLM2-135M (wiki perplexity)"
        notes = (
            f"Calibration {args.calib} x {args.seq} tokens, evaluation {args.eval} x {args.seq} held-out tokens. "
            "bits/w: stored bits per weight of the quantized layers, scales and zero points included "
            "(lm_head and embeddings stay fp32). quant s: quantization wall time (fxc: pipeline on a traced "
            "graph; peers: their oneshot / quantize_ call), on a 2-core machine shared with other jobs.\n" + notes
        )
    else:
        import quant_quality_vision

        table, notes = quant_quality_vision.run(args.model, args)
        title = {"minilm": "Quantization on all-MiniLM-L6-v2", "efficientnet": "Quantization on EfficientNet-Lite0"}[
            args.model
        ]
    print(table)
    if not args.no_record:
        harness.record(title, harness.this_command(), table, notes)


if __name__ == "__main__":
    main()
