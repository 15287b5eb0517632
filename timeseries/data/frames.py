"""Checking forecasting data: CSV files and users' frames, wide or long, on a regular time grid.

Both routes, a CSV file (``read_forecast_csv``, what ``ForecastDataModule`` reads) and a pandas
frame (``prepare_frame``, what ``ForecastDataModule.from_frame`` and the ``Forecaster`` read), are
checked here.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mixerzoo.timeseries.data.errors import DataError

__all__ = ["FrameInfo", "prepare_frame", "read_forecast_csv", "validate_frame"]


def read_forecast_csv(
    path: str | os.PathLike,
    date_column: str = "date",
    target: str | None = "OT",
    fill: str | None = None,
) -> pd.DataFrame:
    """Read and validate a forecasting CSV (a date column plus numeric variables).

    Args:
        path: CSV file.
        date_column: name of the timestamp column.
        target: column that must exist (moved last); ``None`` skips the check.
        fill: what to do with missing values: ``None`` (raise), ``"ffill"`` (forward then backward
            fill), ``"interpolate"`` (linear in time) or ``"zero"``.

    Returns:
        Frame with ``date_column`` parsed to datetimes first, the other variables after it and the
        target last.

    Raises:
        DataError: missing date column, unparseable dates, non-numeric columns, NaNs with
            ``fill=None``, or a missing target column; the message says what to change.
    """
    df = pd.read_csv(path)
    return validate_frame(df, source=str(path), date_column=date_column, target=target, fill=fill)


def validate_frame(
    df: pd.DataFrame,
    source: str = "frame",
    date_column: str = "date",
    target: str | None = "OT",
    fill: str | None = None,
) -> pd.DataFrame:
    """Validate a wide forecasting frame; see ``read_forecast_csv`` for the rules."""
    if date_column not in df.columns:
        raise DataError(
            f"{source}: no date column {date_column!r}; columns are {list(df.columns)}. "
            f"Forecasting CSVs need a timestamp column: rename it to {date_column!r} or pass "
            f"date_column=<its name>."
        )
    try:
        dates = pd.to_datetime(df[date_column])
    except (ValueError, TypeError) as err:
        raise DataError(
            f"{source}: column {date_column!r} does not parse as dates ({err})"
        ) from None
    if dates.isna().any():
        raise DataError(
            f"{source}: {int(dates.isna().sum())} missing timestamps in {date_column!r} "
            f"(first at row {int(np.flatnonzero(dates.isna())[0])}); remove or fill those rows"
        )
    values = df.drop(columns=[date_column])
    _check_numeric(values, source, date_column)
    if target is not None and target not in values.columns:
        raise DataError(
            f"{source}: target column {target!r} not found; columns are {list(values.columns)}. "
            f"Pass target=<column name>."
        )
    values = values.astype(np.float64)
    n_nan = values.isna().sum()
    if n_nan.any():
        if fill is None:
            cols = {c: int(n) for c, n in n_nan.items() if n}
            raise DataError(
                f"{source}: missing values (NaN) per column: {cols}. Clean the data or pass "
                f"fill='ffill', 'interpolate' or 'zero'."
            )
        _check_fill(fill)
        if fill == "ffill":
            values = values.ffill().bfill()
        elif fill == "interpolate":
            values = values.interpolate(limit_direction="both")
        else:
            values = values.fillna(0.0)
    if not np.isfinite(values.to_numpy()).all():
        raise DataError(f"{source}: infinite values in the data; remove them")
    cols = [c for c in values.columns if c != target] + ([target] if target is not None else [])
    out = pd.concat([dates.rename(date_column), values[cols]], axis=1)
    return out.reset_index(drop=True)


def _check_numeric(values: pd.DataFrame, source: str, date_column: Hashable) -> None:
    bad = [c for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
    if bad:
        raise DataError(
            f"{source}: non-numeric columns {bad}; every column but {date_column!r} must be a "
            f"number. Drop them or convert them (e.g. pd.to_numeric)."
        )
    if values.shape[1] == 0:
        raise DataError(f"{source}: no variable columns besides {date_column!r}")


_FILLS = (None, "ffill", "interpolate", "zero")


def _check_fill(fill: str | None) -> None:
    if fill not in _FILLS:
        raise DataError(f"unknown fill {fill!r}; choose None, 'ffill', 'interpolate' or 'zero'")


@dataclass(frozen=True)
class FrameInfo:
    """How a user's frame was laid out, to hand forecasts back in the same shape.

    Attributes:
        layout: ``"wide"`` (one column per series) or ``"long"`` (id, time, value rows).
        freq: pandas frequency alias of the regular timestamps (``"h"``, ``"D"``, ``"MS"``, ...).
        columns: series names in model order (wide column names, or the sorted long ids).
        date_name: name of the timestamps (the ``DatetimeIndex`` name, the date column or the
            long time column).
    """

    layout: str
    freq: str
    columns: tuple
    date_name: Hashable | None


def _show(stamps: Sequence, k: int = 3) -> str:
    shown = ", ".join(str(t) for t in list(stamps)[:k])
    return shown + (f", ... ({len(stamps)} in all)" if len(stamps) > k else "")


def _parse_dates(raw: pd.Series | pd.Index, name: Hashable, source: str) -> pd.DatetimeIndex:
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(raw))
    except (ValueError, TypeError) as err:
        raise DataError(f"{source}: {name!r} does not parse as dates ({err})") from None
    if dates.isna().any():
        raise DataError(
            f"{source}: {int(dates.isna().sum())} missing timestamps in {name!r} (first at row "
            f"{int(np.flatnonzero(dates.isna())[0])}); remove those rows or give them a date"
        )
    return dates


def infer_freq(dates: pd.DatetimeIndex) -> str | None:
    """``pd.infer_freq`` as an alias string (pandas 4 will return an offset; both are handled)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infer_freq.*")
        freq = pd.infer_freq(dates)
    if freq is None or isinstance(freq, str):
        return freq
    return freq.freqstr


