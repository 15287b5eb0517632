"""Long-term forecasting benchmark: train each model with its published setting, test, tabulate.

Usage::

    python benchmarks/forecast.py --models itransformer s_mamba --csv ../shared/data/timeseries/ETTh1.csv \
        --horizons 96 192 336 720 [--lookback 96] [--max-epochs N] [--out benchmarks/results]

For each model and horizon the published setting is the config
``configs/timeseries/<model>_<dataset>_<horizon>.yaml`` when it exists (the horizons whose official
script changes the width or learning rate), else ``<model>_<dataset>.yaml`` with the horizon set
(``dataset`` = the CSV's stem, lower case), else ``<model>_etth1.yaml`` with the data swapped (said
in the table's ``config`` column). The horizon is the data's ``pred_len`` (the model's is linked
to it). Each run trains through the same ``mixerzoo`` CLI machinery (early stopping, best
checkpoint), evaluates on the standard test split (Time-Series-Library protocol, no dropped
window) and reports MSE/MAE on scaled values beside the published figure where known, the train
time and the parameter count. The table is printed and written as CSV and Markdown.

``--jobs N`` runs up to N (model, horizon) pairs at once, each in its own process (its log in
``<out>/jobs/``), e.g. all horizons of two models sharing one GPU; the table is the same.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Published test MSE / MAE at lookback 96, keyed by (dataset, horizon, model): iTransformer
# (arXiv 2310.06625, full-results table) and S-Mamba (arXiv 2403.11144, full ETT table, whose
# Autoformer baseline figures it takes from the iTransformer paper); Informer as in the TimesNet
# paper's full table (arXiv 2210.02186).
_PUBLISHED_TABLE = {
    # dataset: {horizon: {model: (mse, mae)}}
    "etth1": {
        96: {
            "itransformer": (0.386, 0.405),
            "s_mamba": (0.386, 0.405),
            "autoformer": (0.449, 0.459),
            "informer": (0.865, 0.713),
        },
        192: {
            "itransformer": (0.441, 0.436),
            "s_mamba": (0.443, 0.437),
            "autoformer": (0.500, 0.482),
            "informer": (1.008, 0.792),
        },
        336: {
            "itransformer": (0.487, 0.458),
            "s_mamba": (0.489, 0.468),
            "autoformer": (0.521, 0.496),
            "informer": (1.107, 0.809),
        },
        720: {
            "itransformer": (0.503, 0.491),
            "s_mamba": (0.502, 0.489),
            "autoformer": (0.514, 0.512),
            "informer": (1.181, 0.865),
        },
    },
    "ettm1": {
        96: {
            "itransformer": (0.334, 0.368),
            "s_mamba": (0.333, 0.368),
            "autoformer": (0.505, 0.475),
            "informer": (0.672, 0.571),
        },
        192: {
            "itransformer": (0.377, 0.391),
            "s_mamba": (0.376, 0.390),
            "autoformer": (0.553, 0.496),
            "informer": (0.795, 0.669),
        },
        336: {
            "itransformer": (0.426, 0.420),
            "s_mamba": (0.408, 0.413),
            "autoformer": (0.621, 0.537),
            "informer": (1.212, 0.871),
        },
        720: {
            "itransformer": (0.491, 0.459),
            "s_mamba": (0.475, 0.448),
            "autoformer": (0.671, 0.561),
            "informer": (1.166, 0.823),
        },
    },
}
PUBLISHED: dict[tuple[str, int, str], tuple[float, float]] = {
    (dataset, horizon, model): figures
    for dataset, by_horizon in _PUBLISHED_TABLE.items()
    for horizon, by_model in by_horizon.items()
    for model, figures in by_model.items()
}

CONFIGS = REPO / "configs" / "timeseries"


def config_for(model: str, dataset: str, horizon: int) -> tuple[Path, bool]:
    """The config of ``model`` on ``dataset`` at ``horizon``: its own per-horizon file, else its
    dataset file (True), else its ETTh1 file as a fallback (False)."""
    for name in (f"{model}_{dataset}_{horizon}.yaml", f"{model}_{dataset}.yaml"):
        if (CONFIGS / name).is_file():
            return CONFIGS / name, True
    base = CONFIGS / f"{model}_etth1.yaml"
    if not base.is_file():
        known = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
        raise SystemExit(f"no config for model {model!r}; configs/timeseries holds: {known}")
    return base, False


def run_one(model: str, csv_path: Path, horizon: int, args: argparse.Namespace) -> dict:
    dataset = csv_path.stem.lower()
    config, exact = config_for(model, dataset, horizon)
    name = f"bench_{model}_{dataset}_{horizon}"
    overrides = [
        "--config",
        str(config),
        "--data.init_args.data_path",
        str(csv_path.resolve()),
        "--data.init_args.root",
        "null",
        "--data.init_args.pred_len",
        str(horizon),
        "--trainer.logger.init_args.save_dir",
        str(args.out / "runs"),
        "--trainer.logger.init_args.name",
        name,
        "--trainer.default_root_dir",
        str(args.out / "runs" / name),
        "--trainer.enable_progress_bar",
        str(args.progress).lower(),
    ]
    if args.lookback is not None:
        label_len = args.label_len if args.label_len is not None else args.lookback // 2
        overrides += [
            "--data.init_args.seq_len",
            str(args.lookback),
            "--data.init_args.label_len",
            str(label_len),
        ]
    if args.features is not None:
        overrides += ["--data.init_args.features", args.features]
    if args.max_epochs is not None:
        overrides += ["--trainer.max_epochs", str(args.max_epochs)]
    if args.limit_train_batches is not None:
        overrides += ["--trainer.limit_train_batches", str(args.limit_train_batches)]
    if args.limit_eval_batches is not None:
        for stage in ("val", "test"):
            overrides += [f"--trainer.limit_{stage}_batches", str(args.limit_eval_batches)]
    if args.max_time is not None:
        overrides += ["--trainer.max_time", args.max_time]
    if args.seed is not None:
        overrides += ["--seed_everything", str(args.seed)]
    for key, value in args.set or []:
        overrides += ["--" + key, value]
    # Imported here, after the config is found: a run without a config fails at once.
    import torch

    from mixerzoo.core.cli import MixerzooCLI

    torch.set_float32_matmul_precision(args.matmul_precision)
    cli = MixerzooCLI(args=overrides, run=False)
    trainer = cli.trainer
    start = time.perf_counter()
    trainer.fit(cli.model, datamodule=cli.datamodule)
    train_s = time.perf_counter() - start
    ckpt = "best" if getattr(trainer.checkpoint_callback, "best_model_path", "") else None
    result = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, verbose=False)[0]
    # The published figures are multivariate (features M): none beside another mode.
    published = PUBLISHED.get((dataset, horizon, model)) if args.features in (None, "M") else None
    return {
        "model": model,
        "dataset": dataset,
        "horizon": horizon,
        "mse": result["test_mse"],
        "mae": result["test_mae"],
        "published_mse": published[0] if published else None,
        "published_mae": published[1] if published else None,
        "epochs": trainer.current_epoch,
        "train_s": train_s,
        "params": sum(p.numel() for p in cli.model.model.parameters()),
        "config": config.name
        + ("" if exact else " (ETTh1 setting)")
        + (f", features {args.features}" if args.features else "")
        + (f", lookback {args.lookback}" if args.lookback else "")
        + (f", max {args.max_epochs} epochs" if args.max_epochs else "")
        + (f", eval batches {args.limit_eval_batches:g}" if args.limit_eval_batches else "")
        + (f", max time {args.max_time}" if args.max_time else "")
        + (f", seed {args.seed}" if args.seed is not None else "")
        + "".join(f", {key.rsplit('.', 1)[-1]} {value}" for key, value in args.set or [])
        + (f", matmul {args.matmul_precision}" if args.matmul_precision != "highest" else ""),
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | dataset | H | MSE | MAE | published MSE / MAE | MSE vs published | epochs | train time | params | config |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        pub = r["published_mse"]
        rel = f"{100 * (r['mse'] / pub - 1):+.1f}%" if pub else "-"
        lines.append(
            f"| {r['model']} | {r['dataset']} | {r['horizon']} | {r['mse']:.3f} | {r['mae']:.3f} | "
            f"{_fmt(pub, '.3f')} / {_fmt(r['published_mae'], '.3f')} | {rel} | {r['epochs']} | "
            f"{r['train_s'] / 60:.1f} min | {r['params']:,} | {r['config']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", required=True, help="registered model names")
    parser.add_argument(
        "--csv", type=Path, required=True, help="forecasting CSV (date column + variables)"
    )
    parser.add_argument("--horizons", nargs="+", type=int, default=[96, 192, 336, 720])
    parser.add_argument("--lookback", type=int, default=None, help="override the config's lookback")
    parser.add_argument(
        "--label-len", type=int, default=None, help="decoder start (default lookback/2)"
    )
    parser.add_argument(
        "--features",
        choices=["M", "S", "MS"],
        default=None,
        help="override the config's features mode (M multivariate, S univariate target)",
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="override the config's epochs")
    parser.add_argument(
        "--limit-train-batches", type=float, default=None, help="for quick checks only"
    )
    parser.add_argument(
        "--limit-eval-batches",
        type=float,
        default=None,
        help="validation and test batches (for quick checks only: the figures are partial)",
    )
    parser.add_argument(
        "--max-time",
        default=None,
        help="stop training after this long (Lightning's DD:HH:MM:SS), then test the best checkpoint",
    )
    parser.add_argument(
        "--set",
        nargs=2,
        action="append",
        metavar=("KEY", "VALUE"),
        help="any config override, e.g. --set model.init_args.model.init_args.dropout 0.05 "
        "(repeatable; listed in the config column)",
    )
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument(
        "--matmul-precision",
        choices=["highest", "high", "medium"],
        default="highest",
        help="float32 matrix products: 'highest' is true float32 (the default, as the papers "
        "ran); 'high' allows TF32 tensor cores on GPUs (faster, 10-bit mantissa inputs)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="run up to this many (model, horizon) pairs at once, each in its own process",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args(argv)
    if not args.csv.is_file():
        raise SystemExit(f"CSV not found: {args.csv}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"forecast_{args.csv.stem.lower()}"
    pairs = [(model, horizon) for model in args.models for horizon in args.horizons]
    failed: list[str] = []
    if args.jobs > 1 and len(pairs) > 1:
        argv = list(sys.argv[1:] if argv is None else argv)
        rows, failed = run_in_processes(pairs, argv, args.out, stem, args.jobs)
    else:
        rows = []
        for model, horizon in pairs:
            rows.append(run_one(model, args.csv, horizon, args))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    if rows:
        table = markdown(rows)
        (args.out / f"{stem}.md").write_text(table + "\n")
        with open(args.out / f"{stem}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print("\n" + table)
        print(f"\nwritten: {args.out / (stem + '.md')} and {args.out / (stem + '.csv')}")
    if failed:
        raise SystemExit("runs failed (see their logs): " + ", ".join(failed))


_INT_FIELDS = ("horizon", "epochs", "params")
_FLOAT_FIELDS = ("mse", "mae", "published_mse", "published_mae", "train_s")


def _read_rows(path: Path) -> list[dict]:
    """Rows of a table CSV written by this script, with numbers as numbers (blank: None)."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in _INT_FIELDS + _FLOAT_FIELDS:
            value = row[key]
            row[key] = None if value == "" else (int if key in _INT_FIELDS else float)(value)
    return rows


