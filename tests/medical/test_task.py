"""SegmentationTask: nnU-Net's loss weights and optimiser, the Dice + CE loss against a hand-written
one, sliding-window inference, per-class metrics on known predictions, predictions written in the
input's space, and clear errors when model and data disagree."""

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image

from mixerzoo.medical import (
    ImageFolderSegmentation,
    NnUNetSGD,
    SegmentationTask,
    SegmentationWriter,
    VolumeSegmentation,
    XLSTMUNet,
    deep_supervision_weights,
)


def test_deep_supervision_weights_are_nnunets():
    # 1, 1/2, 1/4, 0 normalised: 4/7, 2/7, 1/7, 0.
    np.testing.assert_allclose(deep_supervision_weights(4), [4 / 7, 2 / 7, 1 / 7, 0.0])
    assert deep_supervision_weights(1) == [1.0]


def _hand_dice_ce(logits, target, include_background=False):
    """Soft Dice over the batch (nnU-Net batch Dice, smooth 1e-5) + cross-entropy."""
    k = logits.shape[1]
    probs = logits.softmax(1)
    onehot = F.one_hot(target[:, 0], k).movedim(-1, 1).float()
    dims = [0] + list(range(2, logits.dim()))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = 1 - (2 * inter + 1e-5) / (denom + 1e-5)
    dice = dice if include_background else dice[1:]
    return dice.mean() + F.cross_entropy(logits, target[:, 0])


def test_loss_is_deep_supervised_dice_plus_ce():
    torch.manual_seed(0)
    task = SegmentationTask(torch.nn.Identity(), patch_size=[8, 8])
    label = torch.randint(0, 3, (2, 1, 8, 8))
    outs = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)]
    # Three outputs: weights 1, 1/2, 0 normalised -> 2/3, 1/3, 0. Targets of the lower
    # resolutions: nearest-neighbour subsampling (every second pixel).
    expected = (2 / 3) * _hand_dice_ce(outs[0], label) + (1 / 3) * _hand_dice_ce(
        outs[1], label[:, :, ::2, ::2]
    )
    torch.testing.assert_close(task.compute_loss(outs, label), expected)


def test_nnunet_sgd_and_poly_schedule():
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = NnUNetSGD(params)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (
        1e-2,
        0.99,
        True,
        3e-5,
    )
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=10, power=0.9)
    for epoch in range(10):
        # nnU-Net's PolyLRScheduler: lr0 * (1 - epoch / max_epochs) ** 0.9
        assert abs(opt.param_groups[0]["lr"] - 1e-2 * (1 - epoch / 10) ** 0.9) < 1e-12
        opt.step()
        sched.step()


class _Recorder(torch.nn.Module):
    """A 1x1 conv that records the shape of every input it sees."""

    def __init__(self, spatial_dims=3, in_channels=1, num_classes=2):
        super().__init__()
        conv = torch.nn.Conv3d if spatial_dims == 3 else torch.nn.Conv2d
        self.conv = conv(in_channels, num_classes, 1)
        self.spatial_dims, self.in_channels, self.num_classes = (
            spatial_dims,
            in_channels,
            num_classes,
        )
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.conv(x)


def test_sliding_window_runs_patch_sized_batches_only():
    # Memory bounded by the patch: whatever the volume size, the network sees at most
    # sw_batch_size windows of the patch size at a time.
    model = _Recorder()
    task = SegmentationTask(model, patch_size=[16, 16, 8], sw_batch_size=3)
    for size in [(40, 33, 20), (70, 64, 30)]:
        model.shapes.clear()
        x = torch.randn(1, 1, *size)
        with torch.no_grad():
            out = task.sliding_window(x)
        assert out.shape == (1, 2, *size)
        assert model.shapes and all(s[0] <= 3 and s[2:] == (16, 16, 8) for s in model.shapes)
        # A 1x1 conv is position-wise: Gaussian-weighted windows average to the direct output.
        torch.testing.assert_close(out, model.conv(x), rtol=1e-4, atol=1e-4)