def guess_freq(dates: pd.DatetimeIndex) -> str:
    """The frequency of (possibly irregular) timestamps: pandas' inference on all of them, else
    the alias most short runs agree on, else the most common step."""
    if len(dates) >= 3:
        freq = infer_freq(dates)
        if freq:
            return freq
        k = min(len(dates), 8)
        starts = np.unique(np.linspace(0, len(dates) - k, num=9).astype(int))
        votes = [f for f in (infer_freq(dates[i : i + k]) for i in starts) if f]
        if votes:
            return Counter(votes).most_common(1)[0][0]
    if len(dates) >= 2:
        step = Counter(np.diff(dates.asi8).tolist()).most_common(1)[0][0]
        return pd.tseries.frequencies.to_offset(pd.Timedelta(step, unit=dates.unit)).freqstr
    raise DataError("cannot tell the frequency from a single timestamp; pass freq=<pandas alias>")


def _regularize(
    dates: pd.DatetimeIndex, values: pd.DataFrame, freq: str | None, fill: str | None, source: str
) -> tuple[str, pd.DatetimeIndex, pd.DataFrame]:
    """Check that ``dates`` (sorted, unique) lie on a regular grid; with ``fill``, resample onto
    it (mean of the values in each step; the new empty steps are NaN, filled later)."""
    step = freq or guess_freq(dates)
    try:
        offset = pd.tseries.frequencies.to_offset(step)
    except ValueError:
        raise DataError(
            f"unknown freq {step!r}; use a pandas alias such as 'h', 'D', 'MS'"
        ) from None
    grid = pd.date_range(dates[0], dates[-1], freq=offset, unit=dates.unit)
    missing, off_grid = grid.difference(dates), dates.difference(grid)
    if not len(missing) and not len(off_grid):
        return offset.freqstr, dates, values
    if fill is None:
        where = []
        if len(missing):
            first = grid.get_loc(missing[0])
            after = f", the first gap after row {first - 1} ({grid[first - 1]})" if first else ""
            where.append(f"{len(missing)} timestamp(s) missing{after}: {_show(missing)}")
        if len(off_grid):
            where.append(
                f"{len(off_grid)} timestamp(s) off the grid, the first at row "
                f"{dates.get_loc(off_grid[0])}: {_show(off_grid)}"
            )
        own = guess_freq(dates) if freq is not None else None
        hint = (
            f" The timestamps look regular at {own!r}: pass freq={own!r}."
            if own and pd.tseries.frequencies.to_offset(own) != offset
            else ""
        )
        raise DataError(
            f"{source}: timestamps are not regular at frequency {offset.freqstr!r}: "
            f"{'; '.join(where)}.{hint} Pass fill='interpolate' (or 'ffill', 'zero') to resample "
            f"onto the {offset.freqstr!r} grid and fill the gaps, or freq=<pandas alias> if the "
            f"step is a different one."
        )
    frame = values.set_index(dates)
    if len(off_grid):
        frame = frame.resample(offset, origin="start").mean()
    else:
        frame = frame.reindex(grid)
    return offset.freqstr, pd.DatetimeIndex(frame.index), frame.reset_index(drop=True)


