"""Segmentation data: 2-D image/mask folders and 3-D NIfTI volumes, on MONAI's transforms.

Two Lightning data modules share one pipeline (:class:`SegmentationDataModule`):

- :class:`ImageFolderSegmentation` (2-D): ``root/<image_dir>/*.png|tif|tiff|jpg`` with masks of
  the same file stem in ``root/<label_dir>/`` (any of those extensions; nnU-Net's
  ``<case>_0000.png`` images with ``<case>.png`` labels pair too). Grey images have one channel,
  RGB three (alpha dropped). Masks are single-channel integer images.
- :class:`VolumeSegmentation` (3-D): NIfTI image + label pairs, listed by a Medical Segmentation
  Decathlon ``dataset.json`` (its ``"training"`` list, ``"labels"`` and ``"modality"``), by an
  explicit ``cases`` list, or found in two folders (``imagesTr``/``labelsTr`` by default) by file
  name (nnU-Net's ``_0000`` channel suffix is understood: ``case_0000.nii.gz``,
  ``case_0001.nii.gz`` are the channels of ``case``). Loaded by MONAI (nibabel reader).

Preprocessing, once per case at ``setup`` (as nnU-Net preprocesses once):

1. 3-D only: reorientation to ``orientation`` (default RAS) and resampling to ``spacing``
   (MONAI ``Orientationd``/``Spacingd``, new shape ``round(shape * old / new)`` as nnU-Net's;
   trilinear image, nearest label; nnU-Net uses third-order
   splines for the image and linear per-class interpolation for labels — a deviation).
2. Intensity normalisation (nnU-Net's schemes): ``"zscore"`` per case and channel (MR,
   microscopy, EM), or ``"ct"``: clipping to the 0.5 / 99.5 percentiles of the foreground
   intensities of the training cases, then z-scoring with their mean and standard deviation
   (``ct_clip``/``ct_stats`` override them); ``"none"`` leaves the values.
3. Label values mapped to classes: ``label_values[i]`` is the stored value of class ``i``
   (default: the values are the classes ``0..num_classes-1``). A value that is not declared is an
   error naming the file, unless ``unlisted_labels="background"`` maps it to class 0.

Training samples are random patches of ``patch_size`` (``samples_per_epoch`` per epoch, cases
cycled and shuffled): with probability ``foreground_fraction`` (nnU-Net: 0.33) centred on a voxel
of a foreground class chosen uniformly among the classes present (at most 10,000 stored locations
per class, as nnU-Net), else uniformly placed (MONAI ``RandCropByLabelClassesd`` /
``RandSpatialCropSamplesd``). Cases smaller than the patch are zero-padded (a warning says which).
Augmentation (``augment=True``), a subset of nnU-Net's: rotation (p 0.2; +-180 degrees in 2-D,
+-30 in 3-D) and scaling (0.7-1.4), applied after cropping (nnU-Net crops after, so its borders
are not zero-filled — a deviation), flips along every axis (p 0.5 each), Gaussian noise (p 0.1),
brightness (x0.75-1.25, p 0.15) and gamma (0.7-1.5, p 0.3). The random draws of each sample come
from torch's generator, so a run with the same seed sees the same patches, and a resumed fit
continues the same stream.

Splits are by case: ``val_ids`` if given, else ``n_val`` cases (or ``val_fraction`` of them) drawn
with ``split_seed`` from the sorted case ids. The held-out cases serve both validation and test
(``mixerzoo fit`` tests the final or best checkpoint on them). A single case is used for both
training and validation, with a warning.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mixerzoo.core.plugins import require

require("monai", extra="medical")
require("nibabel", extra="medical")
require("PIL", extra="medical")

import monai.transforms as mt  # noqa: E402
import nibabel as nib  # noqa: E402
from monai.data import MetaTensor  # noqa: E402
from monai.transforms.utils import map_classes_to_indices  # noqa: E402
from PIL import Image  # noqa: E402

__all__ = [
    "DataError",
    "Case",
    "SegmentationDataModule",
    "ImageFolderSegmentation",
    "VolumeSegmentation",
    "read_image_2d",
    "read_mask_2d",
    "read_nifti",
    "map_labels",
    "split_cases",
]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: nnU-Net keeps at most this many locations per class for foreground oversampling.
MAX_LOCATIONS_PER_CLASS = 10_000
#: Axis labels of the orientation codes (NIfTI's RAS+ world).
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


class DataError(ValueError):
    """Input data that cannot be used as it is; the message says which file and what to do."""


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", *IMAGE_SUFFIXES, ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


# --- reading -------------------------------------------------------------------------------
def _open_image(path: Path) -> Image.Image:
    if _stem(path) != path.name and path.name.lower().endswith(NIFTI_SUFFIXES):
        raise DataError(
            f"{path} is a NIfTI volume, but this 2-D data module reads PNG/TIFF/JPEG images; "
            f"use VolumeSegmentation (spatial_dims 3) for volumes"
        )
    try:
        image = Image.open(path)
        image.load()
    except Exception as err:  # PIL raises many types for broken files
        raise DataError(f"cannot read image {path}: {err}") from err
    if getattr(image, "n_frames", 1) > 1:
        raise DataError(
            f"{path} holds {image.n_frames} frames (a 3-D stack); this 2-D data module takes one "
            f"slice per file — use VolumeSegmentation (spatial_dims 3) for volumes, or save the "
            f"slices as separate images"
        )
    return image


def read_image_2d(path: str | Path) -> np.ndarray:
    """A 2-D image as float32 ``[C, H, W]``: one channel for grey, three for RGB (alpha dropped)."""
    image = _open_image(Path(path))
    if image.mode in ("RGBA", "LA", "P", "CMYK", "YCbCr", "HSV"):
        image = image.convert("RGB" if image.mode != "LA" else "L")
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3:
        array = array.transpose(2, 0, 1)
    else:
        raise DataError(f"{path}: unsupported image of shape {array.shape}")
    return np.ascontiguousarray(array)


def read_mask_2d(path: str | Path) -> np.ndarray:
    """A 2-D mask as int64 ``[H, W]`` of stored values (palette images give their indices)."""
    image = _open_image(Path(path))
    array = np.asarray(image)
    if array.ndim != 2:
        raise DataError(
            f"mask {path} has shape {array.shape}: a mask must be a single-channel image of label "
            f"values (save it as 8- or 16-bit grey or palette PNG)"
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"mask {path} holds non-integer values; masks store class labels")
    return array.astype(np.int64)


def _raw_spacing(path: Path) -> tuple[np.ndarray, int]:
    """The stored ``pixdim[1:4]`` and ``sform_code`` (nibabel replaces zero spacings by 1 on load,
    so the header is read unchecked)."""
    with nib.openers.ImageOpener(str(path)) as fileobj:
        header = nib.Nifti1Header.from_fileobj(fileobj, check=False)
    return np.asarray(header["pixdim"][1:4], dtype=np.float64), int(header["sform_code"])


def read_nifti(
    path: str | Path | Sequence[str | Path], *, what: str = "image", require_spacing: bool = True
) -> MetaTensor:
    """A NIfTI file (or per-channel files) as a channel-first MONAI ``MetaTensor`` with affine.

    Args:
        path: the file, or one file per channel.
        what: ``"image"`` or ``"label"``, for messages.
        require_spacing: a header without voxel spacing (zero ``pixdim`` and no sform) is an
            error; otherwise a warning, and the voxels count as 1 mm (nibabel's fallback).

    Raises:
        DataError: the file is missing, unreadable or truncated, has no voxel spacing (when
            required), or is not a 3-D volume.
    """
    paths = [Path(p) for p in ([path] if isinstance(path, (str, Path)) else path)]
    loader = mt.LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)
    channels = []
    for p in paths:
        if not p.is_file():
            raise DataError(f"{what} file {p} does not exist")
        try:
            pixdim, sform_code = _raw_spacing(p)
            volume = loader(str(p))
        except Exception as err:  # nibabel/gzip/zlib raise many types for broken files
            raise DataError(
                f"cannot read NIfTI {what} {p}: {type(err).__name__}: {err} (truncated or not a "
                f"NIfTI file?)"
            ) from err
        if volume.dim() != 4:
            raise DataError(
                f"{what} {p} has spatial shape {tuple(volume.shape[1:])}: expected a 3-D volume; "
                f"a 2-D image belongs to ImageFolderSegmentation (spatial_dims 2)"
            )
        if sform_code == 0 and not all(np.isfinite(z) and z > 0 for z in pixdim):
            message = f"{what} {p} has no voxel spacing (pixdim {tuple(pixdim.tolist())}, no sform)"
            if require_spacing:
                raise DataError(
                    f"{message}; fix the header, or set spacing: null to skip resampling (the "
                    f"voxels then count as 1 mm)"
                )
            warnings.warn(f"{message}: the voxels count as 1 mm", stacklevel=2)
        channels.append(volume)
    if len(channels) > 1:
        first = channels[0]
        for p, other in zip(paths[1:], channels[1:]):
            if other.shape[1:] != first.shape[1:] or not np.allclose(
                np.asarray(other.affine), np.asarray(first.affine), atol=1e-3
            ):
                raise DataError(f"channel files {paths[0]} and {p} differ in shape or affine")
        return MetaTensor(torch.cat([c.as_tensor() for c in channels]), meta=first.meta)
    return channels[0]


def map_labels(
    stored: np.ndarray,
    num_classes: int,
    label_values: Sequence[int] | None = None,
    unlisted_labels: str = "error",
    *,
    where: str = "mask",
) -> np.ndarray:
    """Stored label values -> class indices ``0..num_classes-1`` (int64).

    Args:
        stored: integer array of stored values.
        num_classes: number of classes (background included).
        label_values: stored value of each class (``label_values[i]`` -> class ``i``); default:
            the stored values are the classes.
        unlisted_labels: ``"error"`` (values not declared raise) or ``"background"`` (class 0).
        where: file or case named in the error.
    """
    if unlisted_labels not in ("error", "background"):
        raise ValueError(
            f"unlisted_labels must be 'error' or 'background', got {unlisted_labels!r}"
        )
    values = list(range(num_classes)) if label_values is None else [int(v) for v in label_values]
    if len(values) != num_classes:
        raise ValueError(
            f"label_values {values} has {len(values)} entries but num_classes is {num_classes}"
        )
    if len(set(values)) != len(values):
        raise ValueError(f"label_values {values} repeats a value")
    present = np.unique(stored)
    unknown = sorted(set(present.tolist()) - set(values))
    if unknown and unlisted_labels == "error":
        raise DataError(
            f"{where} holds label values {unknown[:20]}{' ...' if len(unknown) > 20 else ''} that "
            f"are not among the declared classes (values {values}); declare them (num_classes, "
            f"label_values) or set unlisted_labels: background"
        )
    lookup = {v: i for i, v in enumerate(values)}
    out = np.zeros(stored.shape, dtype=np.int64)
    for value in present.tolist():
        if value in lookup and lookup[value]:
            out[stored == value] = lookup[value]
    return out


def split_cases(
    ids: Sequence[str],
    *,
    val_ids: Sequence[str] | None = None,
    n_val: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[str], list[str]]:
    """Case-level train/validation split: ``val_ids``, or ``n_val`` (else ``val_fraction``) cases
    drawn with ``seed`` from the sorted ids. One case: it is used for both (with a warning)."""
    ids = sorted(ids)
    if not ids:
        raise DataError("no cases found")
    if val_ids is not None:
        missing = sorted(set(val_ids) - set(ids))
        if missing:
            raise DataError(f"val_ids {missing} are not among the cases {ids[:10]}...")
        val = sorted(val_ids)
    else:
        if len(ids) == 1:
            warnings.warn(
                f"only one case ({ids[0]}): it is used for both training and validation",
                stacklevel=2,
            )
            return ids, ids
        count = n_val if n_val is not None else max(1, round(val_fraction * len(ids)))
        if not 1 <= count < len(ids):
            raise DataError(f"cannot hold out {count} of {len(ids)} cases")
        order = np.random.default_rng(seed).permutation(len(ids))
        val = sorted(ids[i] for i in order[:count])
    train = [i for i in ids if i not in set(val)]
    return train, val


# --- cases and datasets --------------------------------------------------------------------
class Case:
    """One preprocessed case: ``image [C, *S]`` float32, ``label [1, *S]`` int64 or ``None``, and
    what is needed to write predictions back in the input's space (``meta``)."""

    def __init__(self, case_id: str, image: torch.Tensor, label: torch.Tensor | None, meta: dict):
        self.id = case_id
        self.image = image
        self.label = label
        self.meta = meta
        self.class_locations: list[np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])


