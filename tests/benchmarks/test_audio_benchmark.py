"""benchmarks/audio.py's model table and its side-by-side FRCRN comparison run at tiny sizes (so
they never rot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "audio.py"


def _run(*args: str) -> str:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_profile_counts_parameters_and_macs():
    out = _run("profile", "--models", "frcrn", "--no-timing")
    # 13.96 M parameters, as the official model; MACs per second of audio counted, no timing.
    row = next(line for line in out.splitlines() if line.startswith("| frcrn |"))
    cells = row.strip("| ").split(" | ")
    assert cells[1:3] == ["13.96 M", "13.96 M"]
    assert float(cells[3].removesuffix(" G")) > 1 and cells[4] == "-"


def test_stream_compare_runs_two_versions_side_by_side():
    out = _run("stream-compare", "--rev", "HEAD", "--model", "frcrn_cpu", "--seconds", "0.3",
               "--rounds", "1", "--chunks", "0", "320", "--threads", "1")  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0] == "| chunk | RTF at HEAD | RTF working tree | speed-up |"
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| offline", "| 20 ms"]
    for row in rows[1:]:
        before, after = (float(v) for v in row.split(" | ")[1:3])
        assert before > 0 and after > 0


def test_stream_compare_names_a_revision_it_cannot_read():
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "stream-compare", "--rev", "no-such-revision"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode != 0
    assert "cannot read audio/models/frcrn.py at revision 'no-such-revision'" in run.stderr


def test_profile_times_the_official_computation_beside_ours():
    out = _run("profile", "--models", "frcrn", "--seconds", "0.3", "--repeats", "1",
               "--stream-chunks", "1600", "--threads", "1", "--official-peer")  # fmt: skip
    ours = next(line for line in out.splitlines() if line.startswith("| frcrn |"))
    peer = next(line for line in out.splitlines() if line.startswith("| frcrn, official"))
    assert float(ours.split(" | ")[4]) > 0 and float(peer.split(" | ")[4]) > 0
