"""Every ``configs/rl`` YAML trains for one batch (fast_dev_run) through the ``mixerzoo`` CLI and
is tested after the fit, at the tiny sizes of ``tiny_configs.overrides`` (its task, environment
and backbone unchanged)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from mixerzoo.core.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "rl").glob("*.yaml"))


def _overrides():
    spec = importlib.util.spec_from_file_location(
        "tiny_configs", Path(__file__).with_name("tiny_configs.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.overrides


def test_there_are_rl_configs():
    names = {c.stem for c in CONFIGS}
    assert {"ppo_s5_repeat_previous", "ppo_gru_repeat_previous", "s4wm_four_rooms"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_fast_dev_run(config, tmp_path, monkeypatch, capsys):
    loaded = yaml.safe_load(config.read_text())
    extra = _overrides()(loaded, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["mixerzoo"])
    main(
        [
            "fit",
            "--config", str(config),
            *extra,
            "--trainer.fast_dev_run", "1",
            "--trainer.default_root_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "Test results" in out
    key = "test/episode_return" if "PPOTask" in loaded["model"]["class_path"] else "test/mse_h10"
    assert key in out