class _PatchDataset(Dataset):
    """``length`` random training patches, cycling over the cases (the loader shuffles)."""

    def __init__(
        self,
        cases: list[Case],
        length: int,
        fg_crop: mt.Randomizable,
        random_crop: mt.Randomizable,
        pad: mt.Transform,
        augment: mt.Compose | None,
        foreground_fraction: float,
    ):
        self.cases, self.length = cases, length
        self.fg_crop, self.random_crop, self.pad, self.augment = fg_crop, random_crop, pad, augment
        self.foreground_fraction = foreground_fraction

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        case = self.cases[index % len(self.cases)]
        # Every random draw of this sample comes from torch's generator (the worker's, seeded by
        # the loader), so runs with the same seed repeat and resumed runs continue the stream.
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        rng = np.random.RandomState(seed)
        data = {"image": case.image, "label": case.label.float()}
        data = self.pad(data)
        has_fg = bool(case.class_locations) and any(len(c) for c in case.class_locations[1:])
        if has_fg and rng.uniform() < self.foreground_fraction:
            crop = self.fg_crop
            data["label_cls_indices"] = case.class_locations
            # Foreground classes present in this case, chosen uniformly (nnU-Net's rule).
            crop.cropper.ratios = [0.0] + [float(len(c) > 0) for c in case.class_locations[1:]]
        else:
            crop = self.random_crop
        crop.set_random_state(seed=seed)
        sample = crop(data)[0]
        if self.augment is not None:
            self.augment.set_random_state(seed=(seed + 1) % (2**31 - 1))
            sample = self.augment(sample)
        return {
            "image": _plain(sample["image"]).float().contiguous(),
            "label": _plain(sample["label"]).round().long().contiguous(),
        }