def run_in_processes(
    pairs: list[tuple[str, int]], argv: list[str], out: Path, stem: str, jobs: int
) -> tuple[list[dict], list[str]]:
    """Each (model, horizon) as its own process of this script, ``jobs`` at a time.

    A child gets the caller's arguments with one model, one horizon, its own ``--out`` and
    ``--jobs 1`` appended (argparse keeps the last value). Returns the rows in ``pairs`` order and
    the names of the runs that failed.
    """
    script = str(Path(__file__).resolve())
    pending, running, done, failed = list(pairs), {}, {}, []
    while pending or running:
        while pending and len(running) < jobs:
            model, horizon = pending.pop(0)
            name = f"{model}_{horizon}"
            run_dir = out / "jobs" / name
            run_dir.mkdir(parents=True, exist_ok=True)
            child = argv + ["--models", model, "--horizons", str(horizon)]
            child += ["--out", str(run_dir), "--jobs", "1"]
            log = open(run_dir.with_suffix(".log"), "w")
            proc = subprocess.Popen([sys.executable, script, *child], stdout=log, stderr=log)
            running[name] = (proc, log, run_dir)
            print(f"started {name} (log: {run_dir.with_suffix('.log')})", flush=True)
        time.sleep(1.0)
        for name, (proc, log, run_dir) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            if proc.returncode != 0:
                failed.append(name)
                print(f"FAILED {name} (exit {proc.returncode})", flush=True)
                continue
            (row,) = _read_rows(run_dir / f"{stem}.csv")
            done[name] = row
            print(markdown([row]).splitlines()[-1], flush=True)
    rows = [done[f"{m}_{h}"] for m, h in pairs if f"{m}_{h}" in done]
    return rows, failed


if __name__ == "__main__":
    main()
