"""Tiny data for the configs under configs/medical/ (tests/configs/test_configs.py); the data and
the overrides live with the medical tests, in tests/medical/tiny_data.py."""

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[1] / "medical" / "tiny_data.py"
_spec = importlib.util.spec_from_file_location("medical_tiny_data", _path)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

overrides = _module.overrides
