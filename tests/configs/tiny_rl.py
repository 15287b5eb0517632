"""Tiny sizes for the configs under configs/rl/ (tests/configs/test_configs.py); the overrides
live with the RL tests, in tests/rl/tiny_configs.py (PPO: a few short rollouts; S4WM: a handful
of short episodes collected into tmp_path)."""

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[1] / "rl" / "tiny_configs.py"
_spec = importlib.util.spec_from_file_location("rl_tiny_configs", _path)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

overrides = _module.overrides