def _perfect_folder(root, n=4, size=32):
    """Images equal to the masks (x 255): thresholding the z-scored image is a perfect prediction."""
    (root / "image").mkdir(parents=True)
    (root / "label").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(4, size - 12, 2)
        mask[y : y + 8, x : x + 6] = 1
        Image.fromarray(mask * 255).save(root / "image" / f"{i}.png")
        Image.fromarray(mask).save(root / "label" / f"{i}.png")
    return root


class _Threshold(torch.nn.Module):
    """Logits (-x, x): class 1 where the normalised image is positive."""

    spatial_dims, in_channels, num_classes = 2, 1, 2

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return torch.cat([-x, x], dim=1) * self.scale


def _trainer(tmp_path, **kw):
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        **kw,
    )


def test_metrics_on_known_predictions(tmp_path, isbi_like):
    # Perfect predictions: Dice 1 and HD95 0 for every class.
    root = _perfect_folder(tmp_path / "p")
    dm = ImageFolderSegmentation(
        str(root), num_classes=2, patch_size=[16, 16], n_val=2, class_names=["bg", "box"]
    )
    task = SegmentationTask(_Threshold(), hd95=True)
    res = _trainer(tmp_path).test(task, dm, verbose=False)[0]
    assert res["test_dice_bg"] == pytest.approx(1.0) and res["test_dice_box"] == pytest.approx(1.0)
    assert res["test_hd95_box"] == pytest.approx(0.0) and res["test_dice"] == pytest.approx(1.0)
    # Noisy disks: the thresholded prediction is imperfect; per-class Dice by hand, averaged over
    # the held-out cases.
    dm = ImageFolderSegmentation(
        str(isbi_like), num_classes=2, label_values=[255, 0], patch_size=[16, 16], n_val=3
    )
    res = _trainer(tmp_path).test(SegmentationTask(_Threshold()), dm, verbose=False)[0]
    per_case = []
    for case in dm.val_cases:
        pred = (case.image[0] > 0).numpy()
        truth = case.label[0].numpy() == 1
        d1 = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
        d0 = 2 * (~pred & ~truth).sum() / ((~pred).sum() + (~truth).sum())
        per_case.append((d0, d1))
    expected = np.mean(per_case, axis=0)
    assert res["test_dice_class0"] == pytest.approx(expected[0], abs=1e-5)
    assert res["test_dice_class1"] == pytest.approx(expected[1], abs=1e-5)
    assert 0.3 < expected[1] < 0.99  # a real, imperfect case


def test_model_and_data_must_agree(tmp_path, isbi_like, tiny):
    volumes = tiny.make_ct_example(tmp_path / "ct")
    vol_dm = VolumeSegmentation(
        str(volumes),
        cases=[{"image": "ct.nii.gz", "label": "seg.nii.gz"}],
        num_classes=4,
        label_values=[0, 5, 1, 2],
        patch_size=[16, 16, 16],
    )
    task = SegmentationTask(XLSTMUNet(2, 1, 4, features=[4, 8], strides=[1, 2]))
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match="spatial_dims=2 but the data has spatial_dims=3"),
    ):
        _trainer(tmp_path, fast_dev_run=1).fit(task, vol_dm)
    dm = ImageFolderSegmentation(
        str(isbi_like), num_classes=2, label_values=[255, 0], patch_size=[16, 16], n_val=2
    )
    task = SegmentationTask(XLSTMUNet(2, 3, 2, features=[4, 8], strides=[1, 2]))
    with pytest.raises(ValueError, match="in_channels=3 but the data has in_channels=1"):
        _trainer(tmp_path, fast_dev_run=1).fit(task, dm)
    enc = XLSTMUNet(2, 1, 2, "enc", [4, 8, 16], [1, 2, 2], patch_size=(32, 32))
    with pytest.raises(ValueError, match="planned for patch_size"):
        _trainer(tmp_path, fast_dev_run=1).fit(SegmentationTask(enc), dm)


