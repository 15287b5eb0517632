"""Image classification: the Lightning task, its schedule and its prediction writer.

``ClassificationTask`` (on :class:`mixerzoo.core.task.BaseTask`, which owns the optimiser and
scheduler from the config, the random states in checkpoints, the epoch hook and the parameter
counts) owns the classification parts, each through timm's or torchmetrics' own utilities:

- loss: cross-entropy with label smoothing (``timm.loss.LabelSmoothingCrossEntropy``), or, with
  mixup / cutmix (``timm.data.Mixup``, which also smooths the mixed targets), the soft-target
  cross-entropy (``timm.loss.SoftTargetCrossEntropy``);
- metrics: top-1 and top-5 accuracy (``torchmetrics`` ``MulticlassAccuracy``, micro average);
- an optional exponential moving average of the weights (``timm.utils.ModelEmaV3``), updated after
  every optimiser step and used for validation, test and prediction when ``ema_eval``;
- the schedule of the ImageNet recipes, linear warm-up then cosine decay per step
  (:class:`WarmupCosineLR`, timm's ``CosineLRScheduler`` behind PyTorch's scheduler API, sized
  from the trainer's epochs and batches);
- ``predict`` writes, per image, the file, its label and the top-k classes and probabilities
  (``predictions.csv``) and, for labelled images, the confusion matrix (``confusion_matrix.png``,
  torchmetrics' ``MulticlassConfusionMatrix``) — :class:`ClassificationWriter`.

Logged: ``train_loss``; ``val_loss``, ``val_acc1``, ``val_acc5``; ``test_loss``, ``test_acc1``,
``test_acc5`` (accuracies in ``[0, 1]``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from mixerzoo.core.task import BaseTask, PredictionWriter

__all__ = ["ClassificationTask", "ClassificationWriter", "WarmupCosineLR"]


class WarmupCosineLR(LRScheduler):
    """Linear warm-up, then cosine decay to ``min_lr``, stepped once per optimiser step.

    The values are those of timm's ``CosineLRScheduler`` (``t_initial`` = the whole run in steps,
    ``warmup_t`` = the warm-up steps, timm's default ``warmup_prefix=False``), the schedule of the
    DeiT / ConvNeXt / MambaOut / EfficientVMamba recipes, exposed as a PyTorch ``LRScheduler`` so
    that Lightning steps it. Lengths are in epochs; :class:`ClassificationTask` fills in the steps
    per epoch and the number of epochs from the trainer (or give both here).

    Args:
        optimizer: the wrapped optimiser (its learning rate is the peak).
        warmup_epochs: warm-up length (fractions allowed).
        min_lr: final learning rate.
        warmup_lr: learning rate at the first step.
        epochs: length of the run (default: the trainer's ``max_epochs``).
        steps_per_epoch: optimiser steps per epoch (default: from the trainer).
        last_epoch: index of the last step when resuming (PyTorch's convention).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: float = 0.0,
        min_lr: float = 0.0,
        warmup_lr: float = 0.0,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        last_epoch: int = -1,
    ):
        if warmup_epochs < 0 or min_lr < 0 or warmup_lr < 0:
            raise ValueError(
                "WarmupCosineLR: warmup_epochs, min_lr and warmup_lr must be >= 0, got "
                f"{warmup_epochs}, {min_lr}, {warmup_lr}"
            )
        self.warmup_epochs, self.min_lr, self.warmup_lr = warmup_epochs, min_lr, warmup_lr
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self._schedule: CosineLRScheduler | None = None
        super().__init__(optimizer, last_epoch)
        if epochs is not None and steps_per_epoch is not None:
            self.configure(steps_per_epoch, epochs)

    @property
    def configured(self) -> bool:
        return self._schedule is not None

    def configure(self, steps_per_epoch: int, epochs: int) -> None:
        """Size the schedule: ``epochs * steps_per_epoch`` steps in all."""
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(
                f"WarmupCosineLR: need steps_per_epoch >= 1 and epochs >= 1, got "
                f"{steps_per_epoch} and {epochs} (set max_epochs on the trainer)"
            )
        self.steps_per_epoch = steps_per_epoch
        self.epochs = self.epochs or epochs
        total = self.epochs * steps_per_epoch
        self._schedule = CosineLRScheduler(
            self.optimizer,
            t_initial=total,
            lr_min=self.min_lr,
            warmup_t=round(self.warmup_epochs * steps_per_epoch),
            warmup_lr_init=self.warmup_lr,
            t_in_epochs=False,
        )
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr

    def get_lr(self) -> list[float]:
        if self._schedule is None:
            return [group["initial_lr"] for group in self.optimizer.param_groups]
        # timm's public per-step update writes the value into the groups; read it back.
        self._schedule.step_update(num_updates=max(0, self.last_epoch))
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedule")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)
        if self.steps_per_epoch and self.epochs:
            self.configure(self.steps_per_epoch, self.epochs)


class ClassificationTask(BaseTask):
    """Train, evaluate and predict with any image classifier (see the module docstring).

    Args:
        model: a classifier ``[B, C, H, W] -> [B, num_classes]`` (e.g. a mixerzoo timm model).
        optimizer: optimiser factory (default AdamW, lr 1e-3; configs give the recipe's).
        lr_scheduler: scheduler factory, e.g. :class:`WarmupCosineLR`.
        lr_scheduler_interval: ``"step"`` (default, per optimiser step) or ``"epoch"``.
        num_classes: classes (default: ``model.num_classes``).
        label_smoothing: smoothing of the targets.
        mixup_alpha, cutmix_alpha: Beta parameters of mixup / cutmix (0 turns each off).
        mixup_prob: probability of mixing a batch; ``mixup_switch_prob``: of cutmix when both.
        ema_decay: EMA of the weights with this decay (``None``: no EMA).
        ema_warmup: timm's EMA decay warm-up (short runs).
        ema_eval: validate / test / predict with the EMA weights.
        tta_flip: test-time augmentation: validation, test and prediction average the class
            probabilities of each image and of its horizontal mirror (the logged loss is the
            cross-entropy of that average). For data trained with flips, such as CIFAR-10.
        top_k: classes per image in ``predictions.csv``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "step",
        num_classes: int | None = None,
        label_smoothing: float = 0.1,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        ema_decay: float | None = None,
        ema_warmup: bool = False,
        ema_eval: bool = True,
        tta_flip: bool = False,
        top_k: int = 5,
    ):
        super().__init__(model, optimizer, lr_scheduler, lr_scheduler_interval, "val_loss")
        num_classes = num_classes if num_classes is not None else getattr(model, "num_classes", 0)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"ClassificationTask: need num_classes >= 2 (from the argument or "
                f"model.num_classes), got {num_classes!r}"
            )
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.top_k = min(top_k, num_classes)
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                prob=mixup_prob,
                switch_prob=mixup_switch_prob,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
            self.train_criterion = SoftTargetCrossEntropy()
        elif label_smoothing > 0:
            self.train_criterion = LabelSmoothingCrossEntropy(smoothing=label_smoothing)
        else:
            self.train_criterion = nn.CrossEntropyLoss()
        self.ema = None
        if ema_decay:
            self.ema = ModelEmaV3(model, decay=ema_decay, use_warmup=ema_warmup)
            # The average is written by update(), never by the optimiser.
            self.ema.requires_grad_(False)
        self.ema_eval = ema_eval
        self.tta_flip = tta_flip
        k5 = min(5, num_classes)
        self.metrics = nn.ModuleDict(
            {
                split: nn.ModuleDict(
                    {
                        "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                        "acc5": MulticlassAccuracy(num_classes, top_k=k5, average="micro"),
                    }
                )
                for split in ("val", "test")
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None and self.ema_eval else self.model

    def _eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits; with ``tta_flip`` the log of the mean of the image's and its
        mirror's class probabilities (same argmax and cross-entropy as that mean)."""
        model = self._eval_model()
        logits = model(x).float()  # float32 losses and probabilities under bf16 autocast
        if not self.tta_flip:
            return logits
        probs = logits.softmax(-1) + model(x.flip(-1)).float().softmax(-1)
        return (probs / 2).log()

    # --- setup checks ---------------------------------------------------------------------

    def on_fit_start(self) -> None:
        super().on_fit_start()
        datamodule = getattr(self.trainer, "datamodule", None)
        classes = getattr(datamodule, "num_classes", None)
        if isinstance(classes, int) and classes != self.num_classes:
            raise ValueError(
                f"ClassificationTask: the data has {classes} classes but the model / task "
                f"{self.num_classes}; set the model's num_classes to {classes}"
            )

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        scheduler = config["lr_scheduler"]["scheduler"] if isinstance(config, dict) else None
        if isinstance(scheduler, WarmupCosineLR) and not scheduler.configured:
            trainer = self.trainer
            epochs = max(1, trainer.max_epochs or 1)
            steps = max(1, int(trainer.estimated_stepping_batches) // epochs)
            scheduler.configure(steps, epochs)
        return config

    # --- steps ----------------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        if self.mixup is not None:
            if x.shape[0] % 2:
                raise ValueError(
                    f"mixup/cutmix need an even batch, got {x.shape[0]}; use an even batch size "
                    f"(the image-folder data module drops the last incomplete training batch)"
                )
            x, y = self.mixup(x, y)
        loss = self.train_criterion(self.model(x).float(), y)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def _evaluate(self, batch: Any, split: str) -> None:
        x, y = batch[0], batch[1]
        logits = self._eval_logits(x)
        loss = F.cross_entropy(logits, y)
        metrics = self.metrics[split]
        for metric in metrics.values():
            metric.update(logits, y)
        batch_size = x.shape[0]
        self.log(f"{split}_loss", loss, prog_bar=True, batch_size=batch_size)
        for name, metric in metrics.items():
            self.log(f"{split}_{name}", metric, prog_bar=name == "acc1", batch_size=batch_size)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict:
        x, y = batch[0], batch[1]
        index = batch[2] if len(batch) > 2 else torch.arange(x.shape[0]) + batch_idx * x.shape[0]
        probs = self._eval_logits(x).float().softmax(-1)
        top = probs.topk(self.top_k, dim=-1)
        return {
            "index": index,
            "target": y,
            "pred": probs.argmax(-1),
            "topk_classes": top.indices,
            "topk_probs": top.values,
        }


class ClassificationWriter(PredictionWriter):
    """Writes ``predictions.csv`` (one row per image: file, label, top-k classes and
    probabilities), ``predictions.npz`` and, for labelled images, ``confusion_matrix.png``.

    Args:
        output_dir: folder (default the run's folder, see ``PredictionWriter``).
    """

    def write(
        self,
        arrays: dict[str, np.ndarray],
        out_dir: Path,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
    ) -> list[Path]:
        written = super().write(arrays, out_dir, trainer, pl_module)
        datamodule = getattr(trainer, "datamodule", None)
        classes = list(getattr(datamodule, "classes", []) or [])
        n_classes = getattr(pl_module, "num_classes", len(classes))
        if len(classes) != n_classes:
            classes = [str(i) for i in range(n_classes)]
        paths = (
            datamodule.predict_paths()
            if datamodule is not None and hasattr(datamodule, "predict_paths")
            else None
        )
        order = np.argsort(arrays["index"], kind="stable")
        k = arrays["topk_classes"].shape[1]
        path = out_dir / "predictions.csv"
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            header = ["file", "label", "prediction"]
            for r in range(1, k + 1):
                header += [f"top{r}_class", f"top{r}_prob"]
            out.writerow(header)
            for i in order:
                idx, target = int(arrays["index"][i]), int(arrays["target"][i])
                row = [
                    paths[idx] if paths is not None else idx,
                    classes[target] if target >= 0 else "",
                    classes[int(arrays["pred"][i])],
                ]
                for c, p in zip(arrays["topk_classes"][i], arrays["topk_probs"][i]):
                    row += [classes[int(c)], f"{float(p):.6f}"]
                out.writerow(row)
        written.append(path)
        labelled = arrays["target"] >= 0
        if labelled.any():
            written.append(
                self._confusion_png(
                    arrays["pred"][labelled], arrays["target"][labelled], classes, out_dir
                )
            )
        return written

    @staticmethod
    def _confusion_png(pred: np.ndarray, target: np.ndarray, classes: list[str], out_dir: Path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metric = MulticlassConfusionMatrix(num_classes=len(classes))
        metric.update(torch.as_tensor(pred), torch.as_tensor(target))
        counts = metric.compute().numpy()  # [true, predicted]
        size = max(4.0, 0.5 * len(classes) + 2)
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(counts, cmap="Blues")
        ticks = range(len(classes))
        if len(classes) <= 50:
            ax.set_xticks(ticks, classes, rotation=90)
            ax.set_yticks(ticks, classes)
            if len(classes) <= 20:
                for i in ticks:
                    for j in ticks:
                        ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        accuracy = float((pred == target).mean())
        ax.set_title(f"confusion matrix ({len(target)} images, top-1 {accuracy:.2%})")
        path = out_dir / "confusion_matrix.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
