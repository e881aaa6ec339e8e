"""Whole-model part of benchmarks/gpu_suite.py: one decode step of the decoder layers of a random
Llama-3.2-1B-shaped model (16 layers, hidden 2048, MLP 8192, 32 query / 8 key-value heads of 64), compiled
by fxc for backend="triton" per scheme, against the same model in torch bf16.

    text = decode_step(bench, cache_dir, budget_s, started, dry_run=False)   # the table's text

The model is plain torch (no transformers needed on the GPU machine): per layer RMSNorm, q / k / v / o
projections, scaled_dot_product_attention over a single position (one token with an empty KV cache:
each head gets its value, so the step's work is its linear layers), residual, RMSNorm, SwiGLU MLP
(gate, up, down), residual; no embedding or LM head. x is one token, [1, 1, 2048] bf16. Each scheme is
the model compiled with its pipeline text (SCHEMES: fxc.compile's passes); the bf16 baseline and each
compiled model are timed by `bench.timer` (CUDA-graph replay on a GPU). With dry_run the model shrinks
to 2 layers of hidden 128, in Triton's interpreter on the CPU. Reads nothing; writes the Triton kernel
files into cache_dir.
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn

import fxc

SCHEMES = {  # name -> fxc.compile passes
    "int8 weight-only": "quantize{bits=8}",
    "int4 weight-only, groups of 128": "quantize{bits=4,group-size=128}",
    "W8A8 (dynamic int8 activations)": "quantize{act-bits=8}",
}
LLAMA_1B = dict(layers=16, hidden=2048, mlp=8192, heads=32, kv_heads=8, head_dim=64)
DRY = dict(layers=2, hidden=128, mlp=256, heads=4, kv_heads=2, head_dim=32)  # groups of 128 still divide K


class RMSNorm(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


class Layer(nn.Module):
    def __init__(self, hidden: int, mlp: int, heads: int, kv_heads: int, head_dim: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.attn_norm, self.mlp_norm = RMSNorm(hidden), RMSNorm(hidden)
        self.q = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o = nn.Linear(heads * head_dim, hidden, bias=False)
        self.gate = nn.Linear(hidden, mlp, bias=False)
        self.up = nn.Linear(hidden, mlp, bias=False)
        self.down = nn.Linear(mlp, hidden, bias=False)

    def forward(self, x):  # x: [batch, 1, hidden]
        h = self.attn_norm(x)
        heads = lambda t, n: t.view(t.shape[0], 1, n, self.head_dim).transpose(1, 2)
        q, k, v = heads(self.q(h), self.heads), heads(self.k(h), self.kv_heads), heads(self.v(h), self.kv_heads)
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # one position: each head's value
        x = x + self.o(attended.transpose(1, 2).reshape(x.shape[0], 1, -1))
        h = self.mlp_norm(x)
        return x + self.down(torch.nn.functional.silu(self.gate(h)) * self.up(h))


class Decoder(nn.Module):
    def __init__(self, layers: int, **sizes):
        super().__init__()
        self.layers = nn.ModuleList(Layer(**sizes) for _ in range(layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def decode_step(bench, cache_dir, budget_s: float, started: float, dry_run: bool = False) -> str:
    """Milliseconds of one decode step, bf16 against each fxc scheme; the table's text."""
    from gpu_suite_timing import table

    sizes = DRY if dry_run else LLAMA_1B
    torch.manual_seed(0)
    model = Decoder(**sizes).to(bench.device, torch.bfloat16).eval()
    for parameter in model.parameters():  # linear weights of a trained model's scale: activations stay near 1
        if parameter.dim() == 2:
            parameter.data.normal_(0, sizes["hidden"] ** -0.5)
    x = torch.randn(1, 1, sizes["hidden"], device=bench.device, dtype=torch.bfloat16)
    with torch.no_grad():
        want = model(x).float()
        t_bf16 = bench.timer(lambda: model(x))
    rows = [("torch bf16", f"{t_bf16 * 1e3:.0f}", "1.00", "", "")]
    for name, passes in SCHEMES.items():
        if time.perf_counter() - started > budget_s:
            rows.append((name, "skipped: time budget", "", "", ""))
            continue
        cm = fxc.compile(model, passes=passes, example_inputs=(x,), backend="triton",
                         backend_options={"cache_dir": str(cache_dir)})
        with torch.no_grad():
            got = cm(x).float()
            t = bench.timer(lambda cm=cm: cm(x))
        error = ((got - want).norm() / want.norm()).item()
        fallbacks = sum(sum(call.fallbacks.values()) for call in cm.runner.calls.values())
        rows.append((name, f"{t * 1e3:.0f}", f"{t_bf16 / t:.2f}", f"{error:.3f}", fallbacks))
    shape = ", ".join(f"{key} {value}" for key, value in sizes.items())
    return f"decoder layers ({shape}), one token\n" + table(
        ("model", "us per step", "vs bf16", "rel. error vs bf16", "torch fallbacks"), rows)
