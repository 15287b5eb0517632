"""benchmarks/train_speed.py times our Lightning loop over the real ETTh1 training split."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_times_our_loop_over_the_etth1_training_batches(shared_data):
    spec = importlib.util.spec_from_file_location(
        "train_speed", REPO / "benchmarks" / "train_speed.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    seconds, timed, batches = bench.time_ours(
        "itransformer", steps=2, data=shared_data / "timeseries"
    )
    assert timed == 2  # two timed steps after the two warm-up batches
    assert batches == 8449 // 32  # ETTh1 training windows, full batches only
    assert 0 < seconds < 60


def test_repeats_report_the_median_and_range(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "train_speed", REPO / "benchmarks" / "train_speed.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    times = iter([0.030, 0.010, 0.020])  # seconds per step of three runs
    monkeypatch.setattr(bench, "time_ours", lambda model, steps, data: (next(times), steps, 264))
    bench.main(["--models", "itransformer", "--steps", "2", "--repeats", "3"])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| itrans")][0]
    # median 20.0 ms, range 10.0-30.0 ms, 264 batches per epoch -> 5.3 s per epoch
    assert row.startswith("| itransformer | 20.0 [10.0-30.0] | 5.3 | - | - | - |"), row
