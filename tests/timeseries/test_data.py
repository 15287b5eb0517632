"""The long-term forecasting protocol (Time-Series-Library's definitions)."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.preprocessing import StandardScaler as SkStandardScaler

from mixerzoo.timeseries.data import (
    DataError,
    ForecastDataModule,
    find_dataset,
    read_forecast_csv,
    split_borders,
    time_features,
)


def test_ett_hour_borders_are_the_standard_ones():
    assert split_borders(17420, 96, "ett_hour") == [(0, 8640), (8544, 11520), (11424, 14400)]


def test_ett_minute_borders_are_four_times_the_hourly_ones():
    assert split_borders(69680, 96, "ett_minute") == [(0, 34560), (34464, 46080), (45984, 57600)]


def test_ratio_borders_70_10_20():
    # 7,588 rows (exchange_rate): int(0.7 n) train, int(0.2 n) test, the rest validation.
    assert split_borders(7588, 96, "ratio") == [(0, 5311), (5215, 6071), (5975, 7588)]


def test_lookback_longer_than_train_split_is_a_clear_error():
    with pytest.raises(DataError, match="lookback seq_len=700 is longer than the training split"):
        split_borders(1000, 700, "ratio")


@pytest.mark.parametrize(
    "file,seq_len,pred_len,expected",
    [
        # Published split sizes of Time-Series-Library runs (train / val / test windows).
        ("ETTh1.csv", 96, 96, (8449, 2785, 2785)),
        ("ETTm1.csv", 96, 96, (34369, 11425, 11425)),
        ("exchange_rate.csv", 96, 96, (5120, 665, 1422)),
        ("national_illness.csv", 36, 24, (617, 74, 170)),
    ],
)
def test_window_counts_on_the_real_files(shared_data, file, seq_len, pred_len, expected):
    dm = ForecastDataModule(
        file,
        root=str(shared_data / "timeseries"),
        seq_len=seq_len,
        label_len=seq_len // 2,
        pred_len=pred_len,
    )
    dm.setup("fit")
    assert tuple(len(dm.splits[s]) for s in ("train", "val", "test")) == expected
    assert len(dm.test_dataloader().dataset) == expected[2]
    assert sum(len(b["x"]) for b in dm.test_dataloader()) == expected[2], (
        "no test window is dropped"
    )


def test_etth1_scaling_uses_training_rows_only_and_windows_line_up(shared_data):
    root = shared_data / "timeseries"
    dm = ForecastDataModule("ETTh1.csv", root=str(root), seq_len=96, label_len=48, pred_len=96)
    dm.setup("fit")
    raw = pd.read_csv(root / "ETTh1.csv")
    values = raw.drop(columns=["date"]).to_numpy()
    sk = SkStandardScaler().fit(values[:8640])
    scaled = sk.transform(values)
    test = dm.splits["test"]
    item = test[5]
    start = 11424 + 5
    np.testing.assert_allclose(item["x"].numpy(), scaled[start : start + 96], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        item["y"].numpy(), scaled[start + 96 - 48 : start + 96 + 96], rtol=1e-5, atol=1e-5
    )
    last = test[len(test) - 1]
    np.testing.assert_allclose(last["y"][-1].numpy(), scaled[14399], rtol=1e-5, atol=1e-5)
    back = dm.inverse_transform(item["y"].double().numpy())
    np.testing.assert_allclose(back, values[start + 48 : start + 192], rtol=1e-5, atol=1e-6)


def test_time_features_match_calendar_arithmetic():
    dates = pd.to_datetime(["2016-07-01 00:00:00", "2016-12-31 23:45:00"])
    hourly = time_features(dates, "h")
    # 2016-07-01 is a Friday (dayofweek 4), day 183 of a leap year.
    np.testing.assert_allclose(hourly[0], [-0.5, 4 / 6 - 0.5, -0.5, 182 / 365 - 0.5], rtol=1e-6)
    np.testing.assert_allclose(
        hourly[1], [0.5, 5 / 6 - 0.5, 30 / 30 - 0.5, 365 / 365 - 0.5], rtol=1e-6
    )
    minutely = time_features(dates, "t")
    assert minutely.shape == (2, 5)
    np.testing.assert_allclose(minutely[1, 0], 45 / 59 - 0.5, rtol=1e-6)
    calendar = time_features(dates, "t", timeenc=0)
    np.testing.assert_array_equal(calendar[1], [12, 31, 5, 23, 3])


def test_custom_csv_moves_target_last_and_modes(tmp_path):
    df = pd.DataFrame(
        {
            "date": pd.date_range("2021-01-01", periods=300, freq="D"),
            "OT": np.arange(300.0),
            "a": 1.0,
            "b": 2.0,
        }
    )
    df["a"] = np.cos(np.arange(300))
    path = tmp_path / "custom.csv"
    df.to_csv(path, index=False)
    frame = read_forecast_csv(path)
    assert list(frame.columns) == ["date", "a", "b", "OT"]
    for features, n in (("M", 3), ("MS", 3), ("S", 1)):
        dm = ForecastDataModule(str(path), features=features, seq_len=24, label_len=12, pred_len=12)
        dm.setup()
        assert dm.n_features == n
        assert dm.splits["train"][0]["x"].shape == (24, n)
    assert ForecastDataModule(str(path), features="MS").target_only_output


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda df: df.drop(columns=["date"]), "no date column 'date'"),
        (
            lambda df: df.assign(v0=np.where(np.arange(len(df)) == 7, np.nan, df["v0"])),
            r"missing values \(NaN\)",
        ),
        (lambda df: df.assign(v1="x"), r"non-numeric columns \['v1'\]"),
        (lambda df: df.drop(columns=["OT"]), "target column 'OT' not found"),
        (
            lambda df: df.assign(date="not a date"),
            r"'date' row 0 \(line 2 of the file\): 'not a date' is not a date",
        ),
    ],
)
def test_bad_csv_gets_a_clear_error(tmp_path, small_csv, mutate, match):
    bad = tmp_path / "bad.csv"
    mutate(pd.read_csv(small_csv)).to_csv(bad, index=False)
    with pytest.raises(DataError, match=match):
        read_forecast_csv(bad)


def test_nan_fill_option(tmp_path, small_csv):
    df = pd.read_csv(small_csv)
    df.loc[7, "v0"] = np.nan
    df.to_csv(tmp_path / "gap.csv", index=False)
    filled = read_forecast_csv(tmp_path / "gap.csv", fill="interpolate")
    assert filled.loc[7, "v0"] == pytest.approx((df.loc[6, "v0"] + df.loc[8, "v0"]) / 2)


def test_missing_file_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXERZOO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as err:
        find_dataset("weather.csv")
    message = str(err.value)
    assert str(tmp_path / "data" / "timeseries" / "weather.csv") in message
    assert str(tmp_path / "cache" / "mixerzoo" / "timeseries" / "weather.csv") in message
    with pytest.raises(FileNotFoundError, match="looked in: " + str(tmp_path / "elsewhere")):
        find_dataset("ETTh1.csv", root=tmp_path / "elsewhere")


def test_env_variable_and_cache_are_searched(tmp_path, monkeypatch, small_csv):
    monkeypatch.setenv("MIXERZOO_DATA", str(small_csv.parent))
    assert find_dataset("toy") == small_csv
    monkeypatch.delenv("MIXERZOO_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "mixerzoo" / "timeseries" / "toy.csv"
    cached.parent.mkdir(parents=True)
    cached.write_text(small_csv.read_text())
    assert find_dataset("toy.csv") == cached


def test_window_shapes_and_marks(small_csv):
    dm = ForecastDataModule(str(small_csv), seq_len=48, label_len=24, pred_len=12, batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (8, 48, 4) and batch["y"].shape == (8, 36, 4)
    assert batch["x_mark"].shape == (8, 48, 4) and batch["x"].dtype == torch.float32


def test_batched_fetch_equals_stacking_the_items(small_csv):
    dm = ForecastDataModule(str(small_csv), seq_len=48, label_len=24, pred_len=12, batch_size=5)
    dm.setup()
    windows = dm.splits["train"]
    indices = [0, 7, 3, len(windows) - 1, 7]
    batch = windows.gather(indices)
    for key in ("x", "x_mark", "y", "y_mark"):
        expected = torch.stack([windows[i][key] for i in indices])
        assert torch.equal(batch[key], expected), key
    # The data module's loaders fetch whole batches this way, in the sampler's order.
    val = dm.splits["val"]
    loaded = next(iter(dm.val_dataloader()))
    assert torch.equal(loaded["y_mark"], torch.stack([val[i]["y_mark"] for i in range(5)]))
    with pytest.raises(IndexError, match="out of range"):
        windows.gather([0, len(windows)])
