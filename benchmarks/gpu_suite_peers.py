"""Peer kernels for benchmarks/gpu_suite.py: the same scheme through torchao and through Inductor.

    for name, ms in times("w8a16", case, x, bench): ...   # ms is None when the peer is unavailable

- torchao (if installed): quantize_ an nn.Linear holding the case's dense weight with the matching
  config (Int8WeightOnly, Int4WeightOnly(group_size=128), Int8DynamicActivationInt8Weight), then
  torch.compile it (torchao's recommended use).
- Inductor: torch.compile of the scheme written in plain torch (dequantize then F.linear; per-token
  quantization then torch._int_mm), so Inductor generates its own fused kernels.
- torch 2:4: torch.sparse.to_sparse_semi_structured (cuSPARSELt / CUTLASS) for the sparse scheme;
  torch BSR: the block-sparse weight as a torch BSR tensor (64 x 64 blocks) for block50.
Peers run only for PEER_SHAPES to keep the suite under five minutes (each torch.compile costs
seconds). Reads and writes nothing.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from fxc.ir import ops, qformat

PEER_SHAPES = {(1, 8192, 8192), (2048, 8192, 8192), (8192, 8192, 8192)}


def times(scheme: str, case, x: torch.Tensor, bench) -> list[tuple[str, float | None]]:
    m, k = x.shape
    n = case.dense.shape[0]
    if (m, n, k) not in PEER_SHAPES:
        return []
    out = []
    peers = (("torchao", _torchao), ("inductor", _inductor), ("torch 2:4", _semi_structured), ("torch BSR", _bsr))
    for name, build in peers:
        try:
            fn = build(scheme, case, x)
        except Exception as error:  # a peer missing or failing is reported, not fatal
            out.append((f"{name}: {type(error).__name__}", None))
            continue
        if fn is not None:
            fn(x)
            out.append((name, bench(lambda f=fn: f(x))))
    return out


def _torchao(scheme: str, case, x):
    if importlib.util.find_spec("torchao") is None or scheme not in ("w8a16", "w4a16", "w8a8"):
        return None
    import torchao.quantization as tq

    configs = {
        "w8a16": lambda: tq.Int8WeightOnlyConfig(),
        "w4a16": lambda: tq.Int4WeightOnlyConfig(group_size=128),
        "w8a8": lambda: tq.Int8DynamicActivationInt8WeightConfig(),
    }
    linear = torch.nn.Linear(x.shape[1], case.dense.shape[0], bias=False, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        linear.weight.copy_(case.dense)
    tq.quantize_(linear, configs[scheme]())
    return torch.compile(linear)


def _inductor(scheme: str, case, x):
    if scheme not in ("w8a16", "w4a16", "w8a8"):
        return None
    if scheme in ("w8a16", "w4a16"):
        qweight, scale, zero_point, _, bits = case.weights
        groups = scale.shape[1]

        def weight_only(inp):
            q = qformat.unpack(qweight, bits).to(inp.dtype).view(qweight.shape[0], groups, -1)
            if zero_point is not None:
                q = q - zero_point.to(inp.dtype).unsqueeze(-1)
            return F.linear(inp, (q * scale.to(inp.dtype).unsqueeze(-1)).view(qweight.shape[0], -1))

        return torch.compile(weight_only, dynamic=False)
    qweight, weight_scale = case.weights[:2]

    def w8a8(inp):
        amax = inp.abs().amax(dim=-1, keepdim=True).float()
        sx = torch.where(amax > 0, amax / 127.5, torch.ones_like(amax))
        qx = torch.round(inp.float() / sx).clamp(-128, 127).to(torch.int8)
        acc = torch._int_mm(qx, qweight.T)
        return (acc.float() * sx * weight_scale.view(1, -1)).to(inp.dtype)

    return torch.compile(w8a8, dynamic=False)


def _semi_structured(scheme: str, case, x):
    if scheme != "sparse24":
        return None
    values, indices, _, _, n, m = case.weights
    dense = ops.densify_nm(values, indices, n, m).to(x.dtype)
    sparse = torch.sparse.to_sparse_semi_structured(dense)
    return lambda inp: F.linear(inp, sparse)


def _bsr(scheme: str, case, x):
    if scheme != "block50":
        return None
    sparse = case.weights[0].to_sparse_bsr((64, 64))
    return lambda inp: F.linear(inp, sparse)
