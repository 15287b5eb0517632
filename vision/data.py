"""Image-folder data for classification: folders of class subfolders, timm's transforms.

Layout (torchvision's ``ImageFolder`` convention, what ImageNet and the shared CIFAR-10 copy use)::

    root/train/<class>/<image>   root/val/<class>/<image> (optional)   root/test/<class>/<image>

- Classes are the subfolder names of ``train/``, sorted (label ``i`` = ``classes[i]``); ``val/``
  and ``test/`` must use the same names (a subset is fine). Any image size and any number of
  classes; files with the usual image extensions are read, in sorted order.
- Without a ``val/`` folder, the validation set is carved from ``train/`` by a stratified split
  seeded with ``split_seed``: ``round(val_fraction * n_c)`` images of every class ``c`` (at least
  one when the class has two or more), the same on every machine.
- Transforms are timm's ``create_transform``: training ``RandomResizedCrop(scale, ratio)`` + flip
  (+ RandAugment / colour jitter / random erasing as configured), or, with ``crop_padding`` > 0,
  the small-image recipe of CIFAR training instead of the resized crop: pad by ``crop_padding``
  pixels on each side (reflected) and take a random ``input_size`` crop (a translation of up to
  ``crop_padding`` pixels, no rescaling); evaluation ``Resize(input_size /
  crop_pct)`` + centre crop, then ``ToTensor`` and normalisation with ``mean``/``std`` (default
  ImageNet's; CIFAR-10's channel statistics are (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435,
  0.2616)). The literature's ImageNet protocol is the default: 224 px, crop_pct 0.875, bicubic.
- ``cache_images`` decodes every image once into memory (small data sets such as CIFAR-10:
  50,000 32x32 images are 150 MB), so that epochs do not re-read and re-decode the files.

Bad folders are errors that say what is wrong and what to do: a missing or empty folder, images
directly in the split folder (no class subfolders), a class folder without images, a val/test
class that training does not have, an image file that cannot be read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import Compose, RandomCrop

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderError",
    "ImageReadError",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "PadCropFlip",
    "find_classes",
    "list_images",
    "stratified_split",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class ImageFolderError(ValueError):
    """A folder of images that is missing, empty or not laid out as ``<split>/<class>/<image>``."""


class ImageReadError(OSError):
    """An image file that PIL cannot read."""


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def find_classes(folder: str | os.PathLike) -> list[str]:
    """Sorted class subfolder names of ``folder``.

    Raises:
        ImageFolderError: the folder is missing, has no subfolders, or holds images directly.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(
            f"image folder {folder} does not exist; expected {folder}/<class>/<image> files"
        )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = [p.name for p in folder.iterdir() if _is_image(p)]
        if loose:
            raise ImageFolderError(
                f"{folder} holds images directly ({len(loose)} files, e.g. {loose[0]}) but no "
                f"class subfolders; put each class's images in {folder}/<class name>/"
            )
        raise ImageFolderError(
            f"{folder} is empty: expected one subfolder per class, {folder}/<class>/<image>"
        )
    return classes


def list_images(folder: str | os.PathLike, classes: Sequence[str]) -> list[tuple[str, int]]:
    """``(path, label)`` of every image under ``folder/<class>/``, sorted, label = class index.

    Raises:
        ImageFolderError: a class folder has no image files.
    """
    folder = Path(folder)
    samples = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        files = sorted(p for p in class_dir.rglob("*") if _is_image(p))
        if not files:
            raise ImageFolderError(
                f"class folder {class_dir} has no images (extensions {', '.join(IMAGE_EXTENSIONS)}); "
                f"add its images or remove the folder"
            )
        samples += [(str(p), label) for p in files]
    return samples


