"""The scikit-learn style Forecaster: parameters and clone, fit/predict on wide and long frames,
learning a clear signal, save/load, score, backtest and the errors on bad input."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from mixerzoo.timeseries import Forecaster
from mixerzoo.timeseries.data import DataError

L, H = 24, 6
TINY = {"d_model": 16, "d_ff": 16, "n_heads": 2, "e_layers": 1}


def _forecaster(**kw) -> Forecaster:
    base = dict(
        lookback=L,
        horizon=H,
        model_kwargs=dict(TINY),
        max_epochs=3,
        lr=3e-3,
        batch_size=32,
        accelerator="cpu",
        progress_bar=False,
        seed=0,
    )
    return Forecaster(**{**base, **kw})


def _sines(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Two hourly series with period 12 (clearly learnable), different scales and offsets."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return pd.DataFrame(
        {
            "load": np.sin(2 * np.pi * t / 12) + 0.05 * rng.standard_normal(n),
            "temp": 3.0 * np.cos(2 * np.pi * t / 12) + 10.0 + 0.05 * rng.standard_normal(n),
        },
        index=pd.date_range("2022-01-01", periods=n, freq="h", name="time"),
    )


def _long(wide: pd.DataFrame) -> pd.DataFrame:
    return (
        wide.rename_axis("ds")
        .reset_index()
        .melt(id_vars="ds", var_name="unique_id", value_name="y")
    )


@pytest.fixture(scope="module")
def full() -> pd.DataFrame:
    return _sines()


@pytest.fixture(scope="module")
def fitted(full) -> Forecaster:
    """Trained on all but the last horizon, which stays unseen."""
    return _forecaster().fit(full.iloc[:-H])


def test_get_params_set_params_and_clone_keep_every_argument():
    f = Forecaster(lookback=L, horizon=H, model_kwargs={"d_model": 16}, n_heads=2, dropout=0.0)
    params = f.get_params()
    assert params["lookback"] == L and params["model_kwargs"] == {"d_model": 16}
    assert params["n_heads"] == 2 and params["dropout"] == 0.0, (
        "passthrough model kwargs are params"
    )
    g = clone(f)  # raises if __init__ altered a parameter
    assert g is not f and g.get_params() == params
    assert Forecaster(**params).get_params() == params
    g.set_params(lr=1e-3, n_heads=4, e_layers=1)  # e_layers: a new model argument
    assert g.get_params()["lr"] == 1e-3 and g.get_params()["n_heads"] == 4
    assert clone(g).get_params()["e_layers"] == 1 and f.get_params()["n_heads"] == 2
    assert "n_heads=4" in repr(g)
    with pytest.raises(
        ValueError, match=r"invalid parameters \['bogus'\].*model arguments: \[.*'d_model'"
    ):
        g.set_params(bogus=1)
    with pytest.raises(ValueError, match="invalid parameters"):
        g.set_params(seq_len=12)  # the lookback is the Forecaster's own


def test_fit_predict_wide_continues_the_index(fitted, full):
    pred = fitted.predict()
    train_end = full.index[-H - 1]
    expected = pd.date_range(train_end + pd.Timedelta(hours=1), periods=H, freq="h", name="time")
    pd.testing.assert_index_equal(pred.index, expected)
    assert pred.index.freqstr == "h" and list(pred.columns) == ["load", "temp"]
    assert fitted.freq_ == "h" and fitted.layout_ == "wide" and fitted.n_epochs_ >= 1
    # Forecasts are in original units (temp around 10, load around 0).
    assert abs(pred["temp"].mean() - 10) < 2 and abs(pred["load"].mean()) < 1
    # The same history as a date column, rows shuffled: same forecast, horizon truncated.
    as_column = (
        full.iloc[:-H].reset_index().rename(columns={"time": "date"}).sample(frac=1, random_state=1)
    )
    short = fitted.predict(as_column, horizon=3)
    np.testing.assert_array_equal(short.to_numpy(), pred.to_numpy()[:3])
    assert short.index.name == "date"


def test_forecasts_beat_the_naive_baseline_on_a_learnable_signal(fitted, full):
    truth = full.iloc[-H:].to_numpy()
    pred = fitted.predict().to_numpy()
    naive = np.repeat(full.iloc[[-H - 1]].to_numpy(), H, axis=0)  # repeat the last value
    mse_model, mse_naive = np.mean((pred - truth) ** 2), np.mean((naive - truth) ** 2)
    # One window is noisy (seeds 0-4 give 0.02-0.23 of the naive MSE): a loose bound here, a
    # tight one over every window of the last 100 steps (standardised units, as score computes;
    # about half of them in the validation tail, whose windows the weights never trained on).
    assert mse_model < 0.5 * mse_naive, (mse_model, mse_naive)
    tail = full.iloc[-100:]
    scaled = (tail.to_numpy() - fitted.scaler_.mean) / fitted.scaler_.std
    naive_errors = [
        np.mean((scaled[i + L : i + L + H] - scaled[i + L - 1]) ** 2)
        for i in range(100 - L - H + 1)
    ]
    assert -fitted.score(tail) < 0.25 * np.mean(naive_errors)


def test_score_is_negative_mse_of_the_forecast_in_standardised_units(fitted, full):
    window = full.iloc[-L - H :]  # exactly one window: the lookback and the next H steps
    pred = fitted.predict(window.iloc[:L]).to_numpy()
    err = (pred - window.iloc[L:].to_numpy()) / fitted.scaler_.std
    assert fitted.score(window) == pytest.approx(-np.mean(err**2), rel=1e-5)


def test_long_format_round_trip_matches_the_wide_fit():
    wide = _sines(n=160, seed=3).assign(extra=lambda d: d["load"] * 2 + 1)
    wide.columns = ["b", "c", "a"]
    long = _long(wide).sample(frac=1.0, random_state=0)
    f = _forecaster(max_epochs=2, val_fraction=0.0).fit(long)
    assert f.layout_ == "long" and f.columns_ == ["a", "b", "c"] and f.best_val_loss_ is None
    pred = f.predict()
    assert list(pred.columns) == ["unique_id", "ds", "y_hat"] and len(pred) == 3 * H
    assert list(pred["unique_id"]) == [k for k in ("a", "b", "c") for _ in range(H)]
    future = pd.date_range(wide.index[-1] + pd.Timedelta(hours=1), periods=H, freq="h")
    assert (pred["ds"].to_numpy().reshape(3, H) == future.to_numpy()).all()
    # The pivoted frame trains the same model (same seed, same series order): same forecasts
    g = _forecaster(max_epochs=2, val_fraction=0.0).fit(wide[["a", "b", "c"]])
    wide_pred = g.predict()
    # (Equal up to the summation order of the scaler statistics over differently laid out arrays.)
    np.testing.assert_allclose(
        pred["y_hat"].to_numpy(), wide_pred.to_numpy().T.reshape(-1), rtol=1e-9, atol=1e-12
    )
    # A long history of the same series is forecast in long format.
    again = f.predict(long)
    pd.testing.assert_frame_equal(again, pred)


def test_save_load_predicts_identically(fitted, full, tmp_path):
    path = tmp_path / "forecaster.pt"
    fitted.save(path)
    loaded = Forecaster.load(path)
    assert loaded.get_params() == fitted.get_params()
    for (name, a), (_, b) in zip(
        fitted.model_.state_dict().items(), loaded.model_.state_dict().items()
    ):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(loaded.scaler_.mean, fitted.scaler_.mean)
    pd.testing.assert_frame_equal(loaded.predict(), fitted.predict(), check_exact=True)
    history = full.iloc[50:120]
    pd.testing.assert_frame_equal(
        loaded.predict(history), fitted.predict(history), check_exact=True
    )
    assert loaded.score(full.iloc[-60:]) == fitted.score(full.iloc[-60:])
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a file written by Forecaster.save"):
        Forecaster.load(tmp_path / "other.pt")


def test_a_truncated_or_corrupted_file_is_named_with_what_was_expected(fitted, tmp_path):
    path = tmp_path / "forecaster.pt"
    fitted.save(path)
    data = path.read_bytes()
    truncated, corrupted = tmp_path / "truncated.pt", tmp_path / "corrupted.pt"
    truncated.write_bytes(data[: len(data) // 2])
    corrupted.write_bytes(data[:100] + bytes(200) + data[300:])
    for bad in (truncated, corrupted):
        with pytest.raises(ValueError) as info:
            Forecaster.load(bad)
        message = str(info.value)
        assert message.startswith(f"{bad}: cannot be read") and "truncated or corrupted" in message
        assert "expected a file written by Forecaster.save" in message
    state = torch.load(path, weights_only=True)
    del state["scaler"], state["last_values"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"lacks \['last_values', 'scaler'\]"):
        Forecaster.load(tmp_path / "partial.pt")


def test_backtest_windows_cutoffs_and_metrics(full):
    data = full.iloc[:150]
    f = _forecaster(max_epochs=2)
    result = f.backtest(data, n_windows=3, step=5)
    assert not hasattr(f, "model_"), "backtest trains copies and leaves the forecaster unfitted"
    assert list(result.columns) == ["window", "cutoff", "mse", "mae", "mse_scaled", "mae_scaled"]
    assert len(result) == 3 and list(result["window"]) == [0, 1, 2]
    n = len(data)
    assert list(result["cutoff"]) == [data.index[n - H - 1 - k * 5] for k in (2, 1, 0)]
    # Independently: the same clone fit on the data up to the first cutoff, forecasting from the
    # last cutoff, scored against the truth.
    cut = n - H - 1
    model = clone(f).fit(data.iloc[: n - H - 1 - 10 + 1])
    pred = model.predict(data.iloc[: cut + 1]).to_numpy()
    truth = data.iloc[cut + 1 : cut + 1 + H].to_numpy()
    assert result["mse"].iloc[2] == pytest.approx(np.mean((pred - truth) ** 2), rel=1e-5)
    assert result["mae"].iloc[2] == pytest.approx(np.mean(np.abs(pred - truth)), rel=1e-5)
    scaled_err = (pred - truth) / model.scaler_.std
    assert result["mse_scaled"].iloc[2] == pytest.approx(np.mean(scaled_err**2), rel=1e-5)
    with pytest.raises(DataError, match="backtest window 0 .* too little history"):
        f.backtest(data, n_windows=25, step=5)


def test_prediction_errors_are_clear(fitted, full):
    with pytest.raises(NotFittedError, match="call fit"):
        _forecaster().predict()
    with pytest.raises(ValueError, match="trained for horizon 6 and cannot forecast 12 steps"):
        fitted.predict(horizon=12)
    with pytest.raises(DataError, match=r"series not seen in training: \['wind'\]"):
        fitted.predict(full.assign(wind=1.0))
    long = _long(full).replace({"unique_id": {"temp": "pressure"}})
    with pytest.raises(
        DataError, match=r"series not seen in training: \['pressure'\]; missing series: \['temp'\]"
    ):
        fitted.predict(long)
    with pytest.raises(DataError, match=r"20 timestamps, fewer than the 24 needed \(the lookback"):
        fitted.predict(full.iloc[:20])
    daily = full.set_axis(pd.date_range("2020-01-01", periods=len(full), freq="D", name="time"))
    with pytest.raises(DataError, match=r"not regular at frequency 'h'.*look regular at 'D'") as e:
        fitted.predict(daily)
    # predict has no freq option: the hint says what to do with the data instead.
    assert "trained on 'h' data" in str(e.value) and "freq=" not in str(e.value)


def test_fit_errors_are_clear(full):
    f = _forecaster()
    with pytest.raises(
        DataError, match=r"fewer than the 30 needed \(lookback seq_len=24 \+ horizon pred_len=6\)"
    ):
        f.fit(full.iloc[:25])
    with pytest.raises(
        DataError, match="training on the first 28 .* fewer than lookback 24 \\+ horizon 6"
    ):
        f.fit(full.iloc[:36])
    with pytest.raises(
        DataError,
        match=r"validation tail has 5 timestamps \(val_fraction=0.05 of 90\), fewer than the horizon 6",
    ):
        _forecaster(val_fraction=0.05).fit(full.iloc[:90])
    long = _long(full)
    short = long[~((long["unique_id"] == "temp") & (long["ds"] > full.index[20]))]
    with pytest.raises(DataError, match=r"series shorter than 30 timestamps .*\{'temp': 21\}"):
        f.fit(short)
    gappy = full.drop(full.index[[30, 31]])
    with pytest.raises(DataError, match=r"missing, the first gap after row 29"):
        f.fit(gappy)
    nan = full.copy()
    nan.iloc[5, 1] = np.nan
    with pytest.raises(DataError, match=r"missing values \(NaN\) per column: \{'temp': 1\}"):
        f.fit(nan)
    with pytest.raises(ValueError, match="given both in model_kwargs and as keywords"):
        _forecaster(d_model=32).fit(full)
    with pytest.raises(ValueError, match=r"model 'itransformer' has no arguments \['width'\]"):
        _forecaster(model_kwargs={"width": 3}).fit(full)
    with pytest.raises(ValueError, match="seq_len -> lookback="):
        _forecaster(model_kwargs={"seq_len": 3}).fit(full)
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        _forecaster(horizon=0).fit(full)


def test_fill_lets_gappy_frames_train(full):
    gappy = full.iloc[:150].drop(full.index[[30, 31, 77]])
    f = _forecaster(max_epochs=1, fill="interpolate").fit(gappy)
    assert f.predict().index[0] == full.index[150]


def test_predictions_of_a_sampling_model_are_reproducible(full, tmp_path):
    """Informer's ProbSparse attention samples keys at inference too: predict seeds it locally."""
    small = {"d_model": 16, "d_ff": 16, "n_heads": 2, "e_layers": 1, "d_layers": 1}
    f = _forecaster(model="informer", model_kwargs=small, max_epochs=1).fit(full.iloc[:120])
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = f.predict()
    assert torch.equal(torch.rand(3), before), "the caller's random state is untouched"
    pd.testing.assert_frame_equal(f.predict(), first, check_exact=True)
    f.save(tmp_path / "informer.pt")
    pd.testing.assert_frame_equal(
        Forecaster.load(tmp_path / "informer.pt").predict(), first, check_exact=True
    )
