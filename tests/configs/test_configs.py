"""Every YAML under configs/ trains for one batch (fast_dev_run) through the CLI."""

from pathlib import Path

import pytest

from mixerzoo.core.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert CONFIGS, "configs/ holds the ready-to-run configs"


@pytest.mark.parametrize(
    "config", CONFIGS, ids=[str(c.relative_to(REPO / "configs")) for c in CONFIGS]
)
def test_config_fast_dev_run(config, tmp_path, monkeypatch, shared_data, capsys):
    # Configs name data relative to the repository root (../shared/data/...), as the README runs them.
    monkeypatch.chdir(REPO)
    main(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.fast_dev_run",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    assert "Test results" in capsys.readouterr().out
