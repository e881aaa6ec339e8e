"""The report's totals: tied weights counted once, the dense size kept through save/load, and a
note saying why the drift column is empty."""

import torch
import torch.nn as nn
from tiny_models import mlp

import fxc


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.fc = nn.Linear(16, 16)
        self.head = nn.Linear(16, 100, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.relu(self.fc(self.emb(ids))))


def test_tied_weights_are_counted_once():
    model = TiedLM()
    cm = fxc.compile(model, None, example_inputs=(torch.randint(0, 100, (1, 8)),))
    report = cm.report(show=False)
    unique = sum(p.numel() * 4 for p in model.parameters())  # parameters() yields a tied tensor once
    assert report.total_bytes == report.model_bytes == unique
    assert [r.tied_to for r in report.rows] == ["", "", "embedding (head)"]
    assert "tied to embedding" in str(report)


def test_empty_drift_column_is_explained():
    model, (x,) = mlp()
    without = fxc.compile(model, None, example_inputs=(x,)).report(show=False)
    assert "drift: not measured" in str(without)
    measured = fxc.compile(model, "quantize{bits=8}", example_inputs=(x,), calibration=[(x,)]).report(show=False)
    assert "drift: not measured" not in str(measured)


def test_dense_size_survives_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 16))
    calibration = [(torch.randn(8, 16),) for _ in range(2)]
    cm = fxc.compile(model, "prune{pattern=channel,sparsity=0.5}", calibration=calibration)
    loaded = fxc.load(fxc.save(cm, tmp_path / "model"))
    dense = sum(p.numel() * 4 for p in model.parameters())
    assert loaded.report(show=False).dense_bytes == cm.report(show=False).dense_bytes == dense