def _plain(value: Any) -> torch.Tensor:
    """A plain tensor (MONAI's MetaTensor carries metadata the batches do not need)."""
    return value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)


class _CaseDataset(Dataset):
    def __init__(self, cases: list[Case]):
        self.cases = cases

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        item: dict[str, Any] = {"image": case.image, "id": case.id}
        if case.label is not None:
            item["label"] = case.label
        return item


# --- the data modules ----------------------------------------------------------------------
class SegmentationDataModule(pl.LightningDataModule):
    """Shared pipeline of the 2-D and 3-D segmentation data modules (see the module docstring).

    Args:
        root: data folder.
        num_classes: classes including background.
        patch_size: training patch (and sliding-window) size, one entry per spatial axis.
        batch_size: patches per training batch.
        samples_per_epoch: patches per training epoch (nnU-Net: 250 batches).
        label_values: stored value of each class; default the values are the classes.
        unlisted_labels: ``"error"`` or ``"background"`` for undeclared stored values.
        class_names: a name per class (metrics are logged under them).
        val_ids: cases to hold out; else ``n_val`` or ``val_fraction`` of the cases, drawn with
            ``split_seed``.
        n_val: number of held-out cases.
        val_fraction: fraction of held-out cases when ``n_val`` is not given.
        split_seed: seed of the case split.
        normalization: ``"zscore"``, ``"ct"``, ``"none"`` (``"auto"``: ``"ct"`` for CT modality
            in a dataset.json, else ``"zscore"``).
        ct_clip: ``(low, high)`` for ``"ct"``; default the training foreground's 0.5/99.5 %.
        ct_stats: ``(mean, std)`` for ``"ct"``; default the training foreground's.
        foreground_fraction: share of patches centred on a foreground voxel.
        augment: random spatial and intensity augmentation of training patches.
        num_workers: loader worker processes.
        predict_dir: folder of images/volumes (no labels) for ``predict``; default the held-out
            cases.
    """

    spatial_dims: int = 2

    def __init__(
        self,
        root: str,
        num_classes: int = 2,
        patch_size: Sequence[int] = (256, 256),
        batch_size: int = 2,
        samples_per_epoch: int = 250,
        label_values: Sequence[int] | None = None,
        unlisted_labels: str = "error",
        class_names: Sequence[str] | None = None,
        val_ids: Sequence[str] | None = None,
        n_val: int | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        normalization: str = "zscore",
        ct_clip: Sequence[float] | None = None,
        ct_stats: Sequence[float] | None = None,
        foreground_fraction: float = 0.33,
        augment: bool = True,
        num_workers: int = 0,
        predict_dir: str | None = None,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(
                f"num_classes must be >= 2 (background and one class), got {num_classes}"
            )
        patch_size = [int(p) for p in patch_size]
        if len(patch_size) != self.spatial_dims or min(patch_size) < 1:
            raise ValueError(
                f"{type(self).__name__}: patch_size must have {self.spatial_dims} positive "
                f"entries, got {patch_size}"
            )
        if normalization not in ("zscore", "ct", "none", "auto"):
            raise ValueError(
                f"normalization must be 'zscore', 'ct', 'none' or 'auto', got {normalization!r}"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        if not 0 <= foreground_fraction <= 1:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        self.root = Path(root)
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.label_values = None if label_values is None else [int(v) for v in label_values]
        self.unlisted_labels = unlisted_labels
        self.class_names = (
            list(class_names)
            if class_names is not None
            else [f"class{i}" for i in range(num_classes)]
        )
        self.val_ids = None if val_ids is None else [str(v) for v in val_ids]
        self.n_val = n_val
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.normalization = normalization
        self.ct_clip = None if ct_clip is None else tuple(float(v) for v in ct_clip)
        self.ct_stats = None if ct_stats is None else tuple(float(v) for v in ct_stats)
        self.foreground_fraction = foreground_fraction
        self.augment = augment
        self.num_workers = num_workers
        self.predict_dir = predict_dir
        self.in_channels: int | None = None
        self.train_cases: list[Case] = []
        self.val_cases: list[Case] = []
        self.predict_cases: list[Case] = []
        self._ready = False

    # subclasses ------------------------------------------------------------------------------
    def list_cases(self) -> dict[str, dict[str, Any]]:
        """case id -> ``{"image": path(s), "label": path or None}`` of the labelled cases."""
        raise NotImplementedError

    def list_predict_inputs(self, folder: Path) -> dict[str, dict[str, Any]]:
        """case id -> ``{"image": path(s), "label": None}`` for the unlabelled images in folder."""
        raise NotImplementedError

    def load_case(self, case_id: str, entry: dict[str, Any]) -> Case:
        """Read and spatially preprocess a case (no intensity normalisation yet)."""
        raise NotImplementedError

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """Voxel spacing of the preprocessed cases (for distances), ``None`` when unknown."""
        return None

    # setup -----------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        entries = self.list_cases()
        train_ids, val_ids = split_cases(
            list(entries),
            val_ids=self.val_ids,
            n_val=self.n_val,
            val_fraction=self.val_fraction,
            seed=self.split_seed,
        )
        loaded = {i: self.load_case(i, entries[i]) for i in sorted(set(train_ids) | set(val_ids))}
        channels = {c.image.shape[0] for c in loaded.values()}
        if len(channels) != 1:
            raise DataError(f"cases have different numbers of channels: {sorted(channels)}")
        self.in_channels = channels.pop()
        self.train_cases = [loaded[i] for i in train_ids]
        self.val_cases = [loaded[i] for i in val_ids]
        self._fit_normalization(self.train_cases)
        for case in loaded.values():
            case.image = self._normalize(case.image)
            self._warn_if_smaller(case)
        for case in self.train_cases:
            case.class_locations = self._class_locations(case)
        if self.predict_dir is not None:
            folder = Path(self.predict_dir)
            inputs = self.list_predict_inputs(folder)
            if not inputs:
                raise DataError(f"predict_dir {folder} holds no input images")
            self.predict_cases = []
            for case_id, entry in sorted(inputs.items()):
                case = self.load_case(case_id, entry)
                case.image = self._normalize(case.image)
                self._warn_if_smaller(case)
                self.predict_cases.append(case)
        else:
            self.predict_cases = self.val_cases
        self._ready = True

    def _warn_if_smaller(self, case: Case) -> None:
        if any(s < p for s, p in zip(case.shape, self.patch_size)):
            warnings.warn(
                f"case {case.id} of shape {case.shape} is smaller than the patch "
                f"{tuple(self.patch_size)}: it is zero-padded for training and sliding-window "
                f"inference, and predictions are cropped back to its shape",
                stacklevel=3,
            )

    def _class_locations(self, case: Case) -> list[np.ndarray]:
        # nnU-Net stores up to 10,000 random locations per class for foreground oversampling.
        label = case.label
        if any(s < p for s, p in zip(case.shape, self.patch_size)):
            label = mt.SpatialPad(self.patch_size)(label)
        rng = np.random.default_rng(abs(hash(case.id)) % (2**32))
        locations = []
        for indices in map_classes_to_indices(label, self.num_classes):
            indices = np.asarray(indices)
            if len(indices) > MAX_LOCATIONS_PER_CLASS:
                indices = np.sort(rng.choice(indices, MAX_LOCATIONS_PER_CLASS, replace=False))
            locations.append(indices)
        return locations

    def _fit_normalization(self, cases: list[Case]) -> None:
        if self._scheme() != "ct" or (self.ct_clip is not None and self.ct_stats is not None):
            return
        values = []
        for case in cases:
            fg = case.label[0] > 0
            if bool(fg.any()):
                values.append(case.image[:, fg].flatten().numpy())
        if not values:
            raise DataError(
                "CT normalisation needs foreground voxels in the training labels to compute its "
                "statistics; give ct_clip and ct_stats"
            )
        fg_values = np.concatenate(values).astype(np.float64)
        if self.ct_clip is None:
            self.ct_clip = tuple(float(v) for v in np.percentile(fg_values, [0.5, 99.5]))
        if self.ct_stats is None:
            self.ct_stats = (float(fg_values.mean()), float(fg_values.std()))

    def _scheme(self) -> str:
        return "zscore" if self.normalization == "auto" else self.normalization

    def _normalize(self, image: torch.Tensor) -> torch.Tensor:
        scheme = self._scheme()
        image = image.float()
        if scheme == "zscore":
            mean = image.flatten(1).mean(1).view(-1, *[1] * self.spatial_dims)
            std = image.flatten(1).std(1).view(-1, *[1] * self.spatial_dims)
            return (image - mean) / std.clamp_min(1e-8)
        if scheme == "ct":
            low, high = self.ct_clip
            mean, std = self.ct_stats
            return (image.clamp(low, high) - mean) / max(std, 1e-8)
        return image

    def _label(self, stored: np.ndarray, where: str) -> torch.Tensor:
        mapped = map_labels(
            stored, self.num_classes, self.label_values, self.unlisted_labels, where=where
        )
        return torch.from_numpy(mapped)[None]

    # loaders ---------------------------------------------------------------------------------
    def _train_transforms(self) -> tuple[Any, Any, Any, Any]:
        keys = ["image", "label"]
        pad = mt.SpatialPadd(keys, spatial_size=self.patch_size)
        fg_crop = mt.RandCropByLabelClassesd(
            keys,
            label_key="label",
            spatial_size=self.patch_size,
            num_classes=self.num_classes,
            num_samples=1,
            indices_key="label_cls_indices",
            warn=False,
        )
        random_crop = mt.RandSpatialCropSamplesd(
            keys, roi_size=self.patch_size, num_samples=1, random_size=False
        )
        if not self.augment:
            return fg_crop, random_crop, pad, None
        angle = math.pi if self.spatial_dims == 2 else math.radians(30)
        rotate = angle if self.spatial_dims == 2 else [angle] * 3
        augment = mt.Compose(
            [
                mt.RandAffined(
                    keys,
                    prob=0.2,
                    rotate_range=rotate,
                    scale_range=[(-0.3, 0.4)] * self.spatial_dims,
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                ),
                *[
                    mt.RandFlipd(keys, prob=0.5, spatial_axis=axis)
                    for axis in range(self.spatial_dims)
                ],
                mt.RandGaussianNoised("image", prob=0.1, std=0.1),
                mt.RandScaleIntensityd("image", factors=0.25, prob=0.15),
                mt.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
            ]
        )
        return fg_crop, random_crop, pad, augment

    def train_dataloader(self) -> DataLoader:
        fg_crop, random_crop, pad, augment = self._train_transforms()
        dataset = _PatchDataset(
            self.train_cases,
            self.samples_per_epoch,
            fg_crop,
            random_crop,
            pad,
            augment,
            self.foreground_fraction,
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _case_loader(self, cases: list[Case]) -> DataLoader:
        return DataLoader(_CaseDataset(cases), batch_size=1, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._case_loader(self.val_cases)

    def test_dataloader(self) -> DataLoader:
        return self._case_loader(self.val_cases)

    def predict_dataloader(self) -> DataLoader:
        return self._case_loader(self.predict_cases)

    # writing predictions ---------------------------------------------------------------------
    def case(self, case_id: str) -> Case:
        for case in (*self.predict_cases, *self.val_cases, *self.train_cases):
            if case.id == case_id:
                return case
        raise KeyError(f"unknown case {case_id!r}")

    def stored_values(self, classes: np.ndarray) -> np.ndarray:
        """Class indices -> the stored label values of the input masks."""
        if self.label_values is None:
            return classes
        return np.asarray(self.label_values)[classes]

    def write_prediction(
        self, case_id: str, probabilities: torch.Tensor, out_dir: Path
    ) -> dict[str, Any]:
        """Write a case's prediction in the input's space.

        Args:
            case_id: the case.
            probabilities: ``[num_classes, *S]`` class probabilities in the preprocessed space.
            out_dir: folder to write to.

        Returns:
            ``{"paths": [written files], "prediction": classes [*S0], "image": [C, *S0],
            "truth": classes [*S0] or None}``, all in the input's space ``S0`` (for overlays).
        """
        raise NotImplementedError


class ImageFolderSegmentation(SegmentationDataModule):
    """2-D images and masks in two folders (PNG, TIFF, JPEG, BMP), matched by file stem.

    Args:
        root: data folder.
        image_dir: images, relative to ``root``.
        label_dir: masks, relative to ``root``.
        **kwargs: see :class:`SegmentationDataModule`.

    No resampling: 2-D image files carry no trustworthy spacing, so pixels are the unit.
    Predictions are written as PNG masks of the stored label values, same size as the input.
    """

    spatial_dims = 2

    def __init__(self, root: str, image_dir: str = "image", label_dir: str = "label", **kwargs):
        super().__init__(root, **kwargs)
        self.image_dir = image_dir
        self.label_dir = label_dir

    @staticmethod
    def _files(folder: Path) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES + NIFTI_SUFFIXES):
                stem = _stem(path)
                if stem in files:
                    raise DataError(
                        f"two files for case {stem!r} in {folder}: {files[stem].name}, {path.name}"
                    )
                files[stem] = path
        return files

    def list_cases(self) -> dict[str, dict[str, Any]]:
        images_dir, labels_dir = self.root / self.image_dir, self.root / self.label_dir
        for folder in (images_dir, labels_dir):
            if not folder.is_dir():
                raise DataError(
                    f"folder {folder} not found: ImageFolderSegmentation expects "
                    f"{self.root}/{self.image_dir}/<case>.png and {self.root}/{self.label_dir}/<case>.png"
                )
        images, labels = self._files(images_dir), self._files(labels_dir)
        images = self._strip_channel_suffix(images, labels)
        if not images:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
        unmatched = sorted(set(images) ^ set(labels))
        if unmatched:
            raise DataError(
                f"images and masks do not pair up by file name; unmatched: {unmatched[:10]} "
                f"(images in {images_dir}, masks in {labels_dir})"
            )
        return {i: {"image": images[i], "label": labels[i]} for i in images}

    @staticmethod
    def _strip_channel_suffix(
        images: dict[str, Path], labels: dict[str, Path] | None
    ) -> dict[str, Path]:
        """nnU-Net names 2-D images ``<case>_0000.png`` (all channels in one file) and their
        labels ``<case>.png``: the case id drops the suffix."""
        out = {}
        for stem, path in images.items():
            match = re.fullmatch(r"(.+)_(\d{4})", stem)
            if match and (labels is None or (match.group(1) in labels and stem not in labels)):
                if int(match.group(2)) != 0:
                    raise DataError(
                        f"{path}: channels in separate files (_0001, ...) are not supported for "
                        f"2-D images; store the channels in one RGB image (<case>_0000.png)"
                    )
                stem = match.group(1)
            out[stem] = path
        return out

    def list_predict_inputs(self, folder: Path) -> dict[str, dict[str, Any]]:
        images = self._strip_channel_suffix(self._files(folder), None)
        return {i: {"image": p, "label": None} for i, p in images.items()}

    def load_case(self, case_id: str, entry: dict[str, Any]) -> Case:
        image = read_image_2d(entry["image"])
        label = None
        if entry["label"] is not None:
            stored = read_mask_2d(entry["label"])
            if stored.shape != image.shape[1:]:
                raise DataError(
                    f"case {case_id}: image {entry['image']} is {image.shape[1:]} (H, W) but mask "
                    f"{entry['label']} is {stored.shape}; they must have the same size"
                )
            label = self._label(stored, str(entry["label"]))
        meta = {"path": str(entry["image"]), "shape": image.shape[1:], "raw": image}
        return Case(case_id, torch.from_numpy(image), label, meta)

    def write_prediction(
        self, case_id: str, probabilities: torch.Tensor, out_dir: Path
    ) -> dict[str, Any]:
        case = self.case(case_id)
        classes = probabilities.argmax(0).cpu().numpy()
        stored = self.stored_values(classes)
        dtype = (
            np.uint8 if stored.max(initial=0) < 256 and stored.min(initial=0) >= 0 else np.uint16
        )
        path = out_dir / f"{case_id}.png"
        Image.fromarray(stored.astype(dtype)).save(path)
        truth = None if case.label is None else case.label[0].numpy()
        return {"paths": [path], "prediction": classes, "image": case.meta["raw"], "truth": truth}


class VolumeSegmentation(SegmentationDataModule):
    """3-D NIfTI volumes with label maps (MSD dataset.json, an explicit list, or two folders).

    Args:
        root: data folder (paths in the list or json are relative to it).
        dataset_json: MSD-layout json relative to ``root`` (its ``"training"`` cases, ``"labels"``
            for ``num_classes``/``class_names`` when not given, ``"modality"`` for
            ``normalization="auto"``).
        cases: explicit ``[{"image": ..., "label": ..., "id": ...}]`` (``id`` optional).
        image_dir: image folder for folder pairing (default ``imagesTr``).
        label_dir: label folder for folder pairing (default ``labelsTr``).
        spacing: target voxel spacing in mm (RAS axis order); ``None`` keeps each case's.
        orientation: axis codes to reorient to (``None`` keeps the stored orientation).
        **kwargs: see :class:`SegmentationDataModule`.

    Predictions are resampled back to each input's grid (MONAI ``SpatialResample`` of the class
    probabilities from the preprocessed affine to the input's, then argmax) and written as NIfTI
    with the input's affine, shape and header, label values as stored in the input's labels.
    """

    spatial_dims = 3

    def __init__(
        self,
        root: str,
        dataset_json: str | None = None,
        cases: list[dict[str, Any]] | None = None,
        image_dir: str = "imagesTr",
        label_dir: str = "labelsTr",
        spacing: Sequence[float] | None = None,
        orientation: str | None = "RAS",
        patch_size: Sequence[int] = (64, 64, 64),
        **kwargs,
    ):
        self._json = None
        # Read now when present (its labels can give num_classes and class_names); a missing
        # file is reported when the data is set up, so a config can be built without the data.
        if dataset_json is not None and (Path(root) / dataset_json).is_file():
            self._json = self._read_json(Path(root) / dataset_json)
            labels = self._json.get("labels", {})
            if labels and "num_classes" not in kwargs:
                kwargs["num_classes"] = len(labels)
            if labels and "class_names" not in kwargs:
                kwargs["class_names"] = [labels[k] for k in sorted(labels, key=int)]
        super().__init__(root, patch_size=patch_size, **kwargs)
        if spacing is not None and (len(spacing) != 3 or min(spacing) <= 0):
            raise ValueError(f"spacing must be three positive numbers (mm), got {spacing}")
        self.dataset_json = dataset_json
        self.cases_list = cases
        self.image_dir = image_dir
        self.label_dir = label_dir
        self.target_spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.orientation = orientation

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"cannot read dataset json {path}: {err}") from err

    @property
    def spacing(self) -> tuple[float, ...] | None:
        return self.target_spacing

    def _scheme(self) -> str:
        if self.normalization != "auto":
            return self.normalization
        modality = (self._json or {}).get("modality", {}).get("0", "")
        return "ct" if str(modality).upper() == "CT" else "zscore"

    def _resolve(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return [self._resolve(v) for v in value]
        return (self.root / str(value)).resolve()

    def list_cases(self) -> dict[str, dict[str, Any]]:
        if self.dataset_json is not None and self._json is None:
            self._json = self._read_json(self.root / self.dataset_json)
        if self._json is not None:
            entries = self._json.get("training")
            if not entries:
                raise DataError(
                    f"{self.root / self.dataset_json} has no 'training' list of "
                    f"{{'image', 'label'}} entries (Medical Segmentation Decathlon layout)"
                )
            return {
                _stem(Path(str(e["image"]))): {
                    "image": self._resolve(e["image"]),
                    "label": self._resolve(e["label"]),
                }
                for e in entries
            }
        if self.cases_list is not None:
            out = {}
            for e in self.cases_list:
                image = e["image"]
                case_id = str(
                    e.get("id") or _stem(Path(str(image if isinstance(image, str) else image[0])))
                )
                out[case_id] = {
                    "image": self._resolve(image),
                    "label": self._resolve(e.get("label")),
                }
            return out
        images = self._pair_channels(self.root / self.image_dir)
        labels_dir = self.root / self.label_dir
        out = {}
        for case_id, files in images.items():
            label = next(
                (
                    labels_dir / f"{case_id}{s}"
                    for s in NIFTI_SUFFIXES
                    if (labels_dir / f"{case_id}{s}").is_file()
                ),
                None,
            )
            if label is None:
                raise DataError(f"no label {labels_dir}/{case_id}.nii.gz for image {files[0]}")
            out[case_id] = {"image": files, "label": label}
        return out

    def _pair_channels(self, folder: Path) -> dict[str, list[Path]]:
        if not folder.is_dir():
            raise DataError(
                f"folder {folder} not found: give dataset_json (MSD layout), cases, or "
                f"image_dir/label_dir folders of NIfTI files"
            )
        cases: dict[str, dict[int, Path]] = {}
        for path in sorted(folder.iterdir()):
            if not path.name.lower().endswith(NIFTI_SUFFIXES):
                continue
            stem = _stem(path)
            match = re.fullmatch(r"(.+)_(\d{4})", stem)
            case_id, channel = (match.group(1), int(match.group(2))) if match else (stem, 0)
            cases.setdefault(case_id, {})[channel] = path
        if not cases:
            raise DataError(f"no NIfTI files (.nii, .nii.gz) in {folder}")
        return {c: [ch[k] for k in sorted(ch)] for c, ch in cases.items()}

    def list_predict_inputs(self, folder: Path) -> dict[str, dict[str, Any]]:
        return {c: {"image": f, "label": None} for c, f in self._pair_channels(folder).items()}

    def load_case(self, case_id: str, entry: dict[str, Any]) -> Case:
        needs_spacing = self.target_spacing is not None
        image = read_nifti(entry["image"], what="image", require_spacing=needs_spacing)
        original_affine = np.asarray(image.affine, dtype=np.float64)
        original_shape = tuple(image.shape[1:])
        paths = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        data: dict[str, Any] = {"image": image}
        if entry["label"] is not None:
            label = read_nifti(entry["label"], what="label", require_spacing=needs_spacing)
            if label.shape[0] != 1:
                raise DataError(
                    f"label {entry['label']} has {label.shape[0]} channels; expected one"
                )
            if label.shape[1:] != image.shape[1:]:
                raise DataError(
                    f"case {case_id}: image is {tuple(image.shape[1:])} but label "
                    f"{entry['label']} is {tuple(label.shape[1:])}; they must have the same grid"
                )
            if not np.allclose(np.asarray(label.affine), original_affine, atol=1e-3):
                raise DataError(
                    f"case {case_id}: the affines of the image and of label {entry['label']} "
                    f"differ, so they are not aligned voxel for voxel; resample the label onto "
                    f"the image grid first"
                )
            stored = np.rint(label.as_tensor().numpy()[0]).astype(np.int64)
            data["label"] = MetaTensor(
                self._label(stored, str(entry["label"])).float(), meta=label.meta
            )
        keys = list(data)
        modes = ["bilinear", "nearest"][: len(keys)]
        steps = []
        if self.orientation is not None:
            steps.append(mt.Orientationd(keys, axcodes=self.orientation, labels=_RAS_LABELS))
        if self.target_spacing is not None:
            # scale_extent: the new shape is round(shape * old / new spacing), as nnU-Net's.
            steps.append(
                mt.Spacingd(keys, pixdim=self.target_spacing, mode=modes, scale_extent=True)
            )
        data = mt.Compose(steps)(data) if steps else data
        image_t = data["image"]
        label_t = data.get("label")
        meta = {
            "path": str(paths[0]),
            "affine": original_affine,
            "shape": original_shape,
            "preprocessed_affine": np.asarray(image_t.affine, dtype=np.float64),
            "label_path": None if entry["label"] is None else str(entry["label"]),
        }
        label_out = None if label_t is None else torch.as_tensor(label_t).round().long()
        return Case(case_id, torch.as_tensor(image_t).float(), label_out, meta)

    def write_prediction(
        self, case_id: str, probabilities: torch.Tensor, out_dir: Path
    ) -> dict[str, Any]:
        case = self.case(case_id)
        meta = case.meta
        probs = MetaTensor(
            probabilities.float().cpu(),
            meta={"affine": torch.as_tensor(meta["preprocessed_affine"])},
        )
        # Back to the input's grid: orientation and spacing undone in one resampling.
        back = mt.SpatialResample(mode="bilinear", padding_mode="border")(
            probs, dst_affine=torch.as_tensor(meta["affine"]), spatial_size=meta["shape"]
        )
        classes = torch.as_tensor(back).argmax(0).numpy()
        stored = self.stored_values(classes)
        source = nib.load(meta["path"])
        dtype = np.uint8 if stored.max(initial=0) < 256 and stored.min(initial=0) >= 0 else np.int16
        header = source.header.copy()
        header.set_data_dtype(dtype)
        header.set_slope_inter(1, 0)
        out = nib.Nifti1Image(stored.astype(dtype), meta["affine"], header)
        path = out_dir / f"{case_id}.nii.gz"
        nib.save(out, str(path))
        raw = np.asarray(source.dataobj, dtype=np.float32)
        raw = raw[None] if raw.ndim == 3 else np.moveaxis(raw, -1, 0)
        truth = None
        if meta["label_path"] is not None:
            stored_truth = np.rint(np.asarray(nib.load(meta["label_path"]).dataobj)).astype(
                np.int64
            )
            truth = map_labels(
                stored_truth, self.num_classes, self.label_values, self.unlisted_labels
            )
        return {"paths": [path], "prediction": classes, "image": raw, "truth": truth}