def _wide_parts(
    df: pd.DataFrame, date_column: str, long_columns: tuple[str, str, str], source: str
):
    if date_column in df.columns:
        if isinstance(df.index, pd.DatetimeIndex):
            raise DataError(
                f"{source}: both a DatetimeIndex and a {date_column!r} column; keep one of them "
                f"(e.g. df.reset_index(drop=True))"
            )
        raw, values, name = df[date_column], df.drop(columns=[date_column]), date_column
    elif isinstance(df.index, pd.DatetimeIndex):
        raw, values, name = df.index, df, df.index.name
    else:
        id_column, time_column, value_column = long_columns
        raise DataError(
            f"{source}: no timestamps; columns are {list(df.columns)}. Give the frame a "
            f"DatetimeIndex or a {date_column!r} column (or pass date_column=<its name>), or use "
            f"the long format with columns {id_column!r}, {time_column!r}, {value_column!r}."
        )
    dates = _parse_dates(raw, name if name is not None else "index", source)
    values = values.reset_index(drop=True)
    _check_numeric(values, source, name)
    if dates.has_duplicates:
        dup = dates[dates.duplicated()].unique()
        raise DataError(
            f"{source}: duplicate timestamps {_show(dup)}; aggregate them (e.g. "
            f"df.groupby(level=0).mean()) or drop them"
        )
    if not dates.is_monotonic_increasing:
        order = np.argsort(dates.asi8, kind="stable")
        dates, values = dates[order], values.iloc[order].reset_index(drop=True)
    return dates, values, name


def _long_parts(
    df: pd.DataFrame,
    id_column: str,
    time_column: str,
    value_column: str,
    fill: str | None,
    min_length: int,
    min_length_reason: str,
    source: str,
):
    need = [id_column, time_column, value_column]
    absent = [c for c in need if c not in df.columns]
    if absent:
        raise DataError(
            f"{source}: a long-format frame needs columns {need}; missing {absent} (columns are "
            f"{list(df.columns)}). Pass id_column=/time_column=/value_column= to name them."
        )
    extra = [c for c in df.columns if c not in need]
    if extra:
        raise DataError(
            f"{source}: extra columns {extra} in a long-format frame; only {value_column!r} is "
            f"forecast (exogenous variables are not supported): drop them"
        )
    if df[id_column].isna().any():
        raise DataError(f"{source}: {int(df[id_column].isna().sum())} rows without a series id")
    dates = _parse_dates(df[time_column], time_column, source)
    _check_numeric(df[[value_column]], source, time_column)
    rows = pd.DataFrame(
        {"id": df[id_column].to_numpy(), "ds": dates, "y": df[value_column].to_numpy()}
    )
    dup = rows.duplicated(["id", "ds"])
    if dup.any():
        pairs = list(zip(rows.loc[dup, "id"], rows.loc[dup, "ds"].astype(str)))
        raise DataError(
            f"{source}: {int(dup.sum())} duplicate ({id_column}, {time_column}) rows, e.g. "
            f"{pairs[:3]}; aggregate or drop them"
        )
    counts = rows.groupby("id", sort=True).size()
    short = counts[counts < min_length]
    if len(short):
        raise DataError(
            f"{source}: series shorter than {min_length} timestamps ({min_length_reason}): "
            f"{ {k: int(v) for k, v in short.items()} }; drop them or use shorter windows"
        )
    union = pd.DatetimeIndex(np.unique(dates))
    partial = counts[counts < len(union)]
    if len(partial) and fill is None:
        lacks = []
        for key in partial.index[:5]:
            gaps = union.difference(pd.DatetimeIndex(rows.loc[rows["id"] == key, "ds"]))
            lacks.append(f"{key!r} lacks {len(gaps)} of {len(union)} (first missing {gaps[0]})")
        more = f" and {len(partial) - 5} more" if len(partial) > 5 else ""
        raise DataError(
            f"{source}: series do not share the same timestamps: {'; '.join(lacks)}{more}. Every "
            f"series needs a value at every timestamp: trim them to a common range, or pass "
            f"fill='interpolate' (or 'ffill', 'zero') to fill the gaps."
        )
    wide = rows.pivot(index="ds", columns="id", values="y")
    wide.columns.name = None
    return pd.DatetimeIndex(wide.index), wide.reset_index(drop=True), time_column