def stratified_split(
    labels: Sequence[int], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Seeded stratified split of sample indices into ``(train, val)``.

    Every class gives ``round(fraction * n_c)`` of its samples to validation (at least one when it
    has two or more, and never all of them), chosen by a permutation seeded with ``seed``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = min(len(idx) - 1, max(1 if len(idx) > 1 else 0, round(fraction * len(idx))))
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return sorted(train), sorted(val)


class PadCropFlip:
    """CIFAR's training transform on one image: reflect-pad by ``padding`` pixels on each side,
    a random ``size x size`` crop, a horizontal flip with probability ``hflip``, then ``[0, 1]``
    scaling and normalisation with ``mean`` / ``std``; ``[H, W, 3]`` uint8 array or PIL image in,
    ``[3, size, size]`` float tensor out.

    The same images as torchvision's ``RandomCrop(size, padding, pad_if_needed=True,
    padding_mode="reflect")``, ``RandomHorizontalFlip``, ``ToTensor`` and ``Normalize`` (which
    :class:`ImageFolderDataModule` composes when other augmentations are on), drawn from
    ``torch``'s generator as they are, but in numpy on the cached arrays: 4x faster than the PIL
    pipeline, which took 0.5-0.6 ms an image, a quarter of a CIFAR-10 training step of MambaOut
    on 2 CPU cores (``benchmarks/vision.py --tables train``).
    """

    accepts_arrays = True

    def __init__(self, size: int, padding: int, hflip: float, mean, std):
        self.size, self.padding, self.hflip = size, padding, hflip
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: np.ndarray | Image.Image) -> torch.Tensor:
        img = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img)
        p = self.padding
        img = np.pad(img, ((p, p), (p, p), (0, 0)), mode="reflect")
        short = [max(0, self.size - n) for n in img.shape[:2]]
        if any(short):  # torchvision's pad_if_needed: the deficit on both sides
            img = np.pad(img, ((short[0],) * 2, (short[1],) * 2, (0, 0)), mode="reflect")
        top = int(torch.randint(0, img.shape[0] - self.size + 1, size=(1,)))
        left = int(torch.randint(0, img.shape[1] - self.size + 1, size=(1,)))
        img = img[top : top + self.size, left : left + self.size]
        if torch.rand(1) < self.hflip:
            img = img[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        return x.sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return (
            f"PadCropFlip(size={self.size}, padding={self.padding}, hflip={self.hflip}, "
            f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"
        )


def _read(path: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageReadError(
            f"cannot read image {path} ({type(err).__name__}: {err}); remove the file or "
            f"replace it with a valid image"
        ) from err


class ImageFolderDataset(Dataset):
    """``(image, label)`` pairs from a list of ``(path, label)``.

    Args:
        samples: ``(path, label)`` per image (label ``-1`` for unlabelled images).
        transform: applied to the RGB PIL image.
        cache: decode every image once, at construction, and keep it in memory.
        with_index: also return the sample index (prediction writes the file names).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transform: Any = None,
        cache: bool = False,
        with_index: bool = False,
    ):
        self.samples = list(samples)
        self.transform = transform
        self.with_index = with_index
        self.images: list[np.ndarray] | None = None
        if cache:
            self.images = [np.asarray(_read(path)) for path, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        if self.images is None:
            img = _read(path)
        elif getattr(self.transform, "accepts_arrays", False):
            img = self.images[index]
        else:
            img = Image.fromarray(self.images[index])
        if self.transform is not None:
            img = self.transform(img)
        return (img, label, index) if self.with_index else (img, label)


class ImageFolderDataModule(pl.LightningDataModule):
    """Train / val / test image folders for classification (see the module docstring).

    Args:
        root: folder holding ``train/`` (and ``val/``, ``test/``).
        input_size: side of the (square) network input.
        batch_size: training batch size (the train loader drops its last incomplete batch, so
            that mixup/cutmix always see an even batch).
        eval_batch_size: validation / test / predict batch size (default ``batch_size``).
        num_workers: loader worker processes.
        val_fraction: share of each class of ``train/`` held out when there is no ``val/``.
        split_seed: seed of that split.
        mean, std: normalisation (default ImageNet's).
        interpolation: resize interpolation (``"bicubic"``, ``"bilinear"``, ...).
        crop_pct: evaluation centre-crop fraction (``1.0`` for images already at input size).
        scale, ratio: ``RandomResizedCrop`` area and aspect ranges for training.
        crop_padding: if > 0, training crops are random ``input_size`` crops of the image padded
            by this many pixels on each side (reflected), instead of ``RandomResizedCrop``; for
            images already at ``input_size``, such as CIFAR's 32x32 (4 is the usual value).
            Larger images are cropped at their own resolution.
        hflip: horizontal-flip probability.
        color_jitter: colour-jitter strength (ignored when ``auto_augment`` is set).
        auto_augment: timm auto-augment policy, e.g. ``"rand-m9-mstd0.5-inc1"``.
        re_prob: random-erasing probability.
        cache_images: decode all images once into memory.
        train_dir, val_dir, test_dir: split folder names under ``root``.
        predict_dir: folder to predict on (default the test split); a folder of images without
            class subfolders is predicted unlabelled.
        persistent_workers: keep loader workers alive across epochs.

    Attributes (after ``setup``):
        classes: class names, ``num_classes``, and the datasets ``train_dataset`` ...
    """

    def __init__(
        self,
        root: str,
        input_size: int = 224,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        interpolation: str = "bicubic",
        crop_pct: float = 0.875,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        crop_padding: int = 0,
        hflip: float = 0.5,
        color_jitter: float = 0.4,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        cache_images: bool = False,
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: str = "test",
        predict_dir: str | None = None,
        persistent_workers: bool = False,
    ):
        super().__init__()
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0 pixels, got {crop_padding}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.input_size = input_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.classes: list[str] = []
        self.train_dataset = self.val_dataset = self.test_dataset = None
        self.predict_dataset = None
        self._train_samples: list[tuple[str, int]] | None = None
        self._val_samples: list[tuple[str, int]] | None = None

    # --- transforms ---------------------------------------------------------------------------

    def train_transform(self) -> Any:
        """:class:`PadCropFlip` for padded crops with no other augmentation, else
        :meth:`pil_train_transform`."""
        hp = self.hparams
        if hp.crop_padding > 0 and not (hp.color_jitter or hp.auto_augment or hp.re_prob):
            return PadCropFlip(self.input_size, hp.crop_padding, hp.hflip, hp.mean, hp.std)
        return self.pil_train_transform()

    def pil_train_transform(self) -> Any:
        """The training transform through timm's (and, for padded crops, torchvision's) PIL
        transforms."""
        hp = self.hparams
        padded = hp.crop_padding > 0
        transform = create_transform(
            self.input_size,
            is_training=True,
            # After the padded crop the image is input_size square: timm's resized crop of the
            # whole image at the same size is then the identity.
            scale=(1.0, 1.0) if padded else tuple(hp.scale),
            ratio=(1.0, 1.0) if padded else tuple(hp.ratio),
            hflip=hp.hflip,
            color_jitter=hp.color_jitter,
            auto_augment=hp.auto_augment,
            interpolation=hp.interpolation,
            mean=tuple(hp.mean),
            std=tuple(hp.std),
            re_prob=hp.re_prob,
            re_mode="pixel",
        )
        if padded:
            crop = RandomCrop(
                self.input_size, padding=hp.crop_padding, pad_if_needed=True, padding_mode="reflect"
            )
            transform = Compose([crop, *transform.transforms])
        return transform

    def eval_transform(self) -> Any:
        hp = self.hparams
        return create_transform(
            self.input_size,
            is_training=False,
            interpolation=hp.interpolation,
            mean=tuple(hp.mean),
            std=tuple(hp.std),
            crop_pct=hp.crop_pct,
        )

    # --- folders ------------------------------------------------------------------------------

    def _split_dir(self, name: str | None) -> Path | None:
        return None if name is None else self.root / name

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise ImageFolderError(
                f"data root {self.root} (absolute: {self.root.resolve()}) does not exist; point "
                f"root at a folder with train/<class>/<image> (and test/...). CIFAR-10 as an "
                f"image folder is in the shared data bundle: ../shared/data/vision/cifar10"
            )

    def _labelled(self, folder: Path) -> list[tuple[str, int]]:
        names = find_classes(folder)
        unknown = sorted(set(names) - set(self.classes))
        if unknown:
            raise ImageFolderError(
                f"{folder} has classes that {self.root / self.hparams.train_dir} does not: "
                f"{unknown[:5]}; use the same class folder names in every split"
            )
        return list_images(folder, self.classes)

    def prepare_classes(self) -> list[str]:
        """Read the class names from the training folder (done by ``setup``)."""
        if not self.classes:
            self._check_root()
            self.classes = find_classes(self.root / self.hparams.train_dir)
        return self.classes

    @property
    def num_classes(self) -> int:
        return len(self.prepare_classes())

    def setup(self, stage: str | None = None) -> None:
        self.prepare_classes()
        hp = self.hparams
        cache = hp.cache_images
        if stage in (None, "fit", "validate") and self.train_dataset is None:
            train = list_images(self.root / hp.train_dir, self.classes)
            val_dir = self._split_dir(hp.val_dir)
            if val_dir is not None and val_dir.is_dir():
                val = self._labelled(val_dir)
            else:
                keep, held = stratified_split([y for _, y in train], hp.val_fraction, hp.split_seed)
                train, val = [train[i] for i in keep], [train[i] for i in held]
            self._train_samples, self._val_samples = train, val
            self.train_dataset = ImageFolderDataset(train, self.train_transform(), cache)
            self.val_dataset = ImageFolderDataset(val, self.eval_transform(), cache)
        if stage in (None, "test") and self.test_dataset is None and self._has_test():
            samples = self._labelled(self.root / hp.test_dir)
            self.test_dataset = ImageFolderDataset(samples, self.eval_transform(), cache)
        if stage in (None, "predict") and self.predict_dataset is None:
            self.predict_dataset = ImageFolderDataset(
                self._predict_samples(), self.eval_transform(), with_index=True
            )

    def _has_test(self) -> bool:
        return (self.root / self.hparams.test_dir).is_dir()

    def _predict_samples(self) -> list[tuple[str, int]]:
        folder = Path(self.hparams.predict_dir) if self.hparams.predict_dir else None
        if folder is None:
            if not self._has_test():
                raise ImageFolderError(
                    f"nothing to predict: {self.root / self.hparams.test_dir} does not exist; "
                    f"set predict_dir to a folder of images"
                )
            return self._labelled(self.root / self.hparams.test_dir)
        if not folder.is_dir():
            raise ImageFolderError(f"predict_dir {folder} does not exist")
        loose = sorted(p for p in folder.iterdir() if _is_image(p))
        if loose:
            return [(str(p), -1) for p in loose]
        return self._labelled(folder)

    # --- loaders ------------------------------------------------------------------------------

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > batch_size,
            num_workers=workers,
            persistent_workers=bool(self.hparams.persistent_workers and workers > 0),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        if self.test_dataset is None:
            self.setup("test")
        if self.test_dataset is None:
            raise ImageFolderError(
                f"no test split: {self.root / self.hparams.test_dir} does not exist"
            )
        return self._loader(self.test_dataset, False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_dataset, False, self.eval_batch_size)

    def predict_paths(self) -> list[str]:
        """File of every predicted sample, in prediction order."""
        return [path for path, _ in self.predict_dataset.samples]

    def class_counts(self, split: str = "train") -> torch.Tensor:
        """Images per class in a split after ``setup`` (``"train"`` or ``"val"``)."""
        samples = self._train_samples if split == "train" else self._val_samples
        return torch.bincount(torch.tensor([y for _, y in samples]), minlength=len(self.classes))
