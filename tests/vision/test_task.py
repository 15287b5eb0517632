"""ClassificationTask: training through timm's / torchmetrics' pieces, EMA, mixup, the schedule,
and the prediction files."""

from __future__ import annotations

import csv
import functools
import math

import pytest
import pytorch_lightning as pl
import torch
from timm.scheduler import CosineLRScheduler

from mixerzoo.vision import (
    ClassificationTask,
    ClassificationWriter,
    ImageFolderDataModule,
    WarmupCosineLR,
)
from mixerzoo.vision.models import MambaOut

from .conftest import CLASSES


def _model(**kwargs) -> MambaOut:
    torch.manual_seed(0)
    return MambaOut(num_classes=3, depths=(1, 1), dims=(8, 16), stem_stride=2, **kwargs)


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    args = dict(
        max_epochs=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
    )
    return pl.Trainer(**{**args, **kwargs})


def _data(root, **kwargs) -> ImageFolderDataModule:
    args = dict(input_size=32, batch_size=6, num_workers=0, crop_pct=1.0, val_fraction=0.25)
    return ImageFolderDataModule(str(root), **{**args, **kwargs})


def test_schedule_is_timms_cosine_per_step():
    def optimizer():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    ours = WarmupCosineLR(
        optimizer(), warmup_epochs=2, min_lr=1e-3, warmup_lr=1e-4, epochs=5, steps_per_epoch=4
    )
    ref_opt = optimizer()
    ref = CosineLRScheduler(
        ref_opt, t_initial=20, lr_min=1e-3, warmup_t=8, warmup_lr_init=1e-4, t_in_epochs=False
    )
    got, want = [], []
    for step in range(20):
        got.append(ours.optimizer.param_groups[0]["lr"])
        ref.step_update(step)
        want.append(ref_opt.param_groups[0]["lr"])
        ours.optimizer.step()
        ours.step()
    assert got == pytest.approx(want, rel=1e-12)
    # Closed form: linear warm-up from warmup_lr, then the cosine from the peak towards min_lr.
    assert got[0] == pytest.approx(1e-4)
    assert got[4] == pytest.approx(1e-4 + 4 * (0.1 - 1e-4) / 8)
    assert got[12] == pytest.approx(1e-3 + 0.5 * (0.1 - 1e-3) * (1 + math.cos(math.pi * 12 / 20)))
    # Resume: a state dict restores the position.
    state = ours.state_dict()
    again = WarmupCosineLR(optimizer(), warmup_epochs=2, min_lr=1e-3, warmup_lr=1e-4)
    again.load_state_dict(state)
    assert again.get_lr() == pytest.approx(ours.get_lr())


def test_training_learns_the_classes_and_logs_metrics(image_folder, tmp_path):
    task = ClassificationTask(
        _model(),
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
        lr_scheduler=functools.partial(WarmupCosineLR, warmup_epochs=1),
        label_smoothing=0.1,
    )
    dm = _data(image_folder)
    trainer = _trainer(tmp_path)
    trainer.fit(task, dm)
    assert task.lr_schedulers().configured and task.lr_schedulers().epochs == 6
    val = trainer.validate(task, dm, verbose=False)[0]
    test = trainer.test(task, dm, verbose=False)[0]
    assert val["val_acc1"] == 1.0 and test["test_acc1"] == 1.0  # colours are easy to tell apart
    assert test["test_acc5"] == 1.0  # top-k clipped to the 3 classes
    assert 0 < test["test_loss"] < math.log(3)


def test_mixup_and_ema(image_folder, tmp_path):
    model = _model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    task = ClassificationTask(
        model,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        ema_decay=0.9,
    )
    assert type(task.train_criterion).__name__ == "SoftTargetCrossEntropy"
    _trainer(tmp_path, max_epochs=1).fit(task, _data(image_folder, batch_size=4))
    ema = task.ema.module.state_dict()
    trained = task.model.state_dict()
    key = "stages.0.blocks.0.mixer.fc1.weight"
    # The average moved from the start towards the weights, but is not the weights.
    assert not torch.equal(ema[key], start[key]) and not torch.equal(ema[key], trained[key])
    assert task._eval_model() is task.ema.module
    assert all(not p.requires_grad for p in task.ema.parameters())
    with pytest.raises(ValueError, match="even batch"):
        task.training_step((torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])), 0)


def test_flip_test_time_augmentation_averages_image_and_mirror(image_folder, tmp_path):
    task = ClassificationTask(_model(), tta_flip=True).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain = task.model(x).softmax(-1)
        mirror = task.model(torch.flip(x, dims=[3])).softmax(-1)
        assert not torch.allclose(plain, mirror, atol=1e-3)  # the check below can tell them apart
        expected = (plain + mirror) / 2
        torch.testing.assert_close(task._eval_logits(x).exp(), expected)
        out = task.predict_step((x, torch.zeros(4, dtype=torch.long)), 0)
    torch.testing.assert_close(out["topk_probs"][:, 0], expected.max(-1).values)
    trainer = _trainer(tmp_path)
    dm = _data(image_folder)
    loss = trainer.test(task, dm, verbose=False)[0]["test_loss"]
    dm.setup("test")
    batch = [torch.stack([dm.test_dataset[i][0] for i in range(len(dm.test_dataset))])]
    labels = torch.tensor([y for _, y in dm.test_dataset.samples])
    with torch.no_grad():
        flipped = task.model(batch[0].flip(-1)).softmax(-1)
        mean = (task.model(batch[0]).softmax(-1) + flipped) / 2
    assert loss == pytest.approx(
        float(-mean[torch.arange(len(labels)), labels].log().mean()), rel=1e-4
    )


def test_predict_writes_csv_and_confusion_matrix(image_folder, tmp_path):
    task = ClassificationTask(_model(), top_k=2)
    out = tmp_path / "pred"
    trainer = _trainer(tmp_path, callbacks=[ClassificationWriter(str(out))])
    dm = _data(image_folder)
    trainer.predict(task, dm)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 12
    assert list(rows[0]) == [
        "file",
        "label",
        "prediction",
        "top1_class",
        "top1_prob",
        "top2_class",
        "top2_prob",
    ]
    # Independent check of the first rows: the model's softmax on the same images.
    x = torch.stack([dm.predict_dataset[i][0] for i in range(3)])
    with torch.no_grad():
        probs = task.model.eval()(x).softmax(-1)
    for i in range(3):
        path, label = dm.predict_dataset.samples[i]
        assert rows[i]["file"] == path and rows[i]["label"] == sorted(CLASSES)[label]
        assert (
            rows[i]["top1_class"]
            == sorted(CLASSES)[int(probs[i].argmax())]
            == rows[i]["prediction"]
        )
        assert float(rows[i]["top1_prob"]) == pytest.approx(float(probs[i].max()), abs=1e-5)
        assert float(rows[i]["top1_prob"]) >= float(rows[i]["top2_prob"])
    png = out / "confusion_matrix.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_class_count_mismatch_is_a_clear_error(image_folder, tmp_path):
    model = MambaOut(num_classes=5, depths=(1,), dims=(8,), stem_stride=2)
    task = ClassificationTask(model)
    with pytest.raises(ValueError, match="data has 3 classes but the model / task 5"):
        _trainer(tmp_path, max_epochs=1).fit(task, _data(image_folder))
    with pytest.raises(ValueError, match="num_classes >= 2"):
        ClassificationTask(torch.nn.Linear(3, 3))
