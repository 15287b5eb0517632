"""Speech enhancement and separation LightningModules, and their prediction writer.

- :class:`EnhancementTask` trains with the model's published loss (FRCRN: ``-SI-SNR`` plus the
  complex-mask MSE, :func:`~mixerzoo.audio.models.frcrn.frcrn_loss`; any other enhancer:
  ``-SI-SNR``), and scores validation/test utterances with SI-SNR, SI-SNR improvement, PESQ
  (wide band at 16 kHz, narrow band at 8 kHz) and STOI, for the input and the output.
- :class:`SeparationTask` trains with permutation-invariant ``-SI-SNR`` (MossFormer2's loss, any
  number of speakers) and scores PIT SI-SNR, SI-SNRi and (``pesq_stoi``) PESQ/STOI per source.

Both write one CSV row per evaluated utterance (``<log_dir>/<stage>_utterances.csv``) and log
the means (``val_si_snri``, ``test_pesq_out``, ...). Optimiser, scheduler, random states in
checkpoints and parameter counts come from :class:`mixerzoo.core.task.BaseTask`.

A training batch with NaN or infinite samples, or a non-finite loss, is skipped with a warning
(one bad file never stops a run); the data modules also drop unusable files up front.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from mixerzoo.audio.metrics import pesq, pit_si_snr, reorder_sources, si_snr, stoi
from mixerzoo.audio.models.frcrn import FRCRN, frcrn_loss
from mixerzoo.core.task import BaseTask

__all__ = ["EnhancementTask", "SeparationTask", "AudioPredictionWriter"]


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


class _SpeechTask(BaseTask):
    """Shared parts: finite-batch guard, per-utterance rows, CSV and mean logging."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "epoch",
        lr_scheduler_monitor: str = "val_loss",
        sample_rate: int | None = None,
        pesq_stoi: str = "test",
    ):
        super().__init__(
            model, optimizer, lr_scheduler, lr_scheduler_interval, lr_scheduler_monitor
        )
        if pesq_stoi not in ("never", "test", "always"):
            raise ValueError(f"pesq_stoi must be 'never', 'test' or 'always', got {pesq_stoi!r}")
        rate = sample_rate or getattr(model, "sample_rate", None)
        if rate is None:
            raise ValueError("sample_rate is needed (the model has no sample_rate attribute)")
        self.sample_rate = int(rate)
        self.pesq_stoi = pesq_stoi
        self._rows: dict[str, list[dict[str, Any]]] = {}

    def _finite(self, *tensors: torch.Tensor, what: str) -> bool:
        if all(torch.isfinite(t).all() for t in tensors):
            return True
        warnings.warn(f"{what}: NaN or infinite samples in the batch; step skipped", stacklevel=2)
        return False

    def _guard_loss(self, loss: torch.Tensor) -> torch.Tensor | None:
        if torch.isfinite(loss):
            return loss
        warnings.warn(f"non-finite training loss ({float(loss)}); step skipped", stacklevel=2)
        return None

    def _with_quality(self, stage: str) -> bool:
        return self.pesq_stoi == "always" or (self.pesq_stoi == "test" and stage == "test")

    def on_validation_epoch_start(self) -> None:
        self._rows["val"] = []

    def on_test_epoch_start(self) -> None:
        self._rows["test"] = []

    def _finish(self, stage: str) -> None:
        rows = self._rows.get(stage, [])
        if not rows:
            return
        keys = [k for k in rows[0] if k != "name"]
        for key in keys:
            self.log(f"{stage}_{key}", _nanmean([float(r[key]) for r in rows]), sync_dist=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{stage}_utterances.csv"
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    # Batch keys of the input and the target; subclasses set them and define ``compute_loss``
    # and ``_utterance``.
    _input_key: str
    _target_key: str

    def compute_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _utterance(
        self, est: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor, stage: str
    ) -> tuple[dict[str, float], float]:
        """One utterance's metrics row and loss (``est``, ``target``, ``inputs`` cropped to it,
        batch dimension 1)."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], batch_idx: int):
        inputs, targets = batch[self._input_key], batch[self._target_key]
        if not self._finite(inputs, targets, what=f"{type(self).__name__}.training_step"):
            return None
        parts = self.compute_loss(inputs, targets)
        for key, value in parts.items():
            self.log(f"train_{key}", value, prog_bar=key == "loss", batch_size=inputs.shape[0])
        return self._guard_loss(parts["loss"])

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        inputs, targets = batch[self._input_key], batch[self._target_key]
        lengths = batch.get("lengths", torch.full((inputs.shape[0],), inputs.shape[-1]))
        if not self._finite(inputs, targets, what=f"{type(self).__name__}.{stage}"):
            return
        est = self.model(inputs)
        losses = []
        for b in range(inputs.shape[0]):
            n = int(lengths[b])
            row, loss = self._utterance(
                est[b : b + 1, ..., :n], targets[b : b + 1, ..., :n], inputs[b : b + 1, :n], stage
            )
            self._rows[stage].append({"name": batch["name"][b], **row})
            losses.append(loss)
        self.log(f"{stage}_loss", sum(losses) / len(losses), batch_size=len(losses))

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test")

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch)


class EnhancementTask(_SpeechTask):
    """Speech enhancement: ``model(noisy [B, T]) -> enhanced [B, T]``.

    Args:
        model: an enhancer (:class:`~mixerzoo.audio.models.FRCRN` or any ``[B, T] -> [B, T]``).
        optimizer: optimiser factory (FRCRN's recipe: Adam, lr 1e-3, weight decay 1e-5).
        lr_scheduler: optional scheduler factory.
        sample_rate: audio rate (default: ``model.sample_rate``).
        loss: ``"auto"`` (the model's published loss: FRCRN's ``-SI-SNR + mask MSE``, else
            ``-SI-SNR``) or ``"si_snr"``.
        pesq_stoi: compute PESQ and STOI on ``"test"`` only (default; they take ~0.2 s per
            utterance on a CPU), ``"always"`` or ``"never"``.

    Batches: ``{"noisy": [B, T], "clean": [B, T], "lengths": [B], "name": [...]}``.
    """

    _input_key, _target_key = "noisy", "clean"

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "epoch",
        lr_scheduler_monitor: str = "val_loss",
        sample_rate: int | None = None,
        loss: str = "auto",
        pesq_stoi: str = "test",
    ):
        super().__init__(
            model,
            optimizer,
            lr_scheduler,
            lr_scheduler_interval,
            lr_scheduler_monitor,
            sample_rate,
            pesq_stoi,
        )
        if loss not in ("auto", "si_snr"):
            raise ValueError(f"loss must be 'auto' or 'si_snr', got {loss!r}")
        self.loss_kind = loss

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.model(noisy)

    def compute_loss(self, noisy: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training objective on a batch (see the class docstring)."""
        if self.loss_kind == "auto" and isinstance(self.model, FRCRN):
            return frcrn_loss(self.model, noisy, clean, self.model(noisy, return_output=True))
        value = si_snr(self.model(noisy), clean).mean()
        return {"loss": -value, "si_snr": value}

    def _utterance(
        self, est: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor, stage: str
    ) -> tuple[dict[str, float], float]:
        out_db, in_db = float(si_snr(est, clean)), float(si_snr(noisy, clean))
        row = {"si_snr_in": in_db, "si_snr_out": out_db, "si_snri": out_db - in_db}
        if self._with_quality(stage):
            mode = "wb" if self.sample_rate == 16000 else "nb"
            row["pesq_in"] = float(pesq(noisy, clean, self.sample_rate, mode)[0])
            row["pesq_out"] = float(pesq(est, clean, self.sample_rate, mode)[0])
            row["stoi_in"] = float(stoi(noisy, clean, self.sample_rate)[0])
            row["stoi_out"] = float(stoi(est, clean, self.sample_rate)[0])
        return row, -out_db

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = {
            "input": batch["noisy"],
            "estimate": self.model(batch["noisy"]),
            "name": batch["name"],
        }
        if "clean" in batch:
            out["reference"] = batch["clean"]
        out["lengths"] = batch.get("lengths")
        return out


class SeparationTask(_SpeechTask):
    """Speech separation with permutation-invariant training: ``model(mix [B, T]) -> [B, S, T]``.

    Args:
        model: a separator (:class:`~mixerzoo.audio.models.MossFormer2`).
        optimizer: optimiser factory (MossFormer2's recipe: Adam, lr 1.5e-4, weight decay 1e-5,
            gradient norm clipped at 10 — the trainer's ``gradient_clip_val``).
        lr_scheduler: optional scheduler factory.
        sample_rate: audio rate (default: ``model.sample_rate``).
        pesq_stoi: PESQ (narrow band) and STOI per source on ``"test"``, ``"always"``, ``"never"``.
        loss_threshold: MossFormer2's recipe drops utterances whose loss is already below it
            (``-inf``: none dropped, the default).

    Batches: ``{"mix": [B, T], "sources": [B, S, T], "lengths": [B], "name": [...]}``.
    """

    _input_key, _target_key = "mix", "sources"

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "epoch",
        lr_scheduler_monitor: str = "val_loss",
        sample_rate: int | None = None,
        pesq_stoi: str = "test",
        loss_threshold: float = -math.inf,
    ):
        super().__init__(
            model,
            optimizer,
            lr_scheduler,
            lr_scheduler_interval,
            lr_scheduler_monitor,
            sample_rate,
            pesq_stoi,
        )
        self.loss_threshold = loss_threshold

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return self.model(mix)

    def compute_loss(self, mix: torch.Tensor, sources: torch.Tensor) -> dict[str, torch.Tensor]:
        """Negative PIT SI-SNR, mean over the utterances above ``loss_threshold``."""
        best, _ = pit_si_snr(self.model(mix), sources)
        per_utt = -best
        kept = per_utt[per_utt > self.loss_threshold]
        loss = kept.mean() if kept.numel() else per_utt.mean() * 0
        return {"loss": loss, "si_snr": best.mean()}

    def _utterance(
        self, est: torch.Tensor, sources: torch.Tensor, mix: torch.Tensor, stage: str
    ) -> tuple[dict[str, float], float]:
        n = sources.shape[-1]
        m = mix[:, None].expand_as(sources)
        best, perm = pit_si_snr(est, sources)
        mix_db = float(si_snr(m.reshape(-1, n), sources.reshape(-1, n)).mean())
        row = {"si_snr_in": mix_db, "si_snr_out": float(best), "si_snri": float(best) - mix_db}
        if self._with_quality(stage):
            ordered, refs = reorder_sources(est, perm)[0], sources[0]
            row["pesq_in"] = _nanmean(pesq(m[0], refs, self.sample_rate, "nb").tolist())
            row["pesq_out"] = _nanmean(pesq(ordered, refs, self.sample_rate, "nb").tolist())
            row["stoi_in"] = float(stoi(m[0], refs, self.sample_rate).mean())
            row["stoi_out"] = float(stoi(ordered, refs, self.sample_rate).mean())
        return row, -float(best)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        est = self.model(batch["mix"])
        out = {"input": batch["mix"], "estimate": est, "name": batch["name"]}
        if "sources" in batch:
            best, perm = pit_si_snr(est, batch["sources"])
            out["estimate"] = reorder_sources(est, perm)
            out["reference"] = batch["sources"]
        out["lengths"] = batch.get("lengths")
        return out


class AudioPredictionWriter(BasePredictionWriter):
    """Writes each predicted utterance as WAV files and a spectrogram PNG, batch by batch.

    For an utterance ``name``: ``name_input.wav``, ``name_estimate.wav`` (enhancement) or
    ``name_estimate<k>.wav`` (separation, in the order matched to the references when given),
    and ``name.png`` with the spectrograms of input, outputs and references (the first
    ``n_plots`` utterances). Writing per batch keeps memory bounded on long lists.

    Args:
        output_dir: folder (default: the run's log folder).
        n_plots: spectrogram PNGs to write (0: none).
    """

    def __init__(self, output_dir: str | None = None, n_plots: int = 4):
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.n_plots = n_plots
        self._plotted = 0

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module,
        prediction,
        batch_indices,
        batch,
        batch_idx,
        dataloader_idx=0,
    ) -> None:
        from mixerzoo.audio.data import write_audio
        from mixerzoo.audio.inference import plot_spectrograms

        out_dir = (
            Path(self.output_dir or trainer.log_dir or trainer.default_root_dir) / "predictions"
        )
        rate = pl_module.sample_rate
        lengths = prediction.get("lengths")
        for b, name in enumerate(prediction["name"]):
            n = int(lengths[b]) if lengths is not None else prediction["input"].shape[-1]
            safe = "".join(c if c.isalnum() or c in "-_.+@" else "_" for c in str(name))
            x = prediction["input"][b, :n]
            est = prediction["estimate"][b, ..., :n]
            write_audio(out_dir / f"{safe}_input.wav", x, rate)
            panels = {"input": x}
            if est.dim() == 1:
                write_audio(out_dir / f"{safe}_estimate.wav", est, rate)
                panels["estimate"] = est
            else:
                for k, e in enumerate(est, start=1):
                    write_audio(out_dir / f"{safe}_estimate{k}.wav", e, rate)
                    panels[f"estimate {k}"] = e
            ref = prediction.get("reference")
            if ref is not None:
                r = ref[b, ..., :n]
                for k, rr in enumerate(r.reshape(-1, n), start=1):
                    panels[f"reference {k}" if r.dim() > 1 else "reference"] = rr
            if self._plotted < self.n_plots:
                plot_spectrograms(panels, rate, out_dir / f"{safe}.png", title=str(name))
                self._plotted += 1
