"""The ``mixerzoo`` command on a vision config: fit, test after fit, then predict with the best
checkpoint (predictions.csv and confusion_matrix.png in the run folder)."""

from __future__ import annotations

import csv
from pathlib import Path

from mixerzoo.core.cli import main

from .tiny_configs import overrides

REPO = Path(__file__).resolve().parents[2]


def test_fit_then_predict_from_the_best_checkpoint(tmp_path, monkeypatch, capsys):
    config = REPO / "configs" / "vision" / "mambaout_cifar10.yaml"
    import yaml

    extra = overrides(yaml.safe_load(config.read_text()), tmp_path)
    monkeypatch.chdir(tmp_path)
    common = ["--config", str(config), *extra, "--trainer.enable_progress_bar", "false"]
    main(["fit", *common, "--trainer.max_epochs", "1", "--data.init_args.num_workers", "0"])
    assert "Test results" in capsys.readouterr().out
    run = tmp_path / "runs" / "mambaout_cifar10" / "version_0"
    best = run / "checkpoints" / "best.ckpt"
    assert best.is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    main(["predict", *common, "--ckpt_path", str(best)])
    out = next(tmp_path.rglob("predictions.csv"))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 and {r["label"] for r in rows} == {"c0", "c1", "c2"}
    assert (out.parent / "confusion_matrix.png").is_file()


def test_one_config_line_swaps_the_token_mixer(tmp_path, monkeypatch):
    """``--model.init_args.model.init_args.mixer attention`` on the CPU config: the saved run
    config and the checkpoint's blocks hold attention mixers instead of the gated CNN."""
    import torch
    import yaml

    config = REPO / "configs" / "vision" / "mambaout_cifar10.yaml"
    extra = overrides(yaml.safe_load(config.read_text()), tmp_path)
    monkeypatch.chdir(tmp_path)
    line = ["--model.init_args.model.init_args.mixer", "attention"]
    args = ["--config", str(config), *extra, *line, "--trainer.enable_progress_bar", "false"]
    main(["fit", *args, "--trainer.max_epochs", "1"])
    run = tmp_path / "runs" / "mambaout_cifar10" / "version_0"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["init_args"]["model"]["init_args"]["mixer"] == "attention"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    block = "model.stages.0.blocks.0.mixer."
    assert not any(k.startswith(block + "fc1") for k in state)  # no gated CNN left
    mixers = {k[len(block) :].split(".")[0] for k in state if k.startswith(block)}
    assert mixers and mixers.isdisjoint({"fc1", "conv", "fc2"})
