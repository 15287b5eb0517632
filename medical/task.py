"""The segmentation LightningModule: nnU-Net's loss and optimiser on MONAI's losses, metrics and
sliding-window inference, and the writer of predictions (NIfTI / PNG) and overlays.

- **Loss**: Dice + cross-entropy (MONAI ``DiceCELoss``: softmax, Dice over the foreground classes,
  batch Dice, smoothing 1e-5 as nnU-Net's ``MemoryEfficientSoftDiceLoss``; nnU-Net minimises
  ``-Dice`` and MONAI ``1 - Dice``, the same gradient) on every deep-supervision output against
  the label map downsampled by nearest neighbour, weighted as nnU-Net v2 does: ``1 / 2**i`` for the
  output at depth ``i``, the lowest-resolution one weighted 0, normalised to sum 1.
- **Optimiser**: :class:`NnUNetSGD` (SGD, lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5)
  by default, with nnU-Net's poly schedule ``lr = lr0 * (1 - epoch / max_epochs) ** 0.9``
  (``torch.optim.lr_scheduler.PolynomialLR(total_iters=max_epochs, power=0.9)`` in the configs);
  AdamW or any optimiser through the config.
- **Metrics** (validation and test, per held-out case on the whole image or volume): per-class
  Dice (MONAI ``DiceMetric``; a class absent from both truth and prediction is left out of its
  mean) and, with ``hd95=True``, the 95th-percentile Hausdorff distance (MONAI
  ``HausdorffDistanceMetric``; in mm when the data module knows the voxel spacing, else pixels).
  Logged as ``val_dice_<class>``, ``val_dice`` (mean over the foreground classes), ``val_loss``,
  ``val_hd95_<class>``; the same with ``test_``.
- **Inference**: MONAI ``sliding_window_inference`` over the patch size, with ``sw_overlap``,
  Gaussian weighting and ``sw_batch_size`` patches per forward pass; its memory is bounded by the
  patch and window batch, plus the output buffers of the case.
- **Predict**: class probabilities per case; :class:`SegmentationWriter` writes them back in the
  input's space (NIfTI with the input's affine and shape, or PNG for 2-D) and an overlay PNG
  (image | truth | prediction) per case.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks.prediction_writer import WriteInterval
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from mixerzoo.core.plugins import require
from mixerzoo.core.task import BaseTask, PredictionWriter

require("monai", extra="medical")

from monai.inferers import sliding_window_inference  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402
from monai.metrics import DiceMetric, HausdorffDistanceMetric  # noqa: E402
from PIL import Image  # noqa: E402

__all__ = [
    "SegmentationTask",
    "SegmentationWriter",
    "NnUNetSGD",
    "deep_supervision_weights",
    "overlay_image",
]


class NnUNetSGD(torch.optim.SGD):
    """SGD with nnU-Net's defaults: lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        momentum: float = 0.99,
        weight_decay: float = 3e-5,
        nesterov: bool = True,
    ):
        super().__init__(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """nnU-Net v2's loss weights: ``1 / 2**i``, the last (lowest resolution) 0, summing to 1."""
    weights = [1.0 / 2**i for i in range(n_outputs)]
    if n_outputs > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class SegmentationTask(BaseTask):
    """Train, evaluate and predict a segmentation network on 2-D images or 3-D volumes.

    Args:
        model: a network ``[B, C, *S] -> [B, K, *S]`` (a list of maps, full resolution first,
            while training with deep supervision), e.g. :class:`~mixerzoo.medical.XLSTMUNet`.
        optimizer: optimiser factory (default :class:`NnUNetSGD`).
        lr_scheduler: scheduler factory (the configs use nnU-Net's poly schedule).
        lr_scheduler_interval: step the scheduler per ``"epoch"`` (nnU-Net) or ``"step"``.
        patch_size: sliding-window size; default the data module's (or the model's).
        batch_dice: Dice over the whole batch (nnU-Net's ``batch_dice``) instead of per sample.
        dice_include_background: include class 0 in the Dice loss (nnU-Net: no).
        deep_supervision_weights: loss weight per output; default nnU-Net's.
        sw_overlap: overlap of neighbouring sliding windows (nnU-Net: 0.5).
        sw_batch_size: windows per forward pass.
        hd95: also compute the 95th-percentile Hausdorff distance.
        class_names: a name per class for the logged metrics (default the data module's).

    Shapes:
        training batch ``{"image": [B, C, *P], "label": [B, 1, *P]}``; validation, test and
        predict batches hold one whole case ``{"image": [1, C, *S], "label": [1, 1, *S], "id"}``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = NnUNetSGD,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "epoch",
        patch_size: Sequence[int] | None = None,
        batch_dice: bool = True,
        dice_include_background: bool = False,
        deep_supervision_weights: Sequence[float] | None = None,
        sw_overlap: float = 0.5,
        sw_batch_size: int = 4,
        hd95: bool = False,
        class_names: Sequence[str] | None = None,
    ):
        super().__init__(model, optimizer, lr_scheduler, lr_scheduler_interval)
        if not 0 <= sw_overlap < 1:
            raise ValueError(f"sw_overlap must be in [0, 1), got {sw_overlap}")
        self.patch_size = None if patch_size is None else [int(p) for p in patch_size]
        self.ds_weights = (
            None if deep_supervision_weights is None else list(deep_supervision_weights)
        )
        self.sw_overlap = sw_overlap
        self.sw_batch_size = sw_batch_size
        self.hd95 = hd95
        self.class_names = None if class_names is None else list(class_names)
        self.loss = DiceCELoss(
            include_background=dice_include_background,
            to_onehot_y=True,
            softmax=True,
            batch=batch_dice,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )
        self._reset_metrics()

    # --- coupling with the data module ------------------------------------------------------
    @property
    def _datamodule(self):
        trainer = self._trainer
        return getattr(trainer, "datamodule", None) if trainer is not None else None

    def setup(self, stage: str) -> None:
        dm = self._datamodule
        model = self.model
        if dm is not None:
            dm.setup(stage)
            checks = [
                ("spatial_dims", getattr(dm, "spatial_dims", None)),
                ("in_channels", getattr(dm, "in_channels", None)),
                ("num_classes", getattr(dm, "num_classes", None)),
            ]
            for name, want in checks:
                got = getattr(model, name, None)
                if want is not None and got is not None and want != got:
                    what = {
                        "spatial_dims": "a 2-D network cannot take 3-D volumes (nor the reverse)",
                        "in_channels": "the images' channels (modalities) must match the network",
                        "num_classes": "the classes of the labels must match the network outputs",
                    }[name]
                    raise ValueError(
                        f"the model has {name}={got} but the data has {name}={want}: {what}; "
                        f"set the same value in the model and data sections of the config"
                    )
            if self.patch_size is None:
                self.patch_size = list(dm.patch_size)
            if self.class_names is None:
                self.class_names = list(getattr(dm, "class_names", []) or []) or None
        if self.patch_size is None and getattr(model, "patch_size", None) is not None:
            self.patch_size = list(model.patch_size)
        model_patch = getattr(model, "patch_size", None)
        if model_patch is not None and self.patch_size is not None:
            if list(model_patch) != list(self.patch_size):
                raise ValueError(
                    f"the model was planned for patch_size {list(model_patch)} but the data uses "
                    f"{self.patch_size}; set the same patch size in both"
                )
        stride = getattr(model, "total_stride", None)
        if stride is not None and self.patch_size is not None:
            if any(p % s for p, s in zip(self.patch_size, stride)):
                raise ValueError(
                    f"patch_size {self.patch_size} is not divisible by the network's total stride "
                    f"{list(stride)}; choose a multiple"
                )

    def _names(self, num_classes: int) -> list[str]:
        if self.class_names is not None and len(self.class_names) == num_classes:
            return self.class_names
        return [f"class{i}" for i in range(num_classes)]

    # --- loss and inference -----------------------------------------------------------------
    def compute_loss(
        self, outputs: torch.Tensor | Sequence[torch.Tensor], label: torch.Tensor
    ) -> torch.Tensor:
        """Deep-supervised Dice + CE of ``outputs`` against ``label [B, 1, *S]``."""
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        weights = self.ds_weights or deep_supervision_weights(len(outputs))
        if len(weights) != len(outputs):
            raise ValueError(
                f"{len(weights)} deep-supervision weights for {len(outputs)} network outputs"
            )
        total = outputs[0].new_zeros(())
        for weight, logits in zip(weights, outputs):
            if weight == 0:
                continue
            target = label
            if logits.shape[2:] != label.shape[2:]:
                target = F.interpolate(label.float(), size=logits.shape[2:], mode="nearest").long()
            total = total + weight * self.loss(logits.float(), target)
        return total

    def sliding_window(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, K, *S]`` of a whole image/volume ``[B, C, *S]`` by Gaussian-weighted
        sliding windows of the patch size."""
        if self.patch_size is None:
            raise ValueError("no patch_size: give it to the task, the data module or the model")
        if len(self.patch_size) != image.dim() - 2:
            raise ValueError(
                f"patch_size {self.patch_size} has {len(self.patch_size)} axes but the input "
                f"{tuple(image.shape)} has {image.dim() - 2} spatial axes"
            )
        return sliding_window_inference(
            image,
            roi_size=self.patch_size,
            sw_batch_size=self.sw_batch_size,
            predictor=self._eval_forward,
            overlap=self.sw_overlap,
            mode="gaussian",
        )

    def _eval_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.sliding_window(image)

    # --- steps ------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(self.model(batch["image"]), batch["label"])
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def _reset_metrics(self) -> None:
        self._dice = DiceMetric(include_background=True, reduction="none", ignore_empty=True)
        self._hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
        self._losses: list[float] = []

    def _evaluate(self, batch: dict[str, Any]) -> None:
        logits = self.sliding_window(batch["image"])
        label = batch["label"]
        self._losses.append(float(self.loss(logits.float(), label)))
        k = logits.shape[1]
        pred = F.one_hot(logits.argmax(1), k).movedim(-1, 1)
        truth = F.one_hot(label[:, 0].long(), k).movedim(-1, 1)
        self._dice(pred, truth)
        if self.hd95:
            spacing = getattr(self._datamodule, "spacing", None)
            self._hd(pred, truth, spacing=spacing)

    def _log_metrics(self, prefix: str) -> None:
        if not self._losses:
            return
        dice = self._dice.aggregate()  # [cases, K], NaN where a class is in neither
        k = dice.shape[1]
        per_class = torch.nanmean(dice.float(), dim=0)
        names = self._names(k)
        values = {f"{prefix}_dice_{names[i]}": per_class[i] for i in range(k)}
        values[f"{prefix}_loss"] = torch.tensor(float(np.mean(self._losses)))
        if self.hd95:
            hd = torch.nanmean(self._hd.aggregate().float(), dim=0)
            values.update({f"{prefix}_hd95_{names[i]}": hd[i] for i in range(k)})
        self.log_dict(values, prog_bar=False, sync_dist=False)
        self.log(f"{prefix}_dice", torch.nanmean(per_class[1:]), prog_bar=True, sync_dist=False)
        self._reset_metrics()

    def on_validation_epoch_start(self) -> None:
        self._reset_metrics()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._reset_metrics()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        probabilities = torch.softmax(self.sliding_window(batch["image"]).float(), dim=1)
        return {"id": list(batch["id"]), "probabilities": probabilities}


# --- writing predictions ---------------------------------------------------------------------
_PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ],
    dtype=np.float32,
)


