"""Forecasting data from pandas frames: wide and long layouts, the regular-grid checks, fills,
the extra split protocols and the future window."""

import numpy as np
import pandas as pd
import pytest

from mixerzoo.timeseries.data import (
    DataError,
    ForecastDataModule,
    StandardScaler,
    prepare_frame,
    split_borders,
    time_features,
)


def _wide(n=60, freq="h", cols=("a", "b")) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    index = pd.date_range("2021-03-01", periods=n, freq=freq, name="when")
    return pd.DataFrame({c: rng.standard_normal(n) + i for i, c in enumerate(cols)}, index=index)


def _long(wide: pd.DataFrame) -> pd.DataFrame:
    return (
        wide.rename_axis("ds")
        .reset_index()
        .melt(id_vars="ds", var_name="unique_id", value_name="y")
    )


def test_wide_index_date_column_and_long_layouts_give_the_same_frame():
    wide = _wide(cols=("b", "a", "c"))
    by_index, info = prepare_frame(wide)
    assert info.layout == "wide" and info.freq == "h" and info.date_name == "when"
    assert info.columns == ("b", "a", "c"), "wide keeps the column order"
    by_column, info2 = prepare_frame(wide.reset_index().rename(columns={"when": "date"}))
    pd.testing.assert_frame_equal(by_index, by_column)
    assert info2.date_name == "date"
    # Long rows in any order: pivoted, ids sorted, timestamps sorted.
    long = _long(wide).sample(frac=1.0, random_state=0)
    by_long, info3 = prepare_frame(long)
    assert info3.layout == "long" and info3.columns == ("a", "b", "c") and info3.date_name == "ds"
    pd.testing.assert_frame_equal(by_long, by_index[["date", "a", "b", "c"]])
    np.testing.assert_array_equal(by_long["date"], wide.index)


def test_unsorted_wide_rows_are_sorted_by_time():
    wide = _wide()
    out, _ = prepare_frame(wide.iloc[::-1])
    np.testing.assert_array_equal(out["a"], wide["a"])


@pytest.mark.parametrize(
    "freq,expected",
    [
        ("D", "D"),
        ("15min", "15min"),
        ("MS", "MS"),
        ("W-SUN", "W-SUN"),
        ("B", "B"),
        ("QS-OCT", "QS-JAN"),
    ],
)
def test_frequency_is_inferred_and_its_time_features_exist(freq, expected):
    wide, info = prepare_frame(_wide(n=30, freq=freq))
    # pandas names a quarterly grid by its January anchor; the grid is the same.
    assert info.freq == expected
    pd.testing.assert_index_equal(
        pd.DatetimeIndex(wide["date"]),
        pd.date_range(wide["date"].iloc[0], periods=30, freq=info.freq),
        check_names=False,
        check_freq=False,
    )
    marks = time_features(wide["date"], info.freq)
    assert marks.shape[0] == 30 and np.all(np.abs(marks) <= 0.5)


def test_gap_is_located_and_fill_resamples_onto_the_grid():
    wide = _wide()
    gappy = wide.drop(wide.index[[10, 11]])
    with pytest.raises(
        DataError,
        match=r"not regular at frequency 'h': 2 timestamp\(s\) missing, the first gap after row 9",
    ) as err:
        prepare_frame(gappy)
    assert "2021-03-01 10:00:00" in str(err.value) and "fill='interpolate'" in str(err.value)
    filled, info = prepare_frame(gappy, fill="interpolate")
    assert len(filled) == 60 and info.freq == "h"
    np.testing.assert_array_equal(filled["date"], wide.index)
    # Linear in time across the two missing hours.
    a9, a12 = wide["a"].iloc[9], wide["a"].iloc[12]
    np.testing.assert_allclose(
        filled["a"].iloc[10:12], [a9 + (a12 - a9) / 3, a9 + 2 * (a12 - a9) / 3]
    )
    zero, _ = prepare_frame(gappy, fill="zero")
    assert (zero["a"].iloc[10:12] == 0).all()


def test_off_grid_timestamps_are_named_and_resampled_by_mean():
    wide = _wide()
    shifted = wide.index.where(np.arange(60) != 20, wide.index[20] + pd.Timedelta("30min"))
    odd = wide.set_axis(shifted)
    with pytest.raises(
        DataError, match=r"1 timestamp\(s\) off the grid, the first at row 20: 2021-03-01 20:30"
    ):
        prepare_frame(odd)
    # With a fill the 20:30 value falls in the 20:00 step (bins start at the first timestamp).
    fixed, _ = prepare_frame(odd, fill="ffill")
    np.testing.assert_array_equal(fixed["date"], wide.index)
    assert fixed["a"].iloc[20] == wide["a"].iloc[20]


