"""Every fused Triton kernel compiles for an H100 / H200 (sm_90), checked on any machine (no GPU
needed): benchmarks/compile_kernels.py in a fresh process without the interpreter (compilation
to a cubin with Triton's bundled ptxas). The scan and convolution kernels must not spill; the
chunked GLA and mLSTM kernels are reported (some of their configurations spill; see RESULTS.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "compile_kernels.py"


def _compile(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--arch", "90", *args],
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.mark.slow
@pytest.mark.parametrize("family", ["linear_scan", "selective_scan", "causal_conv1d"])
def test_scan_and_conv_kernels_compile_for_sm90_without_spills(family):
    out = _compile("--only", family, "--no-spills")
    assert "all compiled, no spills" in out and family in out, out


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gla", "mlstm"])
def test_chunked_attention_kernels_compile_for_sm90(family):
    out = _compile("--only", family)
    assert "all compiled" in out, out
    for name in ("state", "output", "dstate", "grad"):
        assert f"{family} {name}" in out, out
