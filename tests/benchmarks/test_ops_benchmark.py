"""benchmarks/ops.py runs on the CPU at tiny sizes (so it never rots): every op, the automatic
backend, the plain-loop peer where there is one, the minimum bytes and the bandwidth floor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ops.py"


def test_ops_benchmark_runs_on_cpu():
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--lengths", "9", "--dims", "3", "--head-dims", "4",
         "--batch", "1", "--d-state", "2", "--heads", "2", "--variates", "2", "--repeats", "1",
         "--threads", "1", "--backends", "auto", "loop", "mamba_ssm", "--markdown"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "measured copy bandwidth" in out
    for op in ("selective_scan", "linear_scan", "ssm2d", "causal_conv1d", "retention", "gla",
               "mlstm"):  # fmt: skip
        assert f"| {op} | " in out and f"{op} " in out, op
    # The loop peer exists for the two scans only; mamba-ssm is a CUDA peer, absent here.
    assert "| linear_scan | 1x9x3x2 | loop |" in out
    assert "| selective_scan | 1x3x9 | loop |" in out
    assert "| gla | 1x2x9x4 | loop |" not in out
    assert "mamba_ssm" not in out.split("| op |")[1]
    assert "failed" not in out