def test_wrong_explicit_freq_says_which_one_fits():
    with pytest.raises(DataError, match=r"not regular at frequency 'D'.*look regular at 'h'"):
        prepare_frame(_wide(), freq="D")


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda w: w.reset_index(drop=True), r"no date column 'date'; columns are \['a', 'b'\]"),
        (
            lambda w: (
                w.reset_index()
                .rename(columns={"when": "date"})
                .assign(date=lambda d: d["date"].where(d.index != 5))
            ),
            r"1 missing timestamps in 'date' \(first at row 5\)",
        ),
        (
            lambda w: w.reset_index().rename(columns={"when": "date"}).assign(date="soon"),
            r"'date' row 0: 'soon' is not a date",
        ),
        (lambda w: pd.concat([w, w.iloc[[3]]]), r"duplicate timestamps 2021-03-01 03:00:00"),
        (
            lambda w: w.assign(a=np.where(np.arange(60) == 7, np.nan, w["a"])),
            r"missing values \(NaN\) per column: \{'a': 1\}",
        ),
        (lambda w: w.assign(b="x"), r"non-numeric columns \['b'\]"),
        (lambda w: w.iloc[:0], "the frame is empty"),
    ],
)
def test_bad_wide_frames_get_clear_errors(make, match):
    with pytest.raises(DataError, match=match):
        prepare_frame(make(_wide()))


def test_nan_fill_option_on_frames():
    wide = _wide()
    wide.iloc[7, 0] = np.nan
    out, _ = prepare_frame(wide, fill="interpolate")
    assert out["a"].iloc[7] == pytest.approx((wide["a"].iloc[6] + wide["a"].iloc[8]) / 2)


def test_long_frames_list_the_offending_series():
    long = _long(_wide(cols=("a", "b", "c")))
    ragged = long.drop(long.index[(long["unique_id"] == "b") & (long["ds"] >= "2021-03-02 06:00")])
    with pytest.raises(
        DataError, match=r"series shorter than 40 timestamps \(L \+ H\): \{'b': 30\}"
    ):
        prepare_frame(ragged, min_length=40, min_length_reason="L + H")
    with pytest.raises(
        DataError,
        match=r"do not share the same timestamps: 'b' lacks 30 of 60 \(first missing 2021-03-02 06:00:00\)",
    ):
        prepare_frame(ragged)
    with pytest.raises(DataError, match=r"duplicate \(unique_id, ds\) rows"):
        prepare_frame(pd.concat([long, long.iloc[[4]]]))
    with pytest.raises(DataError, match=r"extra columns \['temp'\]"):
        prepare_frame(long.assign(temp=1.0))
    with pytest.raises(
        DataError, match=r"needs columns \['unique_id', 'ds', 'y'\]; missing \['y'\]"
    ):
        prepare_frame(long.drop(columns=["y"]))
    filled, _ = prepare_frame(ragged, fill="ffill")
    assert (filled["b"].iloc[30:] == filled["b"].iloc[29]).all()


def test_short_frame_for_the_windows():
    with pytest.raises(
        DataError,
        match=r"60 timestamps, fewer than the 80 needed \(lookback seq_len=72 \+ horizon pred_len=8\)",
    ):
        ForecastDataModule.from_frame(_wide(), seq_len=72, pred_len=8, label_len=0)


def test_ratio_fractions_and_the_all_and_none_protocols():
    assert split_borders(100, 10, "ratio", 0.8, 0.0) == [(0, 80), (70, 100), (100, 100)]
    assert split_borders(100, 10, "ratio", 1.0, 0.0) == [(0, 100), (100, 100), (100, 100)]
    assert split_borders(100, 10, "all") == [(0, 0), (0, 0), (0, 100)]
    assert split_borders(100, 10, "none") == [(0, 0), (0, 0), (100, 100)]
    with pytest.raises(ValueError, match="train_fraction"):
        split_borders(100, 10, "ratio", 0.9, 0.2)
    dm = ForecastDataModule.from_frame(
        _wide(), seq_len=12, label_len=6, pred_len=4, train_fraction=0.75, test_fraction=0.0
    )
    dm.setup()
    # 45 training rows -> 45 - 12 - 4 + 1 windows; validation rows [33, 60).
    assert sorted(dm.splits) == ["train", "val"]
    assert len(dm.splits["train"]) == 30 and len(dm.splits["val"]) == 27 - 16 + 1
    with pytest.raises(DataError, match="no 'test' split"):
        dm.test_dataloader()


