"""benchmarks/vision.py: the size table is within 5% of the papers, the scan MACs follow the
official formula, and the speed and memory tables run (quick settings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "vision.py"
_spec = importlib.util.spec_from_file_location("vision_benchmark", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("variant", ["mambaout_femto", "efficientvmamba_tiny", "vir_small"])
def test_parameters_and_macs_within_5_percent_of_the_papers(variant):
    (row,) = bench.size_table([variant])
    for key in ("params diff", "MACs diff"):
        assert abs(float(row[key].rstrip("%"))) <= 5.0, row


def test_scan_macs_follow_the_official_formula():
    from mixerzoo.core import create_mixer

    mixer = create_mixer("ss2d", d_model=8, d_state=4, ssm_ratio=2.0)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mixer = mixer

        def forward(self, x):
            return self.mixer.forward_2d(x.permute(0, 2, 3, 1))[0]

    scans: list[int] = []
    with bench._counted_scans(scans):
        Wrap()(torch.randn(1, 8, 6, 6))
    # One scan over the 4 directions x 16 channels, 9 tokens per 3x3 sub-grid, 4 states.
    assert scans == [9 * 1 * 9 * 64 * 4 + 1 * 64 * 9]


@pytest.mark.slow
def test_speed_and_memory_tables_run():
    (row,) = bench.speed_table(["mambaout_femto"], repeats=1, batch=1)
    assert float(row["max |logit diff|"]) == 0.0 and float(row["images/s (ours)"]) > 0
    result = bench._memory_child("recurrent", 64, 1)
    assert result["diff"] < 1e-4 and result["peak_mb"] >= 0


@pytest.mark.slow
def test_training_table_runs_the_cifar_configs_model():
    rows = bench.train_table(repeats=1, batch=8)
    assert [r["per batch of 8"] for r in rows] == [
        "data: PadCropFlip (numpy)",
        "data: torchvision + timm (PIL)",
        "step: float32",
        "step: bf16 autocast",
        "step: bf16-mixed",
    ]
    assert all(float(r["ms"]) > 0 for r in rows)
    assert rows[1]["speed-up"] == rows[2]["speed-up"] == "1.00x"  # each group's peer
