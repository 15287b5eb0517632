"""The `mixerzoo` command end to end on a small CSV: fit -> test, predict, errors, DDP."""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
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


@pytest.fixture(scope="module")
def trained(module_csv, tmp_path_factory):
    """One `mixerzoo fit` (2 epochs) on the small CSV: (csv, run folder, best checkpoint, stdout)."""
    run_dir = tmp_path_factory.mktemp("run")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["fit", *_small_args(module_csv, run_dir, "--trainer.max_epochs", "2")])
    version = run_dir / "itransformer_etth1" / "version_0"
    return module_csv, run_dir, version / "checkpoints" / "best.ckpt", out.getvalue()


def test_fit_trains_then_tests_the_best_checkpoint(trained):
    _, run_dir, best, out = trained
    assert "Test results (checkpoint" in out and "test_mse" in out and "test_mae_orig" in out
    version = best.parent.parent
    assert best.is_file() and (version / "metrics.csv").is_file()
    assert (version / "config.yaml").is_file()


def test_predict_on_the_test_split_writes_arrays_a_dated_csv_and_a_plot(trained, tmp_path):
    csv, _, best, _ = trained
    main(["predict", *_small_args(csv, tmp_path), "--ckpt_path", str(best)])
    (version,) = (tmp_path / "itransformer_etth1").iterdir()
    arrays = np.load(version / "predictions.npz")
    n_test = int(600 * 0.2)  # the last int(0.2 n) rows are the test targets
    n_windows = n_test - 12 + 1
    assert arrays["pred"].shape == (n_windows, 12, 4)
    # Original units undo the training-split standardisation.
    assert (
        abs(arrays["true_orig"][..., -1].mean() - 20) < 2
        and abs(arrays["true"][..., -1].mean()) < 2
    )
    table = pd.read_csv(version / "forecast.csv", parse_dates=["origin", "date"])
    assert list(table.columns) == ["origin", "date", "v0", "v1", "v2", "OT"]
    assert len(table) == n_windows * 12
    dates = pd.read_csv(csv, parse_dates=["date"])["date"]
    # Window 0 forecasts the first test row from the 48 rows before it.
    first = 600 - n_test
    assert table["date"].iloc[0] == dates[first] and table["origin"].iloc[0] == dates[first - 1]
    assert table["date"].iloc[-1] == dates.iloc[-1]
    np.testing.assert_allclose(
        table[["v0", "v1", "v2", "OT"]].to_numpy()[:12], arrays["pred_orig"][0], rtol=1e-5
    )
    assert (version / "forecast.png").stat().st_size > 0


def test_predicting_the_future_stores_no_truth_and_dates_the_forecast(trained, tmp_path):
    csv, _, best, _ = trained
    args = _small_args(csv, tmp_path, "--data.init_args.predict_split", "future")
    main(["predict", *args, "--ckpt_path", str(best)])
    (version,) = (tmp_path / "itransformer_etth1").iterdir()
    arrays = np.load(version / "predictions.npz")
    assert sorted(arrays) == ["pred", "pred_orig", "x", "x_orig"]
    table = pd.read_csv(version / "forecast.csv", parse_dates=["origin", "date"])
    last = pd.read_csv(csv, parse_dates=["date"])["date"].iloc[-1]
    assert (table["origin"] == last).all()
    assert table["date"].tolist() == list(pd.date_range(last, periods=13, freq="h")[1:])
    np.testing.assert_allclose(
        table[["v0", "v1", "v2", "OT"]].to_numpy(), arrays["pred_orig"][0], rtol=1e-6
    )


def test_the_forecaster_gives_the_clis_numbers_for_the_same_checkpoint_and_history(
    trained, tmp_path
):
    from mixerzoo.timeseries import Forecaster

    csv, run_dir, best, _ = trained
    args = _small_args(csv, tmp_path, "--data.init_args.predict_split", "future")
    main(["predict", *args, "--ckpt_path", str(best)])
    (version,) = (tmp_path / "itransformer_etth1").iterdir()
    cli = pd.read_csv(version / "forecast.csv", parse_dates=["date"]).set_index("date")
    cli = cli.drop(columns="origin")
    forecaster = Forecaster.from_checkpoint(
        best, best.parent.parent / "config.yaml", accelerator="cpu"
    )
    own_history = forecaster.predict()
    history = pd.read_csv(csv, parse_dates=["date"])
    given_history = forecaster.predict(history)
    for forecast in (own_history, given_history):
        assert list(forecast.index) == list(cli.index) and list(forecast.columns) == list(
            cli.columns
        )
        np.testing.assert_allclose(forecast.to_numpy(), cli.to_numpy(), rtol=1e-5, atol=1e-6)


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


