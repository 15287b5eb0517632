"""The base of every domain's LightningModule, and the base prediction writer.

Each domain has one task module that owns its loss, metrics and ``predict_step`` (DESIGN.md); what
every task needs besides lives here once, as torchgeo's ``BaseTask`` does:

- the optimiser and learning-rate scheduler from the config (LightningCLI's ``OptimizerCallable``
  and ``LRSchedulerCallable`` factories), with the scheduler's interval configurable, and the
  parameters a model flags ``_no_weight_decay`` (mamba-ssm's convention, e.g. Mamba's ``A_log``
  and ``D``) kept out of weight decay;
- the random generators' states in checkpoints (``core.rng``), so that a fit resumed with
  ``ckpt_path`` draws the same data order and dropout masks as the uninterrupted run;
- only plain hyper-parameters in checkpoints (numbers, strings, lists, dicts), so that they load
  with ``torch.load(weights_only=True)``; the model and the optimiser/scheduler factories are
  rebuilt from the config or the caller's code;
- ``model.set_epoch(epoch)`` at the start of every training epoch, for models whose objective
  changes with the epoch (a resumed run passes the restored epoch);
- the parameter counts, printed once at the start of a fit and sent to the loggers.

:class:`PredictionWriter` collects what ``predict_step`` returns over a predict epoch (one dict of
``[B, ...]`` tensors per batch), concatenates it along the batch, resolves the output folder and
hands both to :meth:`PredictionWriter.write`, which subclasses extend (plots, tables).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.core.mixins import HyperparametersMixin
from pytorch_lightning.utilities.parsing import collect_init_args
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from mixerzoo.core.rng import capture_rng_state, restore_rng_state

__all__ = ["BaseTask", "PredictionWriter", "concatenate_predictions", "count_parameters"]

# Constructor arguments never stored in checkpoints: they are rebuilt from the config or code.
_REBUILT = ("model", "optimizer", "lr_scheduler")


def _is_plain(value: Any) -> bool:
    """True for values ``torch.load(weights_only=True)`` restores: None, bool, int, float, str,
    tensors, and lists / tuples / string-keyed dicts of them."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` numbers of parameters of ``module``."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable


class BaseTask(pl.LightningModule):
    """Optimiser, scheduler, random states, epoch hook and parameter counts for any task.

    A domain task subclasses it, calls ``super().__init__(model, optimizer, lr_scheduler, ...)``
    first in its own ``__init__`` (the hyper-parameters of both constructors are saved then), and
    adds its loss, metrics and steps. A subclass that overrides ``on_save_checkpoint``,
    ``on_load_checkpoint``, ``on_train_epoch_start`` or ``on_fit_start`` calls ``super()``.

    Args:
        model: the network, a plain ``nn.Module`` (usable without Lightning).
        optimizer: optimiser factory ``params -> Optimizer`` (configs give a ``class_path`` and
            ``init_args``; in Python, e.g. ``functools.partial(torch.optim.AdamW, lr=1e-3)``).
            Default: Adam with its default learning rate (1e-3).
        lr_scheduler: optional scheduler factory ``optimizer -> LRScheduler``.
        lr_scheduler_interval: step the scheduler every ``"epoch"`` or every ``"step"``.
        lr_scheduler_monitor: the logged metric a ``ReduceLROnPlateau`` scheduler watches.

    Weight decay: when the optimiser decays weights (a non-zero ``weight_decay``), parameters
    with the attribute ``_no_weight_decay = True`` go to a second parameter group with
    ``weight_decay=0``; without decay the optimiser gets ``self.parameters()`` unchanged.

    Attributes:
        n_parameters: total number of parameters of ``model`` (set at the start of a fit).
        n_trainable_parameters: those with ``requires_grad`` (idem).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "epoch",
        lr_scheduler_monitor: str = "val_loss",
    ):
        super().__init__()
        if lr_scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"lr_scheduler_interval must be 'epoch' or 'step', got {lr_scheduler_interval!r}"
            )
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._save_plain_hyperparameters(inspect.currentframe())
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.lr_scheduler_monitor = lr_scheduler_monitor
        self.n_parameters, self.n_trainable_parameters = count_parameters(model)

    def _save_plain_hyperparameters(self, frame) -> None:
        """``save_hyperparameters`` over the constructors of this class and its subclasses,
        leaving out the rebuilt arguments and every value that is not plain."""
        init_args: dict[str, Any] = {}
        for local_args in collect_init_args(frame, [], classes=(HyperparametersMixin,)):
            init_args.update(local_args)
        ignore: Sequence[str] = [*_REBUILT, *(k for k, v in init_args.items() if not _is_plain(v))]
        self.save_hyperparameters(ignore=list(ignore), frame=frame)

    # --- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        no_decay = [p for p in self.parameters() if getattr(p, "_no_weight_decay", False)]
        if no_decay and any(g.get("weight_decay", 0) for g in optimizer.param_groups):
            decayed = [p for p in self.parameters() if not getattr(p, "_no_weight_decay", False)]
            optimizer = self.optimizer_factory(
                [{"params": decayed}, {"params": no_decay, "weight_decay": 0.0}]
            )
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": self.lr_scheduler_interval}
        if isinstance(scheduler, ReduceLROnPlateau):
            config["monitor"] = self.lr_scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": config}

    # --- checkpoints: random states for an exact resume -----------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_state"] = capture_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed fit continues with the generators where the interrupted run left them.
        if "rng_state" in checkpoint:
            restore_rng_state(checkpoint["rng_state"])

    # --- hooks ----------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.n_parameters, self.n_trainable_parameters = count_parameters(self.model)
        rank_zero_info(
            f"{type(self.model).__name__}: {self.n_parameters:,} parameters "
            f"({self.n_trainable_parameters:,} trainable)"
        )
        for logger in self.loggers:
            logger.log_hyperparams(
                {
                    "n_parameters": self.n_parameters,
                    "n_trainable_parameters": self.n_trainable_parameters,
                }
            )

    def on_train_epoch_start(self) -> None:
        set_epoch = getattr(self.model, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.current_epoch)


def _to_numpy(value: torch.Tensor) -> np.ndarray:
    value = value.detach().cpu()
    if value.dtype in (torch.float16, torch.bfloat16):
        value = value.float()
    return value.numpy()


def concatenate_predictions(outputs: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Join per-batch ``predict_step`` outputs into one array per key.

    Args:
        outputs: one dict per batch; tensors and arrays ``[B, ...]`` are concatenated along the
            batch (half-precision tensors become float32), lists (e.g. file names) are chained.

    Returns:
        key -> ``np.ndarray`` over all batches, keys in the order of the first batch.
    """
    arrays: dict[str, np.ndarray] = {}
    for key in outputs[0]:
        parts = [out[key] for out in outputs]
        if isinstance(parts[0], torch.Tensor):
            arrays[key] = np.concatenate([_to_numpy(p) for p in parts])
        elif isinstance(parts[0], np.ndarray):
            arrays[key] = np.concatenate(parts)
        else:
            arrays[key] = np.asarray([item for part in parts for item in part])
    return arrays