def prepare_frame(
    df: pd.DataFrame,
    date_column: str = "date",
    id_column: str = "unique_id",
    time_column: str = "ds",
    value_column: str = "y",
    freq: str | None = None,
    fill: str | None = None,
    min_length: int = 1,
    min_length_reason: str = "",
    source: str = "frame",
) -> tuple[pd.DataFrame, FrameInfo]:
    """Check a user's frame and turn it into the wide frame the data module reads.

    The layout is **long** when ``id_column`` is a column (rows ``id_column, time_column,
    value_column``, pivoted with one column per id, ids sorted), else **wide**: the timestamps are
    the ``date_column`` column or the ``DatetimeIndex``, every other column a series.

    Args:
        df: the user's frame.
        date_column: wide timestamp column (also the date column of the result).
        id_column: long-format series id column.
        time_column: long-format timestamp column.
        value_column: long-format value column.
        freq: expected pandas frequency alias; ``None`` infers it.
        fill: ``None`` rejects gaps and NaNs; ``"ffill"``, ``"interpolate"`` or ``"zero"`` resample
            onto the regular grid (the mean of the values falling in each step) and fill the
            missing values and timestamps so.
        min_length: fewest timestamps each series needs.
        min_length_reason: why (for the error message).
        source: name of the data in error messages.

    Returns:
        ``(wide, info)``: ``wide`` has ``date_column`` (sorted, regular, unique) first and one
        float column per series; ``info`` records the layout, frequency, series and date name.

    Raises:
        DataError: no or unparseable timestamps, duplicates, timestamps off a regular grid or not
            shared by every series (the message lists where and which ids), non-numeric values,
            NaNs without ``fill``, or too few timestamps.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    _check_fill(fill)
    if len(df) == 0:
        raise DataError(f"{source}: the frame is empty")
    if not df.columns.is_unique:
        dup = df.columns[df.columns.duplicated()].unique().tolist()
        raise DataError(f"{source}: duplicate column names {dup}")
    if id_column in df.columns:
        layout = "long"
        dates, values, date_name = _long_parts(
            df, id_column, time_column, value_column, fill, min_length, min_length_reason, source
        )
    else:
        layout = "wide"
        dates, values, date_name = _wide_parts(
            df, date_column, (id_column, time_column, value_column), source
        )
    if date_column in values.columns:
        raise DataError(f"{source}: a series is named {date_column!r}, the date column; rename it")
    freq, dates, values = _regularize(dates, values, freq, fill, source)
    if len(dates) < min_length:
        reason = f" ({min_length_reason})" if min_length_reason else ""
        raise DataError(
            f"{source}: the series have {len(dates)} timestamps, fewer than the {min_length} "
            f"needed{reason}; use shorter windows or more data"
        )
    wide = pd.concat([pd.Series(dates, name=date_column), values.astype(np.float64)], axis=1)
    wide = validate_frame(wide, source=source, date_column=date_column, target=None, fill=fill)
    columns = tuple(c for c in wide.columns if c != date_column)
    return wide, FrameInfo(layout=layout, freq=freq, columns=columns, date_name=date_name)
