"""One validation for both routes: a CSV file (``ForecastDataModule``, ``mixerzoo fit``) and a
pandas frame (``from_frame``, the ``Forecaster``) reject the same broken data with the same
message, and ``fill=`` repairs it the same way; bad files and dates get messages that name them."""

import numpy as np
import pandas as pd
import pytest

from mixerzoo.timeseries import ForecastDataModule
from mixerzoo.timeseries.data import DataError, read_forecast_csv

N = 200


def _frame() -> pd.DataFrame:
    t = np.arange(N)
    return pd.DataFrame(
        {
            "date": pd.date_range("2021-03-01", periods=N, freq="h"),
            "load": np.sin(2 * np.pi * t / 24),
            "OT": np.cos(2 * np.pi * t / 24) + 10.0,
        }
    )


def _duplicate(df):  # row 50 twice
    return pd.concat([df.iloc[:51], df.iloc[50:]]).reset_index(drop=True)


def _missing(df):  # 2021-03-03 22:00 absent
    return df.drop(index=70).reset_index(drop=True)


def _off_grid(df):  # 2021-03-04 18:30 instead of 18:00
    df = df.copy()
    df.loc[90, "date"] += pd.Timedelta(minutes=30)
    return df


BROKEN = {
    "duplicate": (_duplicate, r"duplicate timestamps 2021-03-03 02:00:00 \(rows 50 and 51\)"),
    "missing": (_missing, r"1 timestamp\(s\) missing, the first gap after row 69"),
    "off_grid": (_off_grid, r"1 timestamp\(s\) off the grid, the first at row 90"),
}


def _csv(df: pd.DataFrame, path) -> str:
    df.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_csv_route_rejects_what_the_frame_route_rejects_with_the_same_message(case, tmp_path):
    breaks, expected = BROKEN[case]
    bad = breaks(_frame())
    path = _csv(bad, tmp_path / "bad.csv")
    with pytest.raises(DataError, match=expected) as from_csv:
        ForecastDataModule(path, seq_len=24, label_len=12, pred_len=6).setup()
    with pytest.raises(DataError, match=expected) as from_frame:
        ForecastDataModule.from_frame(bad, seq_len=24, pred_len=6, target="OT")
    assert str(from_csv.value) == str(from_frame.value).replace("frame:", f"{path}:", 1)


@pytest.mark.parametrize("fill", ["interpolate", "ffill", "zero"])
def test_fill_repairs_a_gap_in_a_csv_as_in_a_frame(fill, tmp_path):
    bad = _missing(_frame())
    path = _csv(bad, tmp_path / "gap.csv")
    dm = ForecastDataModule(path, fill=fill, seq_len=24, label_len=12, pred_len=6)
    frame = dm.load_frame()
    assert len(frame) == N and frame["date"].diff().iloc[1:].eq(pd.Timedelta("1h")).all()
    row = frame.iloc[70]
    expected = {
        "interpolate": (_frame().loc[69, "OT"] + _frame().loc[71, "OT"]) / 2,
        "ffill": _frame().loc[69, "OT"],
        "zero": 0.0,
    }[fill]
    assert row["OT"] == pytest.approx(expected)
    via_frame = ForecastDataModule.from_frame(
        bad, fill=fill, target="OT", seq_len=24, label_len=12, pred_len=6
    )
    pd.testing.assert_frame_equal(frame, via_frame.load_frame(), check_freq=False)
    dm.setup()  # and it trains on it
    assert len(dm.splits["train"]) > 0


def test_an_off_grid_timestamp_is_resampled_with_fill(tmp_path):
    dm = ForecastDataModule(
        _csv(_off_grid(_frame()), tmp_path / "off.csv"), fill="interpolate", label_len=12
    )
    dates = pd.DatetimeIndex(dm.load_frame()["date"])
    assert dates.equals(pd.date_range("2021-03-01", periods=N, freq="h"))


def test_empty_and_header_only_files_are_named(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=rf"{empty}: the file is empty"):
        read_forecast_csv(empty)
    header = tmp_path / "header.csv"
    header.write_text("date,load,OT\n")
    with pytest.raises(DataError, match=rf"{header}: a header \(date, load, OT\) and no rows"):
        ForecastDataModule(str(header), seq_len=24, label_len=12, pred_len=6).setup()


def test_a_one_row_series_is_a_clear_error(tmp_path):
    path = _csv(_frame().iloc[:1], tmp_path / "one.csv")
    with pytest.raises(DataError, match=r"one timestamp \(2021-03-01 00:00:00\)"):
        ForecastDataModule(path, seq_len=24, label_len=12, pred_len=6).setup()
    with pytest.raises(DataError, match=r"one timestamp"):
        ForecastDataModule.from_frame(_frame().iloc[:1], seq_len=24, pred_len=6)


def test_an_unparseable_date_names_its_row(tmp_path):
    bad = _frame().astype({"date": str})
    bad.loc[120, "date"] = "2021-03-06 0O:00"  # a letter O
    path = _csv(bad, tmp_path / "typo.csv")
    message = r"row 120 \(line 122 of the file\): '2021-03-06 0O:00' is not a date"
    with pytest.raises(DataError, match=message):
        read_forecast_csv(path)
    with pytest.raises(DataError, match=r"row 120: '2021-03-06 0O:00' is not a date"):
        ForecastDataModule.from_frame(bad, seq_len=24, pred_len=6)
