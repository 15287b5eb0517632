"""Shared test setup: small, deterministic, and light on the two CI cores."""

import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter (DESIGN.md, Kernels). It must be
# switched on before a kernel module is imported: this file is loaded before any test module, and
# the library imports its kernel modules only on the first call with backend "triton".
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The real data bundle lives beside the repository (see ../shared/data/README.md).
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MIXERZOO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared_data() -> Path:
    """Path of the shared real-data folder; skips (with the reason) when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not found (set MIXERZOO_SHARED_DATA)")
    return SHARED_DATA
