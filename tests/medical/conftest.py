"""Fixtures of the medical tests: tiny data made by tests/medical/tiny_data.py."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "medical_tiny_data", Path(__file__).with_name("tiny_data.py")
)
tiny_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_data)


@pytest.fixture
def tiny():
    """The tiny-data helpers (make_image_folder, make_volume, make_ct_example, make_msd, overrides)."""
    return tiny_data


@pytest.fixture
def isbi_like(tmp_path):
    """Eight 64 x 64 grey images with 255 (outside) / 0 (inside disks) masks."""
    return tiny_data.make_image_folder(tmp_path / "isbi", n=8)


@pytest.fixture(autouse=True)
def _one_thread():
    """The medical tests use small tensors: one intra-op thread avoids spinning threads on the
    shared cores (which made them several times slower); restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
