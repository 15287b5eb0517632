"""Long-term forecasting benchmark: train each model with its published setting, test, tabulate.

Usage::

    python benchmarks/forecast.py --models itransformer s_mamba --csv ../shared/data/timeseries/ETTh1.csv \
        --horizons 96 192 336 720 [--lookback 96] [--max-epochs N] [--out benchmarks/results]

For each model the published setting is the config ``configs/timeseries/<model>_<dataset>.yaml``
when it exists (``dataset`` = the CSV's stem, lower case), else ``<model>_etth1.yaml`` with the data
swapped (said in the table's ``config`` column). The horizon overrides ``pred_len`` in both the
model and the data. Each run trains through the same ``mixerzoo`` CLI machinery (early stopping,
best checkpoint), evaluates on the standard test split (Time-Series-Library protocol, no dropped
window) and reports MSE/MAE on scaled values beside the published figure where known, the train
time and the parameter count. The table is printed and written as CSV and Markdown.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import pytorch_lightning as pl

from mixerzoo.core.cli import MixerzooCLI

REPO = Path(__file__).resolve().parents[1]

# Published test MSE / MAE at lookback 96 (iTransformer and S-Mamba papers; the Autoformer and
# Informer figures as reported there), keyed by (dataset, horizon, model).
PUBLISHED: dict[tuple[str, int, str], tuple[float, float]] = {
    ("etth1", 96, "itransformer"): (0.386, 0.405),
    ("etth1", 96, "s_mamba"): (0.386, 0.405),
    ("etth1", 96, "autoformer"): (0.449, 0.459),
    ("etth1", 96, "informer"): (0.865, 0.713),
    ("etth1", 720, "itransformer"): (0.503, 0.491),
    ("etth1", 720, "s_mamba"): (0.502, 0.489),
    ("etth1", 720, "autoformer"): (0.514, 0.512),
    ("etth1", 720, "informer"): (1.181, 0.865),
    ("ettm1", 96, "itransformer"): (0.334, 0.368),
    ("ettm1", 96, "s_mamba"): (0.333, 0.368),
    ("ettm1", 96, "autoformer"): (0.505, 0.475),
    ("ettm1", 96, "informer"): (0.672, 0.571),
    ("ettm1", 720, "itransformer"): (0.491, 0.459),
    ("ettm1", 720, "s_mamba"): (0.475, 0.448),
    ("ettm1", 720, "autoformer"): (0.671, 0.561),
    ("ettm1", 720, "informer"): (1.166, 0.823),
}


def config_for(model: str, dataset: str) -> tuple[Path, bool]:
    """The model's config for ``dataset`` (True) or its ETTh1 config as a fallback (False)."""
    own = REPO / "configs" / "timeseries" / f"{model}_{dataset}.yaml"
    if own.is_file():
        return own, True
    base = REPO / "configs" / "timeseries" / f"{model}_etth1.yaml"
    if not base.is_file():
        known = sorted(p.stem for p in (REPO / "configs" / "timeseries").glob("*.yaml"))
        raise SystemExit(f"no config for model {model!r}; configs/timeseries holds: {known}")
    return base, False


def run_one(model: str, csv_path: Path, horizon: int, args: argparse.Namespace) -> dict:
    dataset = csv_path.stem.lower()
    config, exact = config_for(model, dataset)
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
        "--model.init_args.model.init_args.pred_len",
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
            "--model.init_args.model.init_args.seq_len",
            str(args.lookback),
            "--data.init_args.label_len",
            str(label_len),
        ]
    if args.max_epochs is not None:
        overrides += ["--trainer.max_epochs", str(args.max_epochs)]
    if args.limit_train_batches is not None:
        overrides += ["--trainer.limit_train_batches", str(args.limit_train_batches)]
    cli = MixerzooCLI(args=overrides, run=False)
    trainer: pl.Trainer = cli.trainer
    start = time.perf_counter()
    trainer.fit(cli.model, datamodule=cli.datamodule)
    train_s = time.perf_counter() - start
    ckpt = "best" if getattr(trainer.checkpoint_callback, "best_model_path", "") else None
    result = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, verbose=False)[0]
    published = PUBLISHED.get((dataset, horizon, model))
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
        "config": config.name + ("" if exact else " (ETTh1 setting)"),
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
    parser.add_argument("--max-epochs", type=int, default=None, help="override the config's epochs")
    parser.add_argument(
        "--limit-train-batches", type=float, default=None, help="for quick checks only"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args(argv)
    if not args.csv.is_file():
        raise SystemExit(f"CSV not found: {args.csv}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models:
        for horizon in args.horizons:
            rows.append(run_one(model, args.csv, horizon, args))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    table = markdown(rows)
    stem = f"forecast_{args.csv.stem.lower()}"
    (args.out / f"{stem}.md").write_text(table + "\n")
    with open(args.out / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("\n" + table)
    print(f"\nwritten: {args.out / (stem + '.md')} and {args.out / (stem + '.csv')}")


if __name__ == "__main__":
    main()