def test_scaler_is_fit_on_training_rows_and_can_be_given():
    wide = _wide()
    dm = ForecastDataModule.from_frame(wide, seq_len=12, label_len=6, pred_len=4)
    dm.setup()
    n_train = int(60 * 0.7)
    np.testing.assert_allclose(dm.scaler.mean, wide.iloc[:n_train].mean().to_numpy())
    np.testing.assert_allclose(dm.scaler.std, wide.iloc[:n_train].std(ddof=0).to_numpy())
    with pytest.raises(DataError, match="no training rows to fit the scaler"):
        ForecastDataModule.from_frame(wide, seq_len=12, pred_len=4, protocol="all").setup()
    given = StandardScaler(np.array([1.0, 2.0]), np.array([2.0, 4.0]))
    dm = ForecastDataModule.from_frame(
        wide, seq_len=12, label_len=6, pred_len=4, protocol="all", scaler=given
    )
    dm.setup()
    np.testing.assert_allclose(
        dm.splits["test"][0]["x"].numpy(), (wide.to_numpy()[:12] - [1, 2]) / [2, 4], rtol=1e-6
    )
    assert len(dm.splits["test"]) == 60 - 16 + 1
    bad = StandardScaler(np.zeros(3), np.ones(3))
    with pytest.raises(DataError, match="statistics for 3 columns, the data has 2"):
        ForecastDataModule.from_frame(
            wide, seq_len=12, pred_len=4, protocol="all", scaler=bad
        ).setup()


def test_columns_must_match_and_set_the_order():
    wide = _wide(cols=("a", "b", "c"))
    dm = ForecastDataModule.from_frame(wide, seq_len=12, pred_len=4, columns=["c", "a", "b"])
    dm.setup()
    assert dm.columns == ["c", "a", "b"]
    with pytest.raises(
        DataError, match=r"series not seen in training: \['c'\]; missing series: \['d'\]"
    ):
        ForecastDataModule.from_frame(wide, seq_len=12, pred_len=4, columns=["a", "b", "d"])


def test_future_window_continues_the_data():
    wide = _wide()
    scaler = StandardScaler().fit(wide.to_numpy())
    dm = ForecastDataModule.from_frame(
        wide,
        seq_len=12,
        label_len=6,
        pred_len=4,
        protocol="none",
        predict_split="future",
        scaler=scaler,
    )
    batch = next(iter(dm.predict_dataloader()))
    future = pd.date_range("2021-03-03 12:00", periods=4, freq="h")
    pd.testing.assert_index_equal(dm.dates["future"], future, check_names=False)
    scaled = scaler.transform(wide.to_numpy())
    np.testing.assert_allclose(batch["x"][0].numpy(), scaled[-12:], rtol=1e-6)
    np.testing.assert_allclose(batch["y"][0, :6].numpy(), scaled[-6:], rtol=1e-6)
    # The future has no truth: NaN, never a target (the task's decoder input uses zeros there).
    assert batch["y"][0, 6:].isnan().all() and batch["y"].shape == (1, 10, 2)
    np.testing.assert_allclose(batch["y_mark"][0, 6:].numpy(), time_features(future, "h"))
    # Only the lookback is needed: a frame of exactly seq_len rows works, a shorter one does not.
    ForecastDataModule.from_frame(
        wide.iloc[-12:],
        seq_len=12,
        pred_len=4,
        protocol="none",
        predict_split="future",
        scaler=scaler,
    ).setup()
    with pytest.raises(DataError, match="fewer than the 12 needed"):
        ForecastDataModule.from_frame(
            wide.iloc[-11:], seq_len=12, pred_len=4, protocol="none", scaler=scaler
        )


def test_csv_future_split_uses_the_real_step(tmp_path):
    # A daily CSV keeps Time-Series-Library's freq="h" time features, but its future is daily.
    frame = _wide(n=80, freq="D").reset_index().rename(columns={"when": "date", "b": "OT"})
    path = tmp_path / "daily.csv"
    frame.to_csv(path, index=False)
    dm = ForecastDataModule(str(path), seq_len=12, label_len=6, pred_len=3, predict_split="future")
    dm.setup()
    assert list(dm.dates["future"]) == list(pd.date_range("2021-05-20", periods=3, freq="D"))
    assert len(dm.predict_dataloader().dataset) == 1


def test_lightning_predict_on_the_future_split(small_csv):
    import pytorch_lightning as pl

    from mixerzoo.timeseries import ForecastTask, ITransformer

    dm = ForecastDataModule(
        str(small_csv), seq_len=24, label_len=12, pred_len=6, predict_split="future"
    )
    task = ForecastTask(
        ITransformer(seq_len=24, pred_len=6, d_model=16, d_ff=16, n_heads=2, e_layers=1)
    )
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (out,) = trainer.predict(task, datamodule=dm)
    assert out["pred"].shape == (1, 6, 4) and out["pred_orig"].shape == (1, 6, 4)
    np.testing.assert_allclose(
        dm.inverse_transform(out["pred"]).numpy(), out["pred_orig"].numpy(), rtol=1e-6
    )
    assert dm.dates["future"][0] == pd.Timestamp("2020-01-01") + pd.Timedelta(hours=600)