def _grey(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99])
    scaled = (image - low) / max(high - low, 1e-8)
    return (np.clip(scaled, 0, 1) * 255).astype(np.float32)


def _tint(grey: np.ndarray, classes: np.ndarray) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for c in np.unique(classes):
        if c == 0:
            continue
        mask = classes == c
        rgb[mask] = 0.5 * rgb[mask] + 0.5 * _PALETTE[(int(c) - 1) % len(_PALETTE)]
    return rgb


def overlay_image(
    image: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None
) -> Image.Image:
    """Image | truth | prediction panels (classes > 0 tinted) of a 2-D image ``[C, H, W]`` or of
    the axial slice of a volume ``[C, X, Y, Z]`` with the most foreground (truth, else
    prediction)."""
    # First channel of a volume or multi-modal image; the mean of an RGB image.
    grey = image.mean(0) if image.ndim == 3 and image.shape[0] == 3 else image[0]
    if grey.ndim == 3:
        ref = truth if truth is not None else prediction
        z = int(np.argmax((ref > 0).reshape(-1, ref.shape[-1]).sum(0)))
        view = lambda a: np.flipud(a[..., z].T)  # noqa: E731  (axial slice, anterior up)
        grey, prediction = view(grey), view(prediction)
        truth = None if truth is None else view(truth)
    g = _grey(grey)
    panels = [np.repeat(g[..., None], 3, axis=-1)]
    if truth is not None:
        panels.append(_tint(g, truth))
    panels.append(_tint(g, prediction))
    gap = np.full((g.shape[0], 4, 3), 255, dtype=np.float32)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    return Image.fromarray(row.astype(np.uint8))