class PredictionWriter(BasePredictionWriter):
    """Writes the outputs of ``predict`` once per predict epoch.

    The outputs of ``predict_step`` (a dict of ``[B, ...]`` tensors per batch) are concatenated
    by :func:`concatenate_predictions` and passed to :meth:`write` with the output folder; the
    base ``write`` saves them as ``predictions.npz``, subclasses add their plots or tables.

    Args:
        output_dir: folder for the files; default the run's log folder
            (``runs/<config name>/version_N`` under the CLI), else the trainer's
            ``default_root_dir``. Several predict dataloaders write to ``dataloader_<i>/`` below
            it and, with several processes, each writes to ``rank_<r>/``.
    """

    def __init__(self, output_dir: str | None = None):
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir

    def resolve_output_dir(self, trainer: pl.Trainer) -> Path:
        """The folder this writer writes to for ``trainer`` (see the class docstring)."""
        out_dir = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        if trainer.world_size > 1:
            out_dir = out_dir / f"rank_{trainer.global_rank}"
        return out_dir

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        if not predictions:
            return
        # One list of batch outputs per predict dataloader when there are several.
        groups = predictions if isinstance(predictions[0], list) else [predictions]
        base = self.resolve_output_dir(trainer)
        for i, outputs in enumerate(groups):
            if not outputs:
                continue
            out_dir = base if len(groups) == 1 else base / f"dataloader_{i}"
            out_dir.mkdir(parents=True, exist_ok=True)
            written = self.write(concatenate_predictions(outputs), out_dir, trainer, pl_module)
            print("predictions written to " + ", ".join(str(p) for p in written), flush=True)

    def write(
        self,
        arrays: dict[str, np.ndarray],
        out_dir: Path,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
    ) -> list[Path]:
        """Write one predict epoch's outputs; subclasses call ``super().write`` and add files.

        Args:
            arrays: key -> array ``[N, ...]`` over all predicted samples.
            out_dir: existing folder to write to.
            trainer: the trainer (its ``datamodule`` knows dates, class names, ...).
            pl_module: the task that predicted.

        Returns:
            The paths written (printed by the caller).
        """
        path = out_dir / "predictions.npz"
        np.savez_compressed(path, **arrays)
        return [path]
