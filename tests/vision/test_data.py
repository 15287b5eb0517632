"""Image-folder data: layout, the seeded stratified split, timm's transforms, clear errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from mixerzoo.vision.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    ImageFolderDataModule,
    ImageFolderError,
    ImageReadError,
    PadCropFlip,
    stratified_split,
)

from .conftest import CLASSES, make_image_folder


def test_classes_splits_and_batches(image_folder):
    dm = ImageFolderDataModule(
        str(image_folder),
        input_size=32,
        batch_size=4,
        num_workers=0,
        crop_pct=1.0,
        val_fraction=0.25,
    )
    dm.setup("fit")
    assert dm.classes == sorted(CLASSES) and dm.num_classes == 3
    # 8 training images per class, a quarter of each class held out.
    assert dm.class_counts("train").tolist() == [6, 6, 6]
    assert dm.class_counts("val").tolist() == [2, 2, 2]
    train_files = {p for p, _ in dm.train_dataset.samples}
    assert not train_files & {p for p, _ in dm.val_dataset.samples}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    # Evaluation: resize + centre crop + normalisation of the file's pixels (crop_pct 1).
    x_val, y_val = dm.val_dataset[0]
    path, label = dm.val_dataset.samples[0]
    pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1) / 255
    mean, std = (
        torch.tensor(dm.hparams.mean)[:, None, None],
        torch.tensor(dm.hparams.std)[:, None, None],
    )
    assert torch.allclose(x_val, (pixels - mean) / std, atol=1e-6) and y_val == label
    dm.setup("test")
    assert len(dm.test_dataset) == 12
    assert len(dm.train_dataloader()) == 18 // 4  # drop_last for even mixup batches


def test_split_is_seeded_stratified_and_reproducible():
    labels = [0] * 50 + [1] * 30 + [2] * 7 + [3] * 1
    train, val = stratified_split(labels, 0.1, seed=3)
    assert sorted(train + val) == list(range(len(labels)))
    assert Counter(labels[i] for i in val) == {0: 5, 1: 3, 2: 1}  # a single image stays in train
    assert (train, val) == stratified_split(labels, 0.1, seed=3)
    assert val != stratified_split(labels, 0.1, seed=4)[1]
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, 1.5, seed=0)


def test_val_folder_is_used_when_present(tmp_path):
    root = make_image_folder(tmp_path / "d", {"train": 5, "val": 2, "test": 1})
    dm = ImageFolderDataModule(str(root), input_size=32, num_workers=0)
    dm.setup("fit")
    assert len(dm.train_dataset) == 15 and len(dm.val_dataset) == 6


def test_cache_gives_the_same_images(image_folder):
    args = dict(input_size=32, num_workers=0, crop_pct=1.0)
    plain = ImageFolderDataModule(str(image_folder), **args)
    cached = ImageFolderDataModule(str(image_folder), cache_images=True, **args)
    plain.setup("fit")
    cached.setup("fit")
    assert cached.val_dataset.images is not None
    for i in range(len(plain.val_dataset)):
        assert torch.equal(plain.val_dataset[i][0], cached.val_dataset[i][0])


def test_any_size_and_transforms_from_timm(tmp_path):
    root = make_image_folder(tmp_path / "d", {"train": 4}, size=50, classes=("a", "b"))
    dm = ImageFolderDataModule(
        str(root), input_size=24, num_workers=0, auto_augment="rand-m9-mstd0.5"
    )
    dm.setup("fit")
    assert dm.train_dataset[0][0].shape == (3, 24, 24)
    assert dm.val_dataset[0][0].shape == (3, 24, 24)
    names = [type(t).__name__ for t in dm.train_dataset.transform.transforms]
    assert names[0] == "RandomResizedCropAndInterpolation" and "RandAugment" in names


def test_padded_crop_is_a_translated_window_of_the_reflected_image(image_folder):
    dm = ImageFolderDataModule(
        str(image_folder), input_size=32, num_workers=0, crop_padding=4, hflip=0.0, color_jitter=0.0
    )
    dm.setup("fit")
    assert isinstance(dm.train_dataset.transform, PadCropFlip)
    path, _ = dm.train_dataset.samples[0]
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(np.float32) / 255
    padded = np.pad(pixels, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    mean, std = np.array(dm.hparams.mean), np.array(dm.hparams.std)
    windows = {
        (i, j): (padded[i : i + 32, j : j + 32] - mean) / std for i in range(9) for j in range(9)
    }
    torch.manual_seed(0)
    offsets = []
    for _ in range(40):
        x = dm.train_dataset[0][0].permute(1, 2, 0).numpy()
        hits = [k for k, w in windows.items() if np.allclose(x, w, atol=1e-5)]
        assert len(hits) == 1  # exactly one window of the padded image, unscaled
        offsets.append(hits[0])
    assert len(set(offsets)) > 10  # random translations, not a fixed crop
    # With other augmentations on, the crop leads torchvision's and timm's composed pipeline.
    jitter = ImageFolderDataModule(str(image_folder), input_size=32, crop_padding=4)
    names = [type(t).__name__ for t in jitter.train_transform().transforms]
    assert names[0] == "RandomCrop" and "ColorJitter" in names
    with pytest.raises(ValueError, match="crop_padding must be >= 0"):
        ImageFolderDataModule(str(image_folder), crop_padding=-1)


@pytest.mark.parametrize("side", [32, 27])
def test_pad_crop_flip_equals_torchvisions_pipeline(side):
    """The numpy transform draws the same random numbers as torchvision's transforms and gives
    the same tensors, for CIFAR-sized images and for smaller ones (padded up as needed)."""
    from torchvision import transforms as T

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(side, side + 3, 3), dtype=np.uint8)
    fast = PadCropFlip(32, 4, 0.5, CIFAR10_MEAN, CIFAR10_STD)
    reference = T.Compose(
        [
            T.RandomCrop(32, padding=4, pad_if_needed=True, padding_mode="reflect"),
            T.RandomHorizontalFlip(0.5),
            T.ToTensor(),
            T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    for seed in range(12):
        torch.manual_seed(seed)
        got = fast(array)
        torch.manual_seed(seed)
        want = reference(Image.fromarray(array))
        assert got.shape == want.shape == (3, 32, 32)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    torch.manual_seed(0)
    torch.testing.assert_close(fast(Image.fromarray(array)), (torch.manual_seed(0), fast(array))[1])


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(ImageFolderError, match="does not exist.*cifar10"):
        ImageFolderDataModule(str(tmp_path / "missing")).setup("fit")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(ImageFolderError, match="is empty: expected one subfolder per class"):
        ImageFolderDataModule(str(tmp_path / "empty")).setup("fit")
    loose = tmp_path / "loose" / "train"
    loose.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(loose / "a.png")
    with pytest.raises(ImageFolderError, match="holds images directly.*class subfolders"):
        ImageFolderDataModule(str(tmp_path / "loose")).setup("fit")
    root = make_image_folder(tmp_path / "d", {"train": 2})
    (root / "train" / "zebra").mkdir()
    (root / "train" / "zebra" / "notes.txt").write_text("no images here")
    with pytest.raises(ImageFolderError, match=r"class folder .*zebra has no images"):
        ImageFolderDataModule(str(root)).setup("fit")


def test_split_with_unknown_classes_is_an_error(tmp_path):
    root = make_image_folder(tmp_path / "d", {"train": 2, "test": 1})
    make_image_folder(tmp_path / "d", {"test": 1}, classes=("lion",))
    dm = ImageFolderDataModule(str(root), num_workers=0)
    with pytest.raises(ImageFolderError, match=r"classes that .*train does not: \['lion'\]"):
        dm.setup("test")


def test_unreadable_image_names_the_file(tmp_path):
    root = make_image_folder(tmp_path / "d", {"train": 3})
    broken = root / "train" / "cat" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    dm = ImageFolderDataModule(str(root), input_size=32, num_workers=0, val_fraction=0.3)
    dm.setup("fit")
    index = [p for p, _ in dm.train_dataset.samples + dm.val_dataset.samples].index(str(broken))
    dataset = dm.train_dataset if index < len(dm.train_dataset) else dm.val_dataset
    with pytest.raises(ImageReadError, match=r"cannot read image .*broken\.jpg.*remove the file"):
        for i in range(len(dataset)):
            dataset[i]
    with pytest.raises(ImageReadError, match="broken.jpg"):
        ImageFolderDataModule(str(root), cache_images=True, num_workers=0).setup("fit")


def test_predict_an_unlabelled_folder(tmp_path, image_folder):
    loose = tmp_path / "new"
    loose.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (i * 80, 0, 0)).save(loose / f"{i}.jpg")
    dm = ImageFolderDataModule(
        str(image_folder), input_size=32, num_workers=0, predict_dir=str(loose)
    )
    dm.setup("predict")
    x, y, index = next(iter(dm.predict_dataloader()))
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [-1, -1, -1] and index.tolist() == [0, 1, 2]
    assert [p.split("/")[-1] for p in dm.predict_paths()] == ["0.jpg", "1.jpg", "2.jpg"]


def test_shared_cifar10_folder(shared_data):
    root = shared_data / "vision" / "cifar10"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    dm = ImageFolderDataModule(
        str(root),
        input_size=32,
        batch_size=8,
        num_workers=0,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        crop_pct=1.0,
    )
    dm.setup("fit")
    dm.setup("test")
    assert dm.classes == sorted(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    )
    assert len(dm.train_dataset) == 45_000 and len(dm.val_dataset) == 5_000
    assert dm.class_counts("val").tolist() == [500] * 10
    assert len(dm.test_dataset) == 10_000
    x, _ = dm.test_dataset[0]
    assert x.shape == (3, 32, 32)
