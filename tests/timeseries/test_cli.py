"""The `mixerzoo` command end to end on a small CSV: fit -> test, predict, errors, DDP."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl

from mixerzoo.core.cli import MixerzooCLI, main

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "timeseries" / "itransformer_etth1.yaml"


def _small_args(csv: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        "--data.init_args.data_path",
        str(csv),
        "--data.init_args.root",
        "null",
        "--data.init_args.seq_len",
        "48",
        "--data.init_args.pred_len",
        "12",
        "--model.init_args.model.init_args.d_model",
        "32",
        "--model.init_args.model.init_args.d_ff",
        "32",
        "--trainer.logger.init_args.save_dir",
        str(run_dir),
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def test_fit_trains_then_tests_and_predict_writes_files(small_csv, tmp_path, capsys):
    main(["fit", *_small_args(small_csv, tmp_path, "--trainer.max_epochs", "2")])
    out = capsys.readouterr().out
    assert "Test results (checkpoint" in out and "test_mse" in out and "test_mae_orig" in out
    version = tmp_path / "itransformer_etth1" / "version_0"
    best = version / "checkpoints" / "best.ckpt"
    assert (
        best.is_file()
        and (version / "metrics.csv").is_file()
        and (version / "config.yaml").is_file()
    )

    main(["predict", *_small_args(small_csv, tmp_path), "--ckpt_path", str(best)])
    files = list(tmp_path.rglob("predictions.npz"))
    assert files and list(tmp_path.rglob("forecast.png"))
    arrays = np.load(files[0])
    n_test = 600 - int(600 * 0.7) - (600 - int(600 * 0.7) - int(600 * 0.2))  # int(0.2 n) test rows
    assert arrays["pred"].shape == (n_test - 12 + 1, 12, 4)
    # Original units undo the training-split standardisation.
    assert (
        abs(arrays["true_orig"][..., -1].mean() - 20) < 2
        and abs(arrays["true"][..., -1].mean()) < 2
    )


def test_the_models_windows_follow_the_data(small_csv, tmp_path, capsys):
    """The data's seq_len/pred_len are linked to the model's: one flag changes both."""
    args = _small_args(small_csv, tmp_path, "--data.init_args.pred_len", "6")
    cli = MixerzooCLI(args=args, run=False)
    assert (cli.model.model.seq_len, cli.model.model.pred_len) == (48, 6)
    assert cli.model.model.projector.out_features == 6


def test_setting_a_linked_model_window_is_a_clear_error(small_csv, tmp_path):
    args = _small_args(small_csv, tmp_path, "--model.init_args.model.init_args.pred_len", "24")
    with pytest.raises(ValueError, match=r"linked to data\.init_args\.pred_len"):
        MixerzooCLI(args=args, run=False)


def test_a_model_and_data_with_other_windows_are_a_clear_error_in_python(small_csv):
    from mixerzoo.timeseries import ForecastDataModule, ForecastTask, ITransformer

    dm = ForecastDataModule(str(small_csv), seq_len=48, label_len=24, pred_len=24)
    task = ForecastTask(ITransformer(seq_len=48, pred_len=12, d_model=8, d_ff=8, n_heads=2))
    trainer = pl.Trainer(fast_dev_run=1, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="model pred_len=12 but data pred_len=24"):
        trainer.fit(task, datamodule=dm)


def test_unknown_model_class_lists_registered_models(small_csv, tmp_path):
    cmd = [str(Path(sys.executable).parent / "mixerzoo"), "fit"]
    cmd += _small_args(small_csv, tmp_path, "--model.init_args.model.class_path", "ITransformr")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "ITransformr" in result.stderr and "itransformer (mixerzoo.timeseries" in result.stderr


def test_unknown_mixer_name_is_a_clear_error(small_csv, tmp_path):
    cmd = [str(Path(sys.executable).parent / "mixerzoo"), "fit"]
    cmd += _small_args(small_csv, tmp_path, "--model.init_args.model.init_args.mixer", "atention")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "unknown mixer 'atention'" in result.stderr


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(small_csv, tmp_path):
    """Lightning's own DDP strategy (gloo on CPU) through the CLI, trained then tested."""
    cmd = [str(Path(sys.executable).parent / "mixerzoo"), "fit"]
    cmd += _small_args(
        small_csv,
        tmp_path,
        "--trainer.accelerator",
        "cpu",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.max_epochs",
        "1",
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test results (checkpoint" in result.stdout
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    assert "All distributed processes registered" in result.stderr + result.stdout
