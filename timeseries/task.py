"""The forecasting LightningModule and its prediction writer.

``ForecastTask`` owns the loss (MSE on scaled values, or the model's own training objective when it
defines one, see ``ForecastTask``), the metrics (MSE and MAE averaged over all windows, steps and
variables of a split, exactly as Time-Series-Library computes them over its concatenated
predictions; also in original units) and ``predict``; the optimiser and scheduler (from the
config), the random states in checkpoints, the epoch hook and the parameter counts come from
``core.task.BaseTask``. Models stay plain ``nn.Module``s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from mixerzoo.core.plugins import require
from mixerzoo.core.task import BaseTask, PredictionWriter

__all__ = ["ForecastTask", "ForecastWriter"]


def _metrics(prefix: str) -> MetricCollection:
    return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}, prefix=prefix)


class ForecastTask(BaseTask):
    """Train, evaluate and predict with any forecasting model of the common batch interface.

    Args:
        model: a forecaster ``forward(x, x_mark, x_dec, x_mark_dec) -> [B, H, C]``.
        optimizer: optimiser factory (default Adam, lr 1e-3; configs set the paper's values).
        lr_scheduler: optional scheduler factory, stepped once per epoch (``lr_scheduler_interval``).
        score_target_only: score only the last (target) column; ``None`` follows the data module
            (True for features ``S``/``MS``).
        lr_scheduler_interval: ``"epoch"`` (the recipes') or ``"step"``.

    Training objective: MSE of the forecast on the horizon (scaled values), unless the model
    defines its own objective, the hook

        ``training_loss(x, y, x_mark=None, x_dec=None, x_mark_dec=None) -> (loss, pred)``

    with the same inputs as ``forward`` and ``y [B, H, C]`` the horizon truth (scaled values);
    ``loss`` is the scalar to minimise and ``pred [B, H, C]`` the horizon forecast of that pass.
    Models use it for the objective of their paper (e.g. SpaceTime's RMSE plus lag-window terms).
    The hook sees every variable, so when only the target is scored (``score_target_only`` with
    more than one variable, features ``MS``) the task keeps MSE on the target and warns.
    A model that defines ``set_epoch(epoch)`` is told the current epoch at the start of each
    training epoch (e.g. SpaceTime's ``lag_loss_epochs``; ``BaseTask``); a resumed run passes the
    restored epoch. Validation and test always score the horizon forecast with MSE/MAE (the
    benchmark protocol), whatever the training objective.

    Checkpoints also hold the random generators' states (``BaseTask``), so that a fit resumed
    with ``ckpt_path`` (``mixerzoo fit --ckpt_path last.ckpt``) draws the same data order and
    dropout masks as the uninterrupted run and ends with the same weights; they load with
    ``weights_only=True``.

    The model's ``seq_len``/``pred_len`` must be those of the data module: the ``mixerzoo``
    command links them (the data's values are the model's), in Python a mismatch is an error at
    ``setup``.

    Logged metrics: ``train_loss`` (the training objective); ``val_loss`` (= ``val_mse``),
    ``val_mae``; ``test_mse``, ``test_mae`` on scaled values and ``test_mse_orig``,
    ``test_mae_orig`` in original units.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        score_target_only: bool | None = None,
        lr_scheduler_interval: str = "epoch",
    ):
        super().__init__(model, optimizer, lr_scheduler, lr_scheduler_interval)
        self.score_target_only = score_target_only
        self.val_metrics = _metrics("val_")
        self.test_metrics = _metrics("test_")
        self.test_metrics_orig = _metrics("test_")
        self._warned_target_only = False

    # --- data-module coupling -------------------------------------------------------------
    @property
    def _datamodule(self):
        trainer = self._trainer
        return getattr(trainer, "datamodule", None) if trainer is not None else None

    def setup(self, stage: str) -> None:
        dm = self._datamodule
        if dm is None:
            return
        for name in ("seq_len", "pred_len"):
            want, got = getattr(dm, name, None), getattr(self.model, name, None)
            if want is not None and got is not None and want != got:
                raise ValueError(
                    f"model {name}={got} but data {name}={want}; set the same value in both the "
                    f"model and the data sections of the config"
                )
        if self.score_target_only is None:
            self.score_target_only = bool(getattr(dm, "target_only_output", False))

    # --- core -----------------------------------------------------------------------------
    def _model_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
        """``(x, x_mark, x_dec, x_mark_dec)`` of the common forecasting interface."""
        x, y = batch["x"], batch["y"]
        label_len = y.shape[1] - self._pred_len()
        # Decoder input: the known start token followed by zeros (Informer/Autoformer convention).
        x_dec = torch.cat([y[:, :label_len], torch.zeros_like(y[:, label_len:])], dim=1)
        return x, batch.get("x_mark"), x_dec, batch.get("y_mark")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(*self._model_inputs(batch))

    def _pred_len(self) -> int:
        pred_len = getattr(self.model, "pred_len", None)
        if pred_len is None:
            dm = self._datamodule
            pred_len = getattr(dm, "pred_len", None) if dm is not None else None
        if pred_len is None:
            raise ValueError("cannot tell the horizon: give the model a pred_len attribute")
        return int(pred_len)

    @staticmethod
    def _check_shapes(pred: torch.Tensor, true: torch.Tensor) -> None:
        if pred.shape != true.shape:
            raise ValueError(
                f"model output {tuple(pred.shape)} does not match the target {tuple(true.shape)}; "
                f"check pred_len and the number of variables"
            )

    def _scored(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self(batch)
        true = batch["y"][:, -pred.shape[1] :]
        self._check_shapes(pred, true)
        if self.score_target_only:
            pred, true = pred[..., -1:], true[..., -1:]
        return pred, true

    def _model_objective(self, batch: dict[str, torch.Tensor]) -> Callable[..., Any] | None:
        """The model's ``training_loss`` hook, or ``None`` when the task's MSE applies."""
        objective = getattr(self.model, "training_loss", None)
        if not callable(objective):
            return None
        if self.score_target_only and batch["y"].shape[-1] > 1:
            if not self._warned_target_only:
                rank_zero_warn(
                    f"{type(self.model).__name__}.training_loss scores every variable but only "
                    f"the target is scored here (score_target_only); training with MSE on the "
                    f"target instead"
                )
                self._warned_target_only = True
            return None
        return objective

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        objective = self._model_objective(batch)
        if objective is None:
            pred, true = self._scored(batch)
            loss = nn.functional.mse_loss(pred, true)
        else:
            x, x_mark, x_dec, x_mark_dec = self._model_inputs(batch)
            true = batch["y"][:, -self._pred_len() :]
            loss, pred = objective(x, true, x_mark, x_dec, x_mark_dec)
            self._check_shapes(pred, true)
        self.log("train_loss", loss, prog_bar=True, batch_size=pred.shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred, true = self._scored(batch)
        self.val_metrics.update(pred.flatten(), true.flatten())

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log("val_loss", values["val_mse"], prog_bar=True, sync_dist=False)
        self.log_dict(values, sync_dist=False)
        self.val_metrics.reset()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred, true = self._scored(batch)
        self.test_metrics.update(pred.flatten(), true.flatten())
        dm = self._datamodule
        if dm is not None and hasattr(dm, "inverse_transform"):
            self.test_metrics_orig.update(
                dm.inverse_transform(pred).flatten(), dm.inverse_transform(true).flatten()
            )

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
        if self.test_metrics_orig["mse"].total > 0:
            orig = self.test_metrics_orig.compute()
            self.log_dict({f"{k}_orig": v for k, v in orig.items()})
        self.test_metrics_orig.reset()

    def predict_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        """Forecasts ``[B, H, C]`` in scaled (``pred``) and original units (``pred_orig``), with the
        lookback (``x``, ``x_orig``) and the truth (``true``, ``true_orig``) when there is one: a
        window past the end of the data (``predict_split="future"``, a NaN horizon) has none."""
        pred = self(batch)
        out = {"pred": pred, "x": batch["x"]}
        true = batch["y"][:, -pred.shape[1] :]
        if not torch.isnan(true).all():
            out["true"] = true
        dm = self._datamodule
        if dm is not None and hasattr(dm, "inverse_transform"):
            out.update({f"{k}_orig": dm.inverse_transform(v) for k, v in list(out.items())})
        return out


class ForecastWriter(PredictionWriter):
    """Writes ``predict`` results next to each other in the run folder:

    - ``predictions.npz``: every array of ``ForecastTask.predict_step`` (``pred``, ``x`` and, where
      the windows have one, ``true``; scaled and ``*_orig`` original units);
    - ``forecast.csv``: the forecasts in original units, one row per forecast timestamp and one
      column per variable, with ``origin`` (the last timestamp the window saw) and ``date`` (the
      timestamp forecast), dated at the data's step; for ``predict_split="future"`` these are the
      ``H`` steps after the end of the data;
    - ``forecast.png``: lookback, forecast (and truth, when known) of a few windows for the target
      variable, dates on the x-axis.

    The dates and variable names come from the data module (``window_dates``, ``columns``); without
    one (or with several processes, whose windows interleave) the CSV is left out and the plot
    counts steps.

    Args:
        output_dir: folder for the files (default: the run's log folder, see
            ``core.task.PredictionWriter``).
        n_plots: windows to plot.
    """

    def __init__(self, output_dir: str | None = None, n_plots: int = 3):
        super().__init__(output_dir)
        self.n_plots = n_plots

    def write(
        self,
        arrays: dict[str, np.ndarray],
        out_dir: Path,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
    ) -> list[Path]:
        written = super().write(arrays, out_dir, trainer, pl_module)
        dates, names = _window_dates_and_names(trainer, arrays["pred"])
        if dates is not None:
            written.append(write_forecast_csv(arrays, dates, names, out_dir / "forecast.csv"))
        plot_forecasts(arrays, out_dir / "forecast.png", self.n_plots, dates, names)
        return [*written, out_dir / "forecast.png"]


def _window_dates_and_names(trainer: pl.Trainer, pred: np.ndarray):
    """The predicted windows' timestamps ``[N, L + H]`` and the output variables' names, from the
    data module; ``(None, None)`` when they cannot be matched to the predictions."""
    dm = getattr(trainer, "datamodule", None)
    if dm is None or not hasattr(dm, "window_dates") or trainer.world_size > 1:
        return None, None
    dates = dm.window_dates(dm.predict_split)
    if len(dates) != len(pred):  # e.g. limit_predict_batches
        dates = dates[: len(pred)] if len(dates) > len(pred) else None
    columns = list(getattr(dm, "columns", []))
    names = columns[-pred.shape[-1] :] if len(columns) >= pred.shape[-1] else None
    return dates, names


def write_forecast_csv(
    arrays: dict[str, np.ndarray], dates: np.ndarray, names: list | None, path: Path
) -> Path:
    """Write the forecasts ``[N, H, C]`` (original units when available) as a long CSV.

    Args:
        arrays: ``predict`` arrays (``pred`` and, if known, ``pred_orig``).
        dates: ``[N, L + H]`` timestamps of each window (lookback, then horizon).
        names: the ``C`` variable names (``None``: ``var0``, ``var1``, ...).
        path: the CSV to write.

    Returns:
        ``path``. Columns: ``origin`` (the last lookback timestamp), ``date``, then one column per
        variable; ``N * H`` rows in window order.
    """
    pred = arrays.get("pred_orig", arrays["pred"])
    n, horizon, n_vars = pred.shape
    lookback = dates.shape[1] - horizon
    names = names or [f"var{j}" for j in range(n_vars)]
    frame = pd.DataFrame(pred.reshape(n * horizon, n_vars), columns=[str(c) for c in names])
    frame.insert(0, "date", dates[:, lookback:].reshape(-1))
    frame.insert(0, "origin", np.repeat(dates[:, lookback - 1], horizon))
    frame.to_csv(path, index=False)
    return path


def plot_forecasts(
    arrays: dict[str, np.ndarray],
    path: Path,
    n_plots: int = 3,
    dates: np.ndarray | None = None,
    names: list | None = None,
) -> None:
    """Plot lookback, forecast and (when known) truth of ``n_plots`` windows spread over the
    split, for the last variable (the target), in original units when available.

    Args:
        arrays: ``predict`` arrays (``x``, ``pred``, optionally ``true``; ``*_orig`` preferred).
        path: the PNG to write.
        n_plots: windows to plot.
        dates: ``[N, L + H]`` timestamps of the windows for the x-axis (``None``: step numbers).
        names: variable names (the last one titles the plot).
    """
    matplotlib = require("matplotlib", extra="timeseries")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suffix = "_orig" if "pred_orig" in arrays else ""
    x, pred = arrays[f"x{suffix}"], arrays[f"pred{suffix}"]
    true = arrays.get(f"true{suffix}")
    n = len(pred)
    picks = np.linspace(0, n - 1, num=min(n_plots, n)).astype(int)
    fig, axes = plt.subplots(len(picks), 1, figsize=(10, 2.6 * len(picks)), squeeze=False)
    L, H = x.shape[1], pred.shape[1]
    target = str(names[-1]) if names else "target variable"
    for ax, i in zip(axes[:, 0], picks):
        past, future = (
            (dates[i, :L], dates[i, L:])
            if dates is not None
            else (np.arange(L), np.arange(L, L + H))
        )
        ax.plot(past, x[i, :, -1], color="0.5", label="lookback")
        if true is not None:
            ax.plot(future, true[i, :, -1], color="C0", label="truth")
        ax.plot(future, pred[i, :, -1], color="C3", label="forecast")
        ax.axvline(past[-1], color="0.8", linestyle="--")
        origin = f", forecast from {pd.Timestamp(past[-1])}" if dates is not None else ""
        ax.set_title(f"{target}: window {i}{origin}")
        ax.set_xlabel("date" if dates is not None else "step")
        ax.legend(loc="upper left", fontsize=8)
    if dates is not None:
        fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
