"""Tiny synthetic segmentation data the medical tests make themselves, and the overrides that point
every config under configs/medical/ at it (loaded by path from tests/medical/conftest.py and from
tests/configs/tiny_medical.py)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image


def make_image_folder(
    root: Path,
    n: int = 8,
    size: tuple[int, int] = (64, 64),
    values: tuple[int, int] = (255, 0),
    seed: int = 0,
    channels: int = 1,
    classes: int = 2,
) -> Path:
    """``root/image/<i>.png`` (grey or RGB) and ``root/label/<i>.png``: bright disks on a dark,
    noisy background; the mask stores ``values[0]`` outside the disks and ``values[1]`` inside
    (with ``classes=3``, values 0/1/2 with a ring class around each disk)."""
    rng = np.random.default_rng(seed)
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "label").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[: size[0], : size[1]]
    for i in range(n):
        mask = np.zeros(size, dtype=np.int64)
        for _ in range(3):
            cy, cx = rng.integers(8, size[0] - 8), rng.integers(8, size[1] - 8)
            r = rng.integers(4, 9)
            dist = np.hypot(yy - cy, xx - cx)
            mask[dist <= r] = 1
            if classes == 3:
                mask[(dist > r) & (dist <= r + 2) & (mask == 0)] = 2
        image = 40 + 150 * (mask == 1) + rng.normal(0, 10, size)
        image = np.clip(image, 0, 255).astype(np.uint8)
        if channels == 3:
            image = np.stack([image, image // 2, 255 - image], axis=-1)
        stored = np.asarray(values)[mask] if classes == 2 else mask
        Image.fromarray(image).save(root / "image" / f"{i}.png")
        Image.fromarray(stored.astype(np.uint8)).save(root / "label" / f"{i}.png")
    return root


def ct_affine(spacing=(3.0, 3.0, 3.0), origin=(-100.0, 10.0, 90.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def make_volume(
    shape=(40, 36, 20), labels=(5, 1), seed: int = 0, affine: np.ndarray | None = None
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """A CT-like int16 volume with one box per label value (HU ~ 60 + 40 * k) and its label map."""
    rng = np.random.default_rng(seed)
    affine = ct_affine() if affine is None else affine
    seg = np.zeros(shape, dtype=np.uint8)
    image = rng.normal(-800, 30, shape)
    for k, value in enumerate(labels):
        lo = [int(s * (0.15 + 0.35 * k)) for s in shape]
        hi = [min(s, a + max(3, s // 3)) for a, s in zip(lo, shape)]
        region = tuple(slice(a, b) for a, b in zip(lo, hi))
        seg[region] = value
        image[region] = rng.normal(60 + 40 * k, 10, [b - a for a, b in zip(lo, hi)])
    return (
        nib.Nifti1Image(image.astype(np.int16), affine),
        nib.Nifti1Image(seg, affine),
    )


def make_ct_example(root: Path, shape=(40, 36, 20)) -> Path:
    """``root/ct.nii.gz`` + ``root/seg.nii.gz`` as in ../shared/data/medical/ct_example."""
    root.mkdir(parents=True, exist_ok=True)
    image, seg = make_volume(shape, labels=(5, 1, 2))
    nib.save(image, str(root / "ct.nii.gz"))
    nib.save(seg, str(root / "seg.nii.gz"))
    return root


def make_msd(
    root: Path, n: int = 3, shape=(32, 32, 24), num_classes: int = 14, modality="MR"
) -> Path:
    """A Medical Segmentation Decathlon layout: imagesTr/, labelsTr/, dataset.json."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n):
        image, seg = make_volume(shape, labels=(1, 3), seed=i)
        nib.save(image, str(root / "imagesTr" / f"case_{i:03d}.nii.gz"))
        nib.save(seg, str(root / "labelsTr" / f"case_{i:03d}.nii.gz"))
        training.append(
            {"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"}
        )
    labels = {str(k): ("background" if k == 0 else f"organ{k}") for k in range(num_classes)}
    dataset = {"name": "tiny", "modality": {"0": modality}, "labels": labels, "training": training}
    (root / "dataset.json").write_text(json.dumps(dataset))
    return root


def overrides(config: dict, tmp_path: Path) -> list[str]:
    """CLI arguments that point a configs/medical/ YAML at tiny data made in ``tmp_path``.

    The patch becomes twice the network's total stride (at least 32 px in 2-D, 16 voxels in 3-D),
    the loaders run in the main process, and a
    paper-size network (over 256 channels) gets narrow stages, so that one step runs in seconds
    on a CPU; everything else of the config (variant, stages, strides, depth rule, mixer, loss,
    optimiser, schedule, callbacks) is kept.
    """
    init = config["data"]["init_args"]
    model = config["model"]["init_args"]["model"]["init_args"]
    dims = model.get("spatial_dims", 2)
    total = [1] * dims
    for stride in model["strides"]:
        stride = [stride] * dims if isinstance(stride, int) else stride
        total = [t * s for t, s in zip(total, stride)]
    # Twice the total stride: the deepest stage keeps 2 positions per axis (InstanceNorm needs >1).
    patch = [max(2 * t, 32 if dims == 2 else 16) for t in total]
    if dims == 2:
        values = tuple(init.get("label_values") or (0, 1))
        root = make_image_folder(
            tmp_path / "data2d",
            n=4,
            channels=model.get("in_channels", 1),
            classes=model.get("num_classes", 2),
            values=values[:2],
        )
    elif init.get("dataset_json"):
        root = make_msd(tmp_path / "msd", n=3, num_classes=model["num_classes"])
    else:
        root = make_ct_example(tmp_path / "ct")
    args = [
        "--data.init_args.root",
        str(root),
        "--data.init_args.patch_size",
        json.dumps(patch),
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.num_workers",
        "0",
    ]
    if dims == 2:
        args += ["--data.init_args.n_val", "1", "--data.init_args.image_dir", "image"]
        args += ["--data.init_args.label_dir", "label"]
    if model.get("patch_size") is not None:
        args += ["--model.init_args.model.init_args.patch_size", json.dumps(patch)]
    if max(model["features"]) > 256:
        widths = [4 * 2 ** min(s, 2) for s in range(len(model["features"]))]
        args += ["--model.init_args.model.init_args.features", json.dumps(widths)]
    return args
