from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from mixerzoo.timeseries import ForecastDataModule, ForecastTask


def make_csv(
    path: Path, n_rows: int = 600, n_vars: int = 3, freq: str = "h", seed: int = 0
) -> Path:
    """A small hourly forecasting CSV: daily sines with noise, columns date, v0.., OT."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows)
    data = {"date": pd.date_range("2020-01-01", periods=n_rows, freq=freq)}
    for j in range(n_vars):
        data[f"v{j}"] = (
            np.sin(2 * np.pi * t / 24 + j) * (j + 1) + 0.1 * rng.standard_normal(n_rows) + j
        )
    data["OT"] = np.sin(2 * np.pi * t / 24) * 5 + 20 + 0.1 * rng.standard_normal(n_rows)
    pd.DataFrame(data).to_csv(path, index=False)
    return path


@pytest.fixture
def small_csv(tmp_path) -> Path:
    return make_csv(tmp_path / "toy.csv")


@pytest.fixture(scope="module")
def module_csv(tmp_path_factory) -> Path:
    """``small_csv`` shared by the tests of a module (e.g. around one trained run)."""
    return make_csv(tmp_path_factory.mktemp("data") / "toy.csv")


def _val_mse(task: ForecastTask, dm: ForecastDataModule) -> float:
    task.eval()
    torch.manual_seed(0)  # models that sample at inference (ProbSparse) evaluate reproducibly
    with torch.no_grad():
        losses = [F.mse_loss(*task._scored(batch)) for batch in dm.val_dataloader()]
    task.train()
    return torch.stack(losses).mean().item()


@pytest.fixture
def tiny_fit():
    """``tiny_fit(model, dm, optimizer, max_epochs) -> (val MSE before, val MSE after)``: a short
    ``ForecastTask`` fit on the CPU, for tests that a model learns a learnable signal."""

    def run(model, dm: ForecastDataModule, optimizer, max_epochs: int = 2) -> tuple[float, float]:
        task = ForecastTask(model, optimizer=optimizer)
        dm.setup()
        before = _val_mse(task, dm)
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        trainer.fit(task, datamodule=dm)
        return before, _val_mse(task, dm)

    return run
