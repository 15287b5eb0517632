"""Checking forecasting data: CSV files and users' frames, wide or long, on a regular time grid.

Both routes, a CSV file (``read_forecast_csv``, what ``ForecastDataModule`` and ``mixerzoo fit``
read) and a pandas frame (``prepare_frame``, what ``ForecastDataModule.from_frame`` and the
``Forecaster`` read), go through the same checks with the same messages: parseable timestamps
(a bad one is named by its row), no duplicates, a regular grid shared by every series (gaps and
off-grid timestamps are errors that say where they are; ``fill=`` resamples onto the grid and
fills them), numeric values, no NaNs unless ``fill`` is given, and enough rows.

The grid's step is the caller's ``freq`` for frames (``None`` infers it), and always inferred from
the timestamps for CSV files (a data module's ``freq`` only chooses the time features there).
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
    """Read and check a forecasting CSV (a date column plus numeric variables).

    Args:
        path: CSV file.
        date_column: name of the timestamp column.
        target: column that must exist (moved last); ``None`` skips the check.
        fill: ``None`` makes gaps, off-grid timestamps and NaNs errors; ``"ffill"`` (forward then
            backward fill), ``"interpolate"`` (linear in time) or ``"zero"`` resample onto the
            regular grid and fill them.

    Returns:
        Frame with ``date_column`` parsed to datetimes first (sorted, regular, unique), the other
        variables after it and the target last.

    Raises:
        DataError: an empty or header-only file, a missing date column, unparseable dates (the
            row is named), duplicates, gaps or off-grid timestamps without ``fill``, non-numeric
            columns, NaNs without ``fill``, or a missing target column; the message names the
            file and says what to change.
    """
    return load_forecast_csv(path, date_column, target, fill)[0]


def load_forecast_csv(
    path: str | os.PathLike,
    date_column: str = "date",
    target: str | None = "OT",
    fill: str | None = None,
    min_length: int = 2,
    min_length_reason: str = "",
) -> tuple[pd.DataFrame, FrameInfo]:
    """``read_forecast_csv`` that also returns the ``FrameInfo`` (the grid's step in ``freq``).

    Args:
        path, date_column, target, fill: as :func:`read_forecast_csv`.
        min_length: fewest timestamps the file needs.
        min_length_reason: why (for the error message).
    """
    source = str(path)
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{source}: the file is empty (0 bytes); a forecasting CSV has a header line (the "
            f"date column, then the variables) and one line per timestamp"
        ) from None
    if len(df) == 0:
        raise DataError(
            f"{source}: a header ({', '.join(map(str, df.columns))}) and no rows; add one line "
            f"per timestamp"
        )
    wide, info = prepare_frame(
        df,
        date_column=date_column,
        fill=fill,
        min_length=min_length,
        min_length_reason=min_length_reason,
        source=source,
        freq_from="data",
        line_numbers=True,
    )
    if target is not None:
        if target not in info.columns:
            raise DataError(
                f"{source}: target column {target!r} not found; columns are "
                f"{list(info.columns)}. Pass target=<column name>."
            )
        columns = (*(c for c in info.columns if c != target), target)
        wide = wide[[date_column, *columns]]
        info = FrameInfo(info.layout, info.freq, columns, info.date_name)
    return wide, info


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
    dates = pd.Series(_parse_dates(df[date_column], date_column, source), index=df.index)
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


def _parse_dates(
    raw: pd.Series | pd.Index, name: Hashable, source: str, line_numbers: bool = False
) -> pd.DatetimeIndex:
    """Timestamps of ``raw``; an unparseable or missing one is an error naming its row (and,
    with ``line_numbers``, its line in a CSV file whose first line is the header)."""

    def where(row: int) -> str:
        return f"row {row}" + (f" (line {row + 2} of the file)" if line_numbers else "")

    try:
        dates = pd.DatetimeIndex(pd.to_datetime(raw))
    except (ValueError, TypeError) as err:
        texts = np.asarray(raw, dtype=object)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(pd.Series(texts), errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy() & ~pd.isna(texts))
        if len(bad):
            row = int(bad[0])
            raise DataError(
                f"{source}: {name!r} {where(row)}: {texts[row]!r} is not a date ({err}); correct "
                f"or remove that row"
            ) from None
        raise DataError(f"{source}: {name!r} does not parse as dates ({err})") from None
    if dates.isna().any():
        raise DataError(
            f"{source}: {int(dates.isna().sum())} missing timestamps in {name!r} (first at "
            f"{where(int(np.flatnonzero(dates.isna())[0]))}); remove those rows or give them a "
            f"date"
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
    raise DataError("cannot tell the time step from a single timestamp; give at least two")


# Where the grid's step comes from, for the hint of an irregular-timestamps error.
_FREQ_FROM = ("argument", "data", "model")


def _regularize(
    dates: pd.DatetimeIndex,
    values: pd.DataFrame,
    freq: str | None,
    fill: str | None,
    source: str,
    freq_from: str = "argument",
) -> tuple[str, pd.DatetimeIndex, pd.DataFrame]:
    """Check that ``dates`` (sorted, unique) lie on a regular grid; with ``fill``, resample onto
    it (mean of the values in each step; the new empty steps are NaN, filled later).

    ``freq_from`` says where ``freq`` comes from, so that the error names something the user can
    change: ``"argument"`` (the caller's ``freq=``, ``None`` infers it), ``"data"`` (always
    inferred, no option: CSV files) or ``"model"`` (the step a trained model works at). With an
    inferred step the message is the same for every route.
    """
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
        if own is not None and pd.tseries.frequencies.to_offset(own) == offset:
            own = None
        grid_name = f"the {offset.freqstr!r} grid"
        if freq_from == "model":
            hint = (
                f" The model was trained on {offset.freqstr!r} data"
                + (f" and these look regular at {own!r}" if own else "")
                + f": give timestamps at that step (e.g. df.resample({offset.freqstr!r}).mean()),"
                f" or pass fill='interpolate' (or 'ffill', 'zero') to resample onto {grid_name}."
            )
        else:
            hint = f" The timestamps look regular at {own!r}: pass freq={own!r}." if own else ""
            hint += (
                f" Pass fill='interpolate' (or 'ffill', 'zero') to resample onto {grid_name} and "
                f"fill the gaps."
            )
        raise DataError(
            f"{source}: timestamps are not regular at frequency {offset.freqstr!r}: "
            f"{'; '.join(where)}.{hint}"
        )
    frame = values.set_index(dates)
    if len(off_grid):
        frame = frame.resample(offset, origin="start").mean()
    else:
        frame = frame.reindex(grid)
    return offset.freqstr, pd.DatetimeIndex(frame.index), frame.reset_index(drop=True)


def _wide_parts(
    df: pd.DataFrame,
    date_column: str,
    long_columns: tuple[str, str, str],
    source: str,
    line_numbers: bool = False,
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
            f"{source}: no date column {date_column!r}; columns are {list(df.columns)}. Name the "
            f"timestamp column {date_column!r} or pass date_column=<its name> (a frame may also "
            f"have a DatetimeIndex, or the long format with columns {id_column!r}, "
            f"{time_column!r}, {value_column!r})."
        )
    dates = _parse_dates(raw, name if name is not None else "index", source, line_numbers)
    values = values.reset_index(drop=True)
    _check_numeric(values, source, name)
    if dates.has_duplicates:
        repeated = dates.duplicated(keep=False)
        dup = dates[dates.duplicated()].unique()
        rows = np.flatnonzero(repeated & (dates == dup[0]))
        more = f", and {len(dup) - 1} more: {_show(dup[1:])}" if len(dup) > 1 else ""
        raise DataError(
            f"{source}: duplicate timestamps {dup[0]} (rows "
            f"{', '.join(map(str, rows[:-1]))} and {rows[-1]}){more}; keep one row per timestamp "
            f"(drop the repeats or average them)"
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
    min_length: int = 2,
    min_length_reason: str = "",
    source: str = "frame",
    freq_from: str = "argument",
    line_numbers: bool = False,
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
        min_length: fewest timestamps each series needs (at least two: one time step).
        min_length_reason: why (for the error message).
        source: name of the data in error messages.
        freq_from: where ``freq`` comes from, for the hint of an irregular-grid error:
            ``"argument"`` (the caller's option), ``"data"`` (inferred, a CSV file) or
            ``"model"`` (the step a trained model works at).
        line_numbers: name a bad date's line in a CSV file besides its row.

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
    if freq_from not in _FREQ_FROM:
        raise ValueError(f"freq_from must be one of {_FREQ_FROM}, got {freq_from!r}")
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
            df, date_column, (id_column, time_column, value_column), source, line_numbers
        )
    if date_column in values.columns:
        raise DataError(f"{source}: a series is named {date_column!r}, the date column; rename it")
    reason = f" ({min_length_reason})" if min_length_reason else ""
    if len(dates) < 2:
        raise DataError(
            f"{source}: one timestamp ({dates[0]}) only; a series needs at least "
            f"{max(min_length, 2)}{reason or ' (two for a time step)'}"
        )
    freq, dates, values = _regularize(dates, values, freq, fill, source, freq_from)
    if len(dates) < min_length:
        raise DataError(
            f"{source}: the series have {len(dates)} timestamps, fewer than the {min_length} "
            f"needed{reason}; use shorter windows or more data"
        )
    wide = pd.concat([pd.Series(dates, name=date_column), values.astype(np.float64)], axis=1)
    wide = validate_frame(wide, source=source, date_column=date_column, target=None, fill=fill)
    columns = tuple(c for c in wide.columns if c != date_column)
    return wide, FrameInfo(layout=layout, freq=freq, columns=columns, date_name=date_name)
