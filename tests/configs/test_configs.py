"""Every YAML under configs/ trains for one batch (fast_dev_run) through the CLI, on tiny data
the test makes. For ``configs/<domain>/...``, ``tests/<domain>/tiny_configs.py`` (or
``tests/configs/tiny_<domain>.py``) defines ``overrides(config, tmp_path) -> list[str]``: it
writes the tiny data under ``tmp_path`` and returns the CLI arguments that point the config at it
(and may shrink sizes that do not change what the config exercises)."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from mixerzoo.core.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def _tiny_data(domain: str):
    places = [
        REPO / "tests" / domain / "tiny_configs.py",
        Path(__file__).with_name(f"tiny_{domain}.py"),
    ]
    path = next((p for p in places if p.is_file()), None)
    if path is None:
        pytest.fail(
            f"configs/{domain}/ has configs but tests/{domain}/tiny_configs.py does not exist: add "
            f"it with overrides(config, tmp_path) -> CLI arguments that point a config at tiny data"
        )
    spec = importlib.util.spec_from_file_location(f"tiny_{domain}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.overrides


def test_there_are_configs():
    assert CONFIGS, "configs/ holds the ready-to-run configs"


@pytest.mark.parametrize(
    "config", CONFIGS, ids=[str(c.relative_to(REPO / "configs")) for c in CONFIGS]
)
def test_config_fast_dev_run(config, tmp_path, monkeypatch, capsys):
    domain = config.relative_to(REPO / "configs").parts[0]
    extra = _tiny_data(domain)(yaml.safe_load(config.read_text()), tmp_path)
    monkeypatch.chdir(tmp_path)
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
    assert "Test results" in capsys.readouterr().out
