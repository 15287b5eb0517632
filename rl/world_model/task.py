"""``WorldModelTask``: trains an S4WM world model on sequence batches; evaluates imagination.

- ``training_step``: the S4WM loss (reconstruction + reward + balanced KL with free bits) of a
  batch of windows (``obs``, ``action``, ``reward``) from
  :class:`~mixerzoo.rl.world_model.data.WorldModelDataModule`.
- ``validation_step`` / ``test_step``: the same loss on validation / test episodes (from their
  first frame), and the generation MSE of frames imagined after ``eval_context`` real ones at
  each of ``eval_horizons`` (``val/mse_h<k>``, ``test/mse_h<k>``).
- ``predict_step`` + :class:`ImaginationWriter`: imagined vs true frames for every validation
  episode; the writer saves them (``predictions.npz``), the MSE per horizon as a markdown table
  and a plot, and a PNG strip of true vs imagined frames.

"Facing Off World Model Backbones: RNNs, Transformers, and S4" (Deng et al., 2023, arXiv
2307.02064).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from mixerzoo.core.task import BaseTask, PredictionWriter
from mixerzoo.rl.world_model.evaluate import imagination_mse, mse_table, plot_mse, save_strip
from mixerzoo.rl.world_model.model import S4WM

__all__ = ["WorldModelTask", "ImaginationWriter"]


class WorldModelTask(BaseTask):
    """LightningModule of an :class:`~mixerzoo.rl.world_model.model.S4WM` world model.

    Args:
        model: the world model (its ``image_shape`` and ``n_actions`` must match the data).
        optimizer, lr_scheduler, lr_scheduler_interval: see :class:`~mixerzoo.core.task.BaseTask`.
        eval_context: real frames before imagination in validation and predict.
        eval_horizons: imagination horizons logged in validation (steps after the context).

    Gradient clipping (Dreamer clips world-model gradients) is the trainer's
    ``gradient_clip_val``.
    """

    def __init__(
        self,
        model: S4WM,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "epoch",
        eval_context: int = 50,
        eval_horizons: list[int] | None = None,
    ):
        super().__init__(model, optimizer, lr_scheduler, lr_scheduler_interval)
        if eval_context < 1:
            raise ValueError(f"WorldModelTask: eval_context must be >= 1, got {eval_context}")
        self.eval_context = eval_context
        self.eval_horizons = list(eval_horizons or [10, 50])

    def on_fit_start(self) -> None:
        super().on_fit_start()
        dm = getattr(self.trainer, "datamodule", None)
        shape = getattr(dm, "obs_shape", None)
        if shape is not None:
            want = (shape[2], shape[0], shape[1])
            if tuple(self.model.image_shape) != want or self.model.n_actions != dm.n_actions:
                raise ValueError(
                    f"WorldModelTask: the model expects frames {tuple(self.model.image_shape)} "
                    f"and {self.model.n_actions} actions but the data has {want} and "
                    f"{dm.n_actions}; set model.image_shape / model.n_actions to match"
                )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, parts = self.model.loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in parts.items()})
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        loss, parts = self.model.loss(batch)
        size = batch["obs"].shape[0]
        self.log(f"{stage}_loss", loss, prog_bar=stage == "val", batch_size=size)
        self.log_dict({f"{stage}/{k}": v for k, v in parts.items()}, batch_size=size)
        horizon = batch["obs"].shape[1] - self.eval_context
        if horizon < 1:
            return
        mse = imagination_mse(self.model, batch, self.eval_context, horizon)["mse"].mean(0)
        for h in self.eval_horizons:
            if h <= horizon:
                self.log(f"{stage}/mse_h{h}", mse[h - 1], batch_size=size)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        out = imagination_mse(self.model, batch, self.eval_context)
        return {"true": out["true"], "imagined": out["imagined"], "mse": out["mse"]}


class ImaginationWriter(PredictionWriter):
    """Writes the predict outputs (test episodes) of :class:`WorldModelTask`: ``predictions.npz``, the MSE table
    (``imagination_mse.md``) at ``horizons``, the MSE-vs-horizon plot (``imagination_mse.png``)
    and a strip of true vs imagined frames of the first episode (``imagination_strip.png``).

    Args:
        output_dir: see :class:`~mixerzoo.core.task.PredictionWriter`.
        horizons: horizons of the table.
        every: steps between the frames of the strip.
    """

    def __init__(
        self, output_dir: str | None = None, horizons: list[int] | None = None, every: int = 10
    ):
        super().__init__(output_dir)
        self.horizons = list(horizons or [10, 50, 100, 200])
        self.every = every

    def write(
        self,
        arrays: dict[str, np.ndarray],
        out_dir: Path,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
    ) -> list[Path]:
        written = super().write(arrays, out_dir, trainer, pl_module)
        name = getattr(getattr(pl_module, "model", None), "backbone", None)
        name = getattr(name, "mixer_name", "model")
        curve = {name: arrays["mse"].mean(0)}
        table = out_dir / "imagination_mse.md"
        horizons = [h for h in self.horizons if h <= len(curve[name])]
        table.write_text(mse_table(curve, horizons) + "\n")
        written.append(table)
        written.append(plot_mse(curve, out_dir / "imagination_mse.png"))
        written.append(
            save_strip(
                arrays["true"][0],
                {name: arrays["imagined"][0]},
                out_dir / "imagination_strip.png",
                every=self.every,
            )
        )
        return written