class SegmentationWriter(PredictionWriter):
    """Writes each predicted case as it comes: the segmentation in the input's space (NIfTI with
    the input's affine and shape for volumes, PNG of the stored label values for 2-D images) and
    ``<case>_overlay.png`` (image | truth | prediction) when ``overlay``.

    Args:
        output_dir: folder (default the run's log folder), as :class:`PredictionWriter`.
        overlay: also write the overlay PNG.

    The class probabilities of a case are dropped from the predict outputs once written, so a
    predict run holds one case's probabilities at a time.
    """

    def __init__(self, output_dir: str | None = None, overlay: bool = True):
        super().__init__(output_dir)
        # One case per batch, written at once (volumes are not kept until the epoch ends).
        self.interval = WriteInterval.BATCH
        self.overlay = overlay

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "write_prediction"):
            raise ValueError(
                "SegmentationWriter needs a segmentation data module (it knows each input's "
                "affine, shape and label values)"
            )
        out_dir = self.resolve_output_dir(trainer)
        out_dir.mkdir(parents=True, exist_ok=True)
        probabilities = prediction.pop("probabilities")
        paths: list[Path] = []
        for case_id, probs in zip(prediction["id"], probabilities):
            written = dm.write_prediction(case_id, probs, out_dir)
            paths.extend(written["paths"])
            if self.overlay:
                path = out_dir / f"{case_id}_overlay.png"
                overlay_image(written["image"], written["prediction"], written["truth"]).save(path)
                paths.append(path)
        prediction["paths"] = [str(p) for p in paths]
        print("predictions written to " + ", ".join(str(p) for p in paths), flush=True)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        return None