def test_fit_and_predict_2d_writes_png_and_overlay(tmp_path, isbi_like):
    dm = ImageFolderSegmentation(
        str(isbi_like),
        num_classes=2,
        label_values=[255, 0],
        patch_size=[32, 32],
        n_val=2,
        samples_per_epoch=4,
        batch_size=2,
    )
    model = XLSTMUNet(2, 1, 2, features=[4, 8, 16], strides=[1, 2, 2])
    task = SegmentationTask(model)
    out = tmp_path / "pred"
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[SegmentationWriter(str(out))])
    trainer.fit(task, dm)
    trainer.predict(task, dm)
    for case in dm.val_cases:
        png = np.asarray(Image.open(out / f"{case.id}.png"))
        assert png.shape == (64, 64) and set(np.unique(png)) <= {0, 255}
        overlay = Image.open(out / f"{case.id}_overlay.png")
        assert overlay.size == (3 * 64 + 2 * 4, 64)  # image | truth | prediction


def test_fit_and_predict_3d_writes_nifti_in_the_input_space(tmp_path, tiny):
    root = tiny.make_ct_example(tmp_path / "ct", shape=(30, 26, 14))
    dm = VolumeSegmentation(
        str(root), cases=[{"image": "ct.nii.gz", "label": "seg.nii.gz", "id": "ct"}], num_classes=4,
        label_values=[0, 5, 1, 2], spacing=[4.0, 4.0, 4.0], patch_size=[16, 16, 16],
        samples_per_epoch=2, batch_size=2, normalization="ct",
    )  # fmt: skip
    model = XLSTMUNet(3, 1, 4, features=[4, 8, 16], strides=[1, 2, 2])
    out = tmp_path / "pred"
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[SegmentationWriter(str(out))])
    with pytest.warns(UserWarning):
        trainer.fit(SegmentationTask(model, hd95=True), dm)
    outputs = trainer.predict(datamodule=dm, ckpt_path=None, model=trainer.lightning_module)
    assert "probabilities" not in outputs[0] and outputs[0]["paths"]  # dropped once written
    source = nib.load(str(root / "ct.nii.gz"))
    pred = nib.load(str(out / "ct.nii.gz"))
    assert pred.shape == source.shape == (30, 26, 14)
    np.testing.assert_array_equal(pred.affine, source.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 5, 1, 2}
    assert (out / "ct_overlay.png").is_file()


def test_real_ct_volume_end_to_end(tmp_path, shared_data):
    # The shared CT example: load, reorient, resample to 4 mm, CT-normalise, train on patches for
    # a few steps, sliding-window over the whole volume, NIfTI back in the input's space.
    root = shared_data / "medical" / "ct_example"
    dm = VolumeSegmentation(
        str(root), cases=[{"image": "ct.nii.gz", "label": "seg.nii.gz", "id": "ct"}],
        num_classes=6, label_values=[0, 5, 1, 2, 3, 6], unlisted_labels="background",
        spacing=[4.0, 4.0, 4.0], normalization="ct", patch_size=[32, 32, 32],
        samples_per_epoch=4, batch_size=2,
    )  # fmt: skip
    model = XLSTMUNet(3, 1, 6, features=[4, 8, 16, 32], strides=[1, 2, 2, 2])
    out = tmp_path / "pred"
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[SegmentationWriter(str(out))])
    with pytest.warns(UserWarning, match="smaller than the patch"):  # 22 slices at 4 mm < 32
        trainer.fit(SegmentationTask(model), dm)
    # round(122 * 3/4), round(101 * 3/4), round(30 * 3/4), halves to even: 92, 76, 22
    assert dm.train_cases[0].shape == (92, 76, 22)
    trainer.predict(datamodule=dm, model=trainer.lightning_module)
    source = nib.load(str(root / "ct.nii.gz"))
    pred = nib.load(str(out / "ct.nii.gz"))
    assert pred.shape == source.shape == (122, 101, 30)
    np.testing.assert_array_equal(pred.affine, source.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 5, 1, 2, 3, 6}
