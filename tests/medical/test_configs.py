"""Every config under configs/medical/ trains for one batch and tests through ``mixerzoo fit``
(fast_dev_run) on tiny data the test makes (tests/medical/tiny_data.py), and the paper configs
build, as written, the networks whose parameter counts were checked against the official code
(benchmarks/RESULTS.md)."""

from pathlib import Path

import pytest
import yaml

from mixerzoo.core.cli import MixerzooCLI, main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "medical").glob("*.yaml"))

# Official xLSTM-UNet code on the same plans, minus the LayerNorm its ViL wrapper creates and
# never applies (benchmarks/medical.py params --official): equal to ours, parameter for parameter.
PAPER_PARAMS = {
    "xlstm_unet_bot_2d.yaml": 64_719_997 - 1_024,
    "xlstm_unet_enc_2d.yaml": 64_020_768 - 1_056,
    "xlstm_unet_bot_3d.yaml": 42_097_102 - 640,
    "xlstm_unet_enc_3d.yaml": 43_772_758 - 1_392,
}


def test_there_are_medical_configs():
    names = {c.name for c in CONFIGS}
    assert set(PAPER_PARAMS) <= names and "xlstm_unet_bot_isbi_small.yaml" in names


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_config_fast_dev_run(config, tmp_path, monkeypatch, capsys, tiny):
    extra = tiny.overrides(yaml.safe_load(config.read_text()), tmp_path)
    monkeypatch.chdir(tmp_path)
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
            *extra,
        ]
    )
    assert "Test results" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_paper_configs_build_the_checked_networks(name):
    cli = MixerzooCLI(args=["--config", str(REPO / "configs" / "medical" / name)], run=False)
    model = cli.model.model
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS[name]