def _error(capsys, *args: str, status: int = 1) -> str:
    """Run the command (in-process) expecting it to fail; its stderr, checked to be one message
    without traceback or usage dump."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    assert info.value.code == status
    err = capsys.readouterr().err
    assert err.startswith("mixerzoo: error: ") and "Traceback" not in err and "usage:" not in err
    assert err.rstrip().endswith(
        "(run with --debug (or MIXERZOO_TRACEBACK=1) for the full message and traceback)"
    )
    return err


MODEL = "--model.init_args.model."


def test_a_misspelt_class_path_names_the_closest_and_lists_the_models(small_csv, tmp_path, capsys):
    for wrong, right in (
        ("mixerzoo.timeseries.models.ITransformr", "mixerzoo.timeseries.models.ITransformer"),
        ("ITransformr", "ITransformer"),
    ):
        err = _error(
            capsys, "fit", *_small_args(small_csv, tmp_path, MODEL + "class_path", wrong), status=2
        )
        assert err.startswith(
            f"mixerzoo: error: unknown class_path {wrong!r} (in model.init_args.model)"
        )
        assert f"did you mean {right!r}" in err
        assert "itransformer (mixerzoo.timeseries.models.itransformer.ITransformer)" in err


def test_an_unknown_option_suggests_the_closest(small_csv, tmp_path, capsys):
    err = _error(
        capsys, "fit", *_small_args(small_csv, tmp_path, "--data.init_args.seqlen", "4"), status=2
    )
    assert "ForecastDataModule has no option 'seqlen' (in data); did you mean 'seq_len'?" in err
    model_typo, trainer_typo = tmp_path / "model_typo.yaml", tmp_path / "trainer_typo.yaml"
    model_typo.write_text(CONFIG.read_text().replace("        d_ff: 256", "        dff: 256"))
    trainer_typo.write_text(CONFIG.read_text() + "trainer:\n  max_epoch: 2\n")
    err = _error(capsys, "fit", "--config", str(model_typo), status=2)
    assert (
        "ITransformer has no option 'dff' (in model.init_args.model); did you mean 'd_ff'?" in err
    )
    err = _error(capsys, "fit", "--config", str(trainer_typo), status=2)
    assert "option 'trainer.max_epoch'; did you mean 'trainer.max_epochs'" in err


def test_an_unknown_mixer_bad_data_and_a_missing_file_are_one_line_errors(
    small_csv, tmp_path, capsys
):
    err = _error(
        capsys, "fit", *_small_args(small_csv, tmp_path, MODEL + "init_args.mixer", "atention")
    )
    assert "mixerzoo: error: unknown mixer 'atention'. Did you mean 'attention'" in err
    frame = pd.read_csv(small_csv)
    broken = tmp_path / "broken.csv"
    pd.concat([frame.iloc[:100], frame.iloc[99:]]).to_csv(broken, index=False)
    err = _error(capsys, "fit", *_small_args(broken, tmp_path))
    assert f"DataError: {broken}: duplicate timestamps 2020-01-05 03:00:00 (rows 99 and 100)" in err
    err = _error(capsys, "fit", *_small_args(tmp_path / "absent.csv", tmp_path))
    assert "FileNotFoundError: forecasting data file 'absent.csv' not found; looked in" in err


def test_debug_shows_the_traceback(small_csv, tmp_path, monkeypatch):
    frame = pd.read_csv(small_csv)
    broken = tmp_path / "broken.csv"
    frame.drop(index=50).to_csv(broken, index=False)
    from mixerzoo.timeseries import DataError

    with pytest.raises(DataError, match="1 timestamp\\(s\\) missing"):
        main(["fit", *_small_args(broken, tmp_path), "--debug"])
    monkeypatch.setenv("MIXERZOO_TRACEBACK", "1")
    with pytest.raises(DataError, match="1 timestamp\\(s\\) missing"):
        main(["fit", *_small_args(broken, tmp_path)])


def test_the_command_exits_with_one_line_on_bad_data(small_csv, tmp_path):
    """The console script itself: status 1, the message on stderr, no traceback."""
    frame = pd.read_csv(small_csv)
    broken = tmp_path / "broken.csv"
    frame.assign(date=frame["date"].where(frame.index != 7, "2020-01-01 07:30:00")).to_csv(
        broken, index=False
    )
    cmd = [str(Path(sys.executable).parent / "mixerzoo"), "fit", *_small_args(broken, tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "timestamp(s) off the grid, the first at row 7" in result.stderr


def test_fit_help_says_where_the_data_options_are(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(CONFIG), "--help"])
    assert info.value.code == 0
    assert "--data.help ForecastDataModule" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["fit", "--data.help", "ForecastDataModule"])
    out = capsys.readouterr().out
    assert "--data.seq_len SEQ_LEN" in out and "--data.predict_split PREDICT_SPLIT" in out


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
