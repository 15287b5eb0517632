"""Training speed: our forecasters against Time-Series-Library's, same configuration, same machine.

Usage::

    python benchmarks/train_speed.py --models itransformer autoformer [--steps 30] \
        [--tsl /path/to/Time-Series-Library] [--data ../shared/data/timeseries]

For each model, the ETTh1 config (``configs/timeseries/<model>_etth1.yaml``) is trained through
the same Lightning machinery as ``mixerzoo fit`` (its optimiser included) for ``--steps`` batches
(0: one whole epoch), after two warm-up batches, and the time per training step and per epoch of
the ETTh1 training split (264 batches of 32) is printed. With ``--tsl`` pointing at a checkout of
thuml/Time-Series-Library (not part of this project; nothing of it is copied here), its model of
the same name is built with the same hyper-parameters and trained with its own ``Dataset_ETT_hour``
and the loop of its ``exp_long_term_forecasting.train`` (Adam, MSE, decoder input = label window +
zeros), for the same number of steps. With ``--repeats N`` the two sides run alternately N times
and the medians are compared (timings on a shared machine drift by 10-20% between runs). Imports
the reference needs but never uses on this path (``sktime``, ``reformer_pytorch``, ...) are
stubbed. Validation is left out of both timings.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import types
from pathlib import Path

import pytorch_lightning as pl
import torch

from mixerzoo.core.cli import MixerzooCLI

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "timeseries"  # default folder holding ETTh1.csv
TSL_NAMES = {"itransformer": "iTransformer", "autoformer": "Autoformer", "informer": "Informer"}


class _StepTimer(pl.Callback):
    """Wall time of the training batches after the first ``warmup``."""

    def __init__(self, warmup: int = 2):
        self.warmup, self.start, self.stop, self.steps = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.steps += 1
            self.stop = time.perf_counter()


def time_ours(model: str, steps: int, data: Path = DATA) -> tuple[float, int, int]:
    """(seconds per step, steps timed, batches per epoch) of our Lightning training loop."""
    config = REPO / "configs" / "timeseries" / f"{model}_etth1.yaml"
    args = ["--config", str(config), "--data.init_args.root", str(data)]
    args += ["--trainer.logger", "false", "--trainer.enable_checkpointing", "false"]
    args += ["--trainer.callbacks", "[]", "--trainer.max_epochs", "1"]
    args += ["--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"]
    if steps:
        args += ["--trainer.limit_train_batches", str(steps + 2)]
    cli = MixerzooCLI(args=args, run=False)
    timer = _StepTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    per_epoch = len(cli.datamodule.train_dataloader())
    return (timer.stop - timer.start) / timer.steps, timer.steps, per_epoch


def _stub_reference_imports() -> None:
    for name, attrs in {
        "sktime": {},
        "sktime.datasets": {"load_from_tsfile_to_dataframe": None},
        "datasets": {"load_dataset": None},
        "huggingface_hub": {"hf_hub_download": None},
        "patoolib": {},
        "reformer_pytorch": {"LSHSelfAttention": None},
        "einops": {"rearrange": None, "repeat": None},
    }.items():
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                module = types.ModuleType(name)
                module.__dict__.update(attrs)
                sys.modules[name] = module


def time_reference(model: str, steps: int, tsl: Path, data: Path = DATA) -> tuple[float, int, int]:
    """(seconds per step, steps timed, batches per epoch) of Time-Series-Library's loop."""
    _stub_reference_imports()
    sys.path.insert(0, str(tsl))
    from data_provider.data_loader import Dataset_ETT_hour
    from torch.utils.data import DataLoader

    config = dict(
        task_name="long_term_forecast", seq_len=96, label_len=48, pred_len=96, enc_in=7,
        dec_in=7, c_out=7, d_model=512, n_heads=8, e_layers=2, d_layers=1, d_ff=2048,
        moving_avg=25, factor=3, distil=True, dropout=0.1, embed="timeF", freq="h",
        activation="gelu", output_attention=False, use_norm=1, features="M",
        augmentation_ratio=0,
    )  # fmt: skip
    if model == "itransformer":  # the official ETTh1 script's sizes (our config's)
        config.update(d_model=256, d_ff=256, factor=1)
    if model == "informer":
        config.update(factor=5)
    args = types.SimpleNamespace(**config)
    torch.manual_seed(2021)
    net = importlib.import_module(f"models.{TSL_NAMES[model]}").Model(args).float()
    data = Dataset_ETT_hour(
        args, root_path=str(data), flag="train", size=[96, 48, 96], features="M",
        data_path="ETTh1.csv", target="OT", timeenc=1, freq="h",
    )  # fmt: skip
    loader = DataLoader(data, batch_size=32, shuffle=True, num_workers=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    criterion = torch.nn.MSELoss()
    net.train()
    start, timed = None, 0
    for i, (x, y, x_mark, y_mark) in enumerate(loader):
        if i == 2:
            start = time.perf_counter()
        optimizer.zero_grad()
        x, y, x_mark, y_mark = x.float(), y.float(), x_mark.float(), y_mark.float()
        dec = torch.cat([y[:, :48], torch.zeros_like(y[:, -96:])], dim=1)
        loss = criterion(net(x, x_mark, dec, y_mark)[:, -96:], y[:, -96:])
        loss.item()
        loss.backward()
        optimizer.step()
        if i >= 2:
            timed += 1
            if steps and timed >= steps:
                break
    return (time.perf_counter() - start) / timed, timed, len(loader)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["itransformer", "autoformer"])
    parser.add_argument("--steps", type=int, default=0, help="batches to time (0: one epoch)")
    parser.add_argument("--tsl", type=Path, default=None, help="Time-Series-Library checkout")
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding ETTh1.csv")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="time each side this many times, alternating, and report the medians",
    )
    args = parser.parse_args(argv)
    spread = args.repeats > 1
    rows = [
        f"CPU threads: {torch.get_num_threads()}, {args.repeats} alternating run(s) per side"
        + (" (medians; range in brackets)" if spread else ""),
        "",
        "| model | ours: ms/step | ours: s/epoch | reference: ms/step | reference: s/epoch "
        "| ours / reference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def cell(times: list[float]) -> str:
        text = f"{1000 * statistics.median(times):.1f}"
        return text + (f" [{1000 * min(times):.1f}-{1000 * max(times):.1f}]" if spread else "")

    for model in args.models:
        ours, refs = [], []
        for _ in range(args.repeats):
            seconds, _, batches = time_ours(model, args.steps, args.data)
            ours.append(seconds)
            if args.tsl:
                refs.append(time_reference(model, args.steps, args.tsl, args.data)[0])
        mid = statistics.median(ours)
        cells = [cell(ours), f"{mid * batches:.1f}"]
        if refs:
            ref = statistics.median(refs)
            cells += [cell(refs), f"{ref * batches:.1f}", f"{mid / ref:.2f}x"]
        else:
            cells += ["-"] * 3
        rows.append(f"| {model} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
