"""Small image folders made by the tests (nothing downloads), and helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("cat", "dog", "ship")


def make_image_folder(
    root: Path,
    splits: dict[str, int] | None = None,
    size: int = 32,
    classes: tuple[str, ...] = CLASSES,
    seed: int = 0,
) -> Path:
    """``root/<split>/<class>/<i>.png``: ``splits[split]`` images per class, each class a distinct
    mean colour plus noise (so a model can learn them), ``size x size`` RGB."""
    rng = np.random.default_rng(seed)
    splits = splits or {"train": 8, "test": 4}
    for split, per_class in splits.items():
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            base = np.zeros(3)
            base[c % 3] = 200
            for i in range(per_class):
                pixels = base + rng.normal(0, 30, size=(size, size, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Three classes, 8 training and 4 test images per class, 32 x 32."""
    return make_image_folder(tmp_path / "images")
