"""Tiny image folders for the config tests (tests/configs/test_configs.py runs every YAML under
configs/vision/ for one batch through the ``mixerzoo`` command)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "vision_conftest", Path(__file__).with_name("conftest.py")
)
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)


def overrides(config: dict, tmp_path: Path) -> list[str]:
    """Write train/val/test folders of three classes and point the config's data at them.

    The model, optimiser, schedule and augmentations stay the config's; only the batch size
    (2, so that one step is cheap at 224 px) and the loader workers change.
    """
    classes = config["model"]["init_args"]["model"]["init_args"].get("num_classes", 3)
    names = tuple(f"c{i}" for i in range(min(classes, 3)))
    root = _conftest.make_image_folder(
        tmp_path / "images", {"train": 4, "val": 1, "test": 1}, classes=names
    )
    return [
        "--data.init_args.root", str(root),
        "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0",
        "--model.init_args.model.init_args.num_classes", str(len(names)),
    ]  # fmt: skip
