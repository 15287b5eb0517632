"""benchmarks/forecast.py: per-dataset configs, the official per-horizon settings, the written table."""

import csv
import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "forecast_bench", REPO / "benchmarks" / "forecast.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _leaves(value, prefix=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), value


def test_per_horizon_configs_differ_from_their_base_only_by_the_horizon_and_its_setting():
    """``<model>_<dataset>_<horizon>.yaml`` is ``<model>_<dataset>.yaml`` with that horizon and
    the official script's setting for it (width or learning rate), nothing else."""
    bench = _load_benchmark()
    variants = sorted(bench.CONFIGS.glob("*_*_[0-9]*.yaml"))
    assert len(variants) == 7
    official = {"model.init_args.model.init_args.d_model", "model.init_args.model.init_args.d_ff"}
    official.add("model.init_args.optimizer.init_args.lr")
    for path in variants:
        stem, horizon = path.stem.rsplit("_", 1)
        model, dataset = stem.rsplit("_", 1)
        assert bench.config_for(model, dataset, int(horizon)) == (path, True)
        base = dict(_leaves(yaml.safe_load((bench.CONFIGS / f"{stem}.yaml").read_text())))
        own = dict(_leaves(yaml.safe_load(path.read_text())))
        assert own["data.init_args.pred_len"] == int(horizon) != base["data.init_args.pred_len"]
        changed = {k for k in base.keys() | own.keys() if base.get(k) != own.get(k)}
        assert changed - {"data.init_args.pred_len"} <= official, (path.name, changed)
        assert changed - {"data.init_args.pred_len"}, f"{path.name} only changes the horizon"


def test_the_benchmark_picks_the_per_horizon_config():
    bench = _load_benchmark()
    assert bench.config_for("itransformer", "etth1", 336)[0].name == "itransformer_etth1_336.yaml"
    assert bench.config_for("itransformer", "etth1", 192)[0].name == "itransformer_etth1.yaml"
    assert bench.config_for("informer", "ettm1", 96) == (
        bench.CONFIGS / "informer_etth1.yaml",
        False,
    )


def _run_itransformer_etth1(shared_data, out: Path, horizon: int, *extra: str) -> dict:
    """One quick benchmark run (one epoch of two batches, two validation and test batches); its
    CSV row."""
    csv_path = shared_data / "timeseries" / "ETTh1.csv"
    _load_benchmark().main(
        [
            "--models", "itransformer", "--csv", str(csv_path), "--horizons", str(horizon),
            "--max-epochs", "1", "--limit-train-batches", "2", "--limit-eval-batches", "2",
            "--out", str(out), *extra,
        ]
    )  # fmt: skip
    with open(out / "forecast_etth1.csv") as f:
        (row,) = list(csv.DictReader(f))
    return row


def _itransformer_params(d: int, lookback: int, horizon: int, layers: int = 2) -> int:
    """Closed form: embedding, layers (attention + FFN with d_ff = d + two LayerNorms), final
    LayerNorm, projection."""
    layer = 4 * (d * d + d) + (d * d + d) * 2 + 2 * 2 * d
    return (lookback * d + d) + layers * layer + 2 * d + (d * horizon + horizon)


@pytest.mark.slow
def test_benchmark_applies_the_official_horizon_setting(shared_data, tmp_path):
    """iTransformer ETTh1-336 runs with d_model = d_ff = 512 (official script), not the config's 256."""
    row = _run_itransformer_etth1(shared_data, tmp_path, 336)
    assert row["config"] == "itransformer_etth1_336.yaml, max 1 epochs, eval batches 2"
    assert int(row["params"]) == _itransformer_params(512, 96, 336)
    assert row["published_mse"] == "0.487"
    assert 0 < float(row["mse"]) < 3
    assert (tmp_path / "forecast_etth1.md").read_text().count("\n") == 3


@pytest.mark.slow
def test_benchmark_set_seed_and_time_limit_reach_the_run(shared_data, tmp_path):
    """--set changes the model (parameter count), --seed and --max-time are listed and applied."""
    row = _run_itransformer_etth1(
        shared_data, tmp_path, 96,
        "--set", "model.init_args.model.init_args.d_model", "64",
        "--set", "model.init_args.model.init_args.d_ff", "64",
        "--seed", "7", "--max-time", "00:00:10:00",
    )  # fmt: skip
    assert row["config"] == (
        "itransformer_etth1.yaml, max 1 epochs, eval batches 2, max time 00:00:10:00, seed 7, "
        "d_model 64, d_ff 64"
    )
    assert int(row["params"]) == _itransformer_params(64, 96, 96)
    run_dir = tmp_path / "runs" / "bench_itransformer_etth1_96" / "version_0"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())  # saved by the CLI machinery
    assert config["seed_everything"] == 7 and config["trainer"]["max_time"] == "00:00:10:00"


@pytest.mark.slow
def test_jobs_run_pairs_in_processes_and_report_the_failed_ones(shared_data, tmp_path):
    """--jobs 2: two horizons in two processes give the same table; a bad model fails alone."""
    with pytest.raises(SystemExit, match=r"runs failed \(see their logs\): nosuchmodel_96"):
        _run_itransformer_etth1(
            shared_data, tmp_path, 96, "--horizons", "96", "192",
            "--models", "itransformer", "nosuchmodel", "--jobs", "2",
        )  # fmt: skip
    with open(tmp_path / "forecast_etth1.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["horizon"]) for r in rows] == [
        ("itransformer", "96"),
        ("itransformer", "192"),
    ]
    assert int(rows[1]["params"]) == _itransformer_params(256, 96, 192)
    assert (
        "no config for model 'nosuchmodel'"
        in (tmp_path / "jobs" / "nosuchmodel_96.log").read_text()
    )
