"""smooth-quant: an exactly equivalent model whose linear inputs have flatter channels, folded into
the norm or the previous linear; groups without a foldable producer are left alone and named."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from quant_helpers import run, traced
from tiny_models import tiny_bert, tiny_llama

import fxc
from fxc import ir


class NormMLP(nn.Module):
    """RMSNorm -> (gate, up) -> silu(gate)*up -> down, with one input channel carrying outliers."""

    def __init__(self, dim=64, hidden=128):
        super().__init__()
        self.norm_weight = nn.Parameter(torch.ones(dim))
        self.gate, self.up = nn.Linear(dim, hidden), nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        with torch.no_grad():
            self.norm_weight[3] = 40.0  # an outlier channel, as LLM norms have
            self.norm_weight[17] = 25.0

    def forward(self, x):
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm_weight
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_smoothing_is_exact_and_helps_w8a8():
    model = NormMLP().eval()
    x = torch.randn(4, 16, 64)
    calibration = [torch.randn(4, 16, 64) for _ in range(4)]
    reference = model(x)
    smoothed = fxc.compile(model, "smooth-quant{alpha=0.5}", calibration=calibration, backend="torch")
    assert _relative(smoothed(x), reference) < 1e-5
    gm = smoothed.graph
    assert not torch.equal(ir.get_tensor(gm, "norm_weight"), model.norm_weight)  # folded into the norm
    assert not torch.equal(ir.get_tensor(gm, "up.weight"), model.up.weight)  # down's factor folded into up
    plain = fxc.compile(model, "quantize{act-bits=8}", calibration=calibration, backend="torch")
    both = fxc.compile(model, "smooth-quant,quantize{act-bits=8}", calibration=calibration, backend="torch")
    assert _relative(both(x), reference) < 0.7 * _relative(plain(x), reference)


def test_llama_groups_smoothed_and_o_proj_named_as_unfoldable():
    model, example = tiny_llama(layers=1)
    calibration = [torch.randint(0, 64, (2, 12)) for _ in range(3)]
    gm, am = traced(model, example, calibration)
    weights = {layer.fqn: ir.get_tensor(gm, layer.weight).clone() for layer in ir.weight_layers(gm)}
    reference = model(*example).logits
    (result,) = run(gm, am, "smooth-quant{alpha=0.6}")
    changed = {
        fqn.rsplit(".", 1)[-1] for fqn, w in weights.items() if not torch.equal(ir.get_tensor(gm, fqn + ".weight"), w)
    }
    # q/k/v and gate/up take the factors of their inputs; up also takes down's inverse factors
    assert changed == {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"}
    assert result.summary.startswith("smoothed 6 layers")
    assert "no foldable producer: model.layers.0.self_attn.o_proj" in result.summary
    assert _relative(gm(*example).logits, reference) < 1e-5


def test_post_norm_bert_has_no_foldable_producer_and_is_left_alone():
    model, example = tiny_bert()
    gm, am = traced(model, example, [example])
    before = {k: v.clone() for k, v in gm.state_dict().items()}
    (result,) = run(gm, am, "smooth-quant")
    assert not result.changed  # every linear input feeds a residual too, or comes through gelu / a reshape
    assert "query" in result.summary and "output.dense" in result.summary
    assert all(torch.equal(v, before[k]) for k, v in gm.state_dict().items())
