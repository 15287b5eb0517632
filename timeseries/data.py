"""Long-term forecasting data: the standard benchmark CSVs and their exact protocol.

The protocol is Time-Series-Library's (``data_provider/data_loader.py``: ``Dataset_ETT_hour``,
``Dataset_ETT_minute``, ``Dataset_Custom``), used by Informer, Autoformer, iTransformer and S-Mamba:

- **Splits** by rows. ETT hourly (``ETTh1``, ``ETTh2``): train ``[0, 8640)``, val
  ``[8640 - L, 11520)``, test ``[11520 - L, 14400)`` with ``L`` the lookback (12/4/4 months of 30
  days); ETT 15-minute (``ETTm1``, ``ETTm2``): the same borders times 4. Any other CSV: 70% train,
  20% test (``int`` of the fractions), the rest validation, with val and test starting ``L`` rows
  early so that their first window's lookback is the end of the previous split.
- **Columns**: a ``date`` column, then the variables; the target (default ``OT``) is moved last.
  Features mode ``M``: all variables in and out; ``S``: the target only; ``MS``: all in, the target
  out (the task scores the last column).
- **Scaling**: ``StandardScaler`` (population std) fit on the training rows only, applied to all.
- **Windows**: stride 1; window ``i`` has lookback rows ``[i, i + L)``, decoder rows
  ``[i + L - label_len, i + L + H)``; a split of ``n`` rows holds ``n - L - H + 1`` windows, and
  none is dropped (ETTh1, L = H = 96: 8,449 / 2,785 / 2,785).
- **Time features** (``timeenc=1``, "timeF"): calendar fields scaled to ``[-0.5, 0.5]``, chosen by
  ``freq`` as in ``utils/timefeatures.py``; ``timeenc=0`` gives the raw integer fields (month, day,
  weekday, hour[, minute // 15]) used by fixed/learned temporal embeddings. Like
  Time-Series-Library, ``freq`` defaults to ``"h"`` for every dataset (its published numbers were
  produced so), pass ``freq=None`` to infer it from the dates instead.

Finding data: an explicit ``root`` folder, else ``$MIXERZOO_DATA`` (``<it>/timeseries/<file>`` or
``<it>/<file>``), else the cache ``~/.cache/mixerzoo/timeseries``, else a download from the
dataset's public URL (ETT only) into the cache. Offline, the error names every place it looked.

Your own data: ``ForecastDataModule.from_frame(df, ...)`` takes a pandas frame instead of a file,
either **wide** (a ``DatetimeIndex`` or a date column, one column per series) or **long**
(``unique_id``, ``ds``, ``y`` rows, as neuralforecast and statsforecast use; pivoted to wide).
``prepare_frame`` checks it: parseable, unique timestamps on a regular grid shared by every series
(the error says where it is not; ``fill=`` resamples onto the grid and fills the gaps), no NaNs
unless ``fill`` is given, and enough rows for the windows. Frames split by the ratio protocol
(fractions adjustable); ``protocol="all"`` makes the whole frame one test split and
``predict_split="future"`` forecasts the ``H`` steps after its last timestamp.
"""

from __future__ import annotations

import os
import urllib.request
import warnings
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

__all__ = [
    "ForecastDataModule",
    "ForecastWindows",
    "FutureWindow",
    "FrameInfo",
    "StandardScaler",
    "find_dataset",
    "prepare_frame",
    "read_forecast_csv",
    "split_borders",
    "time_features",
    "validate_frame",
    "DataError",
]

# Public locations of the ETT files (the Informer authors' repository).
_ETT_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{name}"
_DOWNLOADS = {
    f"{n}.csv": _ETT_URL.format(name=f"{n}.csv") for n in ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
}
_HOW_TO_GET = (
    "The standard long-term forecasting CSVs (ETT, Weather, Electricity, Traffic, Exchange, ILI) "
    "are distributed with Time-Series-Library and Autoformer (see their READMEs); put the file in "
    "one of these folders or pass root=..."
)


class DataError(ValueError):
    """A data file or frame that cannot be used as it is; the message says how to fix it."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mixerzoo" / "timeseries"


def find_dataset(
    data_path: str, root: str | os.PathLike | None = None, download: bool = True
) -> Path:
    """Locate a forecasting CSV by file name.

    Args:
        data_path: a file name such as ``"ETTh1.csv"`` (``.csv`` optional) or a path to a file.
        root: folder to look in first; when given, only this folder is searched.
        download: allow downloading files with a known public URL into the cache.

    Returns:
        Path of the existing file.

    Raises:
        FileNotFoundError: naming every place looked at and how to get the data.
    """
    direct = Path(data_path).expanduser()
    if direct.is_file():
        return direct
    name = direct.name if direct.suffix else f"{direct.name}.csv"
    candidates: list[Path] = []
    if root is not None:
        candidates.append(Path(root).expanduser() / name)
    else:
        env = os.environ.get("MIXERZOO_DATA")
        if env:
            candidates += [Path(env) / "timeseries" / name, Path(env) / name]
        candidates.append(_cache_dir() / name)
    for path in candidates:
        if path.is_file():
            return path
    download_error = ""
    if root is None and download and name in _DOWNLOADS:
        target = _cache_dir() / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            urllib.request.urlretrieve(_DOWNLOADS[name], tmp)  # noqa: S310 (fixed https URL)
            tmp.rename(target)
            return target
        except OSError as err:
            download_error = f" Downloading {_DOWNLOADS[name]} failed: {err}."
    looked = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"forecasting data file {name!r} not found; looked in: {looked}.{download_error} "
        f"{_HOW_TO_GET} (or set MIXERZOO_DATA)."
    )


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


# --- user frames: wide or long, checked for a regular shared time grid ----------------------


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


def _infer_freq(dates: pd.DatetimeIndex) -> str | None:
    """``pd.infer_freq`` as an alias string (pandas 4 will return an offset; both are handled)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infer_freq.*")
        freq = pd.infer_freq(dates)
    if freq is None or isinstance(freq, str):
        return freq
    return freq.freqstr


def _guess_freq(dates: pd.DatetimeIndex) -> str:
    """The frequency of (possibly irregular) timestamps: pandas' inference on all of them, else
    the alias most short runs agree on, else the most common step."""
    if len(dates) >= 3:
        freq = _infer_freq(dates)
        if freq:
            return freq
        k = min(len(dates), 8)
        starts = np.unique(np.linspace(0, len(dates) - k, num=9).astype(int))
        votes = [f for f in (_infer_freq(dates[i : i + k]) for i in starts) if f]
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
    step = freq or _guess_freq(dates)
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
        own = _guess_freq(dates) if freq is not None else None
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


def split_borders(
    n_rows: int,
    seq_len: int,
    protocol: str,
    train_fraction: float = 0.7,
    test_fraction: float = 0.2,
) -> list[tuple[int, int]]:
    """Row ranges ``[(start, end)]`` of the train, val and test splits.

    Args:
        n_rows: rows in the file.
        seq_len: lookback ``L``; val and test start ``L`` rows before their first target row.
        protocol: ``"ett_hour"``, ``"ett_minute"``, ``"ratio"`` (``int(n * train_fraction)``
            train rows, ``int(n * test_fraction)`` test rows, the rest validation; 70/10/20 by
            default), ``"all"`` (every row is the test split; for evaluating a trained model) or
            ``"none"`` (no split; for forecasting past the end only).
        train_fraction: ``"ratio"`` only.
        test_fraction: ``"ratio"`` only; 0 leaves no test split.

    An empty split is returned as ``(end, end)``.
    """
    if protocol in ("ett_hour", "ett_minute"):
        k = 4 if protocol == "ett_minute" else 1
        month = 30 * 24 * k
        ends = [12 * month, 16 * month, 20 * month]
        if n_rows < ends[-1]:
            raise DataError(
                f"the {protocol} protocol needs at least {ends[-1]} rows (20 months), the file has "
                f"{n_rows}; use protocol='ratio' for other data"
            )
        starts = [0, ends[0] - seq_len, ends[1] - seq_len]
    elif protocol == "ratio":
        if not (
            0 < train_fraction <= 1 and 0 <= test_fraction and train_fraction + test_fraction <= 1
        ):
            raise ValueError(
                f"need 0 < train_fraction <= 1, 0 <= test_fraction and train_fraction + "
                f"test_fraction <= 1; got {train_fraction} and {test_fraction}"
            )
        n_train = int(n_rows * train_fraction)
        n_test = int(n_rows * test_fraction)
        n_val = n_rows - n_train - n_test
        starts = [
            0,
            n_train - seq_len if n_val else n_train,
            n_rows - n_test - seq_len if n_test else n_rows,
        ]
        ends = [n_train, n_train + n_val, n_rows]
    elif protocol == "all":
        return [(0, 0), (0, 0), (0, n_rows)]
    elif protocol == "none":
        return [(0, 0), (0, 0), (n_rows, n_rows)]
    else:
        raise ValueError(
            f"unknown split protocol {protocol!r}; use 'ett_hour', 'ett_minute', 'ratio', 'all' or "
            f"'none'"
        )
    if seq_len >= ends[0]:
        raise DataError(
            f"lookback seq_len={seq_len} is longer than the training split ({ends[0]} rows); "
            f"use a shorter lookback or more data"
        )
    return list(zip(starts, ends))


def protocol_for(file_name: str) -> str:
    """The split protocol Time-Series-Library uses for a file: ETTh*/ETTm* or the 70/10/20 ratio."""
    stem = Path(file_name).stem
    if stem.startswith("ETTh"):
        return "ett_hour"
    if stem.startswith("ETTm"):
        return "ett_minute"
    return "ratio"


# Calendar features of utils/timefeatures.py: each maps a DatetimeIndex to [-0.5, 0.5].
_FEATURES = {
    "second_of_minute": lambda d: d.second / 59.0 - 0.5,
    "minute_of_hour": lambda d: d.minute / 59.0 - 0.5,
    "hour_of_day": lambda d: d.hour / 23.0 - 0.5,
    "day_of_week": lambda d: d.day_of_week / 6.0 - 0.5,
    "day_of_month": lambda d: (d.day - 1) / 30.0 - 0.5,
    "day_of_year": lambda d: (d.day_of_year - 1) / 365.0 - 0.5,
    "month_of_year": lambda d: (d.month - 1) / 11.0 - 0.5,
    "week_of_year": lambda d: (d.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5,
}
_DAY = ["day_of_week", "day_of_month", "day_of_year"]
_FREQ_FEATURES = {
    "y": [],
    "q": ["month_of_year"],
    "m": ["month_of_year"],
    "w": ["day_of_month", "week_of_year"],
    "d": _DAY,
    "b": _DAY,
    "h": ["hour_of_day", *_DAY],
    "t": ["minute_of_hour", "hour_of_day", *_DAY],
    "s": ["second_of_minute", "minute_of_hour", "hour_of_day", *_DAY],
}
_FREQ_ALIASES = {
    "min": "t",
    "a": "y",
    "ye": "y",
    "ys": "y",
    "me": "m",
    "ms": "m",
    "bme": "m",
    "bms": "m",
    "qe": "q",
    "qs": "q",
    "bh": "h",
    "10min": "t",
}


def _freq_key(freq: str) -> str:
    # Anchored pandas aliases ("W-SUN", "QS-OCT", "YE-DEC") share the features of their base.
    key = freq.lower().lstrip("0123456789").split("-")[0]
    key = _FREQ_ALIASES.get(key, key)
    if key not in _FREQ_FEATURES:
        raise ValueError(
            f"unsupported freq {freq!r}; use one of s, t (minutes), h, d, b, w, m, q, y"
        )
    return key


def time_features(
    dates: pd.DatetimeIndex | Sequence, freq: str = "h", timeenc: int = 1
) -> np.ndarray:
    """Time-stamp features ``[T, F]`` of Time-Series-Library.

    Args:
        dates: timestamps.
        freq: data frequency (``"h"``, ``"t"``/``"min"``, ``"d"``, ``"w"``, ``"m"``, ...).
        timeenc: 1 for scaled "timeF" features, 0 for the integer fields
            ``[month, day, weekday, hour]`` (plus ``minute // 15`` for minute data).
    """
    index = pd.DatetimeIndex(pd.to_datetime(dates))
    key = _freq_key(freq)
    if timeenc == 0:
        cols = [index.month, index.day, index.day_of_week, index.hour]
        if key in ("t", "s"):
            cols.append(index.minute // 15)
        return np.stack([np.asarray(c) for c in cols], axis=1).astype(np.float32)
    if timeenc != 1:
        raise ValueError(f"timeenc must be 0 or 1, got {timeenc}")
    feats = [np.asarray(_FEATURES[name](index), dtype=np.float64) for name in _FREQ_FEATURES[key]]
    if not feats:
        return np.zeros((len(index), 0), dtype=np.float32)
    return np.stack(feats, axis=1).astype(np.float32)


@dataclass
class StandardScaler:
    """Per-column standardisation (population std, as scikit-learn's ``StandardScaler``)."""

    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def fit(self, data: np.ndarray) -> StandardScaler:
        self.mean = data.mean(axis=0)
        std = data.std(axis=0)
        # Constant columns: leave them centred rather than dividing by zero (scikit-learn does so).
        self.std = np.where(std > 0, std, 1.0)
        return self

    def transform(self, data: np.ndarray) -> np.ndarray:
        return (data - self.mean) / self.std

    def inverse_transform(self, data: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Undo ``transform`` on ``[..., C]`` arrays or tensors (C = all columns, or 1 = target)."""
        mean, std = self.mean, self.std
        if data.shape[-1] == 1 and mean.shape[-1] != 1:
            mean, std = mean[-1:], std[-1:]
        if isinstance(data, torch.Tensor):
            return data * torch.as_tensor(
                std, dtype=data.dtype, device=data.device
            ) + torch.as_tensor(mean, dtype=data.dtype, device=data.device)
        return data * std + mean


class ForecastWindows(Dataset):
    """Sliding windows (stride 1) over one split.

    Each item is a dict of float32 tensors: ``x [L, C]`` (lookback), ``x_mark [L, F]``,
    ``y [label_len + H, C]`` (decoder start token + horizon) and ``y_mark [label_len + H, F]``.
    """

    def __init__(
        self, data: np.ndarray, marks: np.ndarray, seq_len: int, label_len: int, pred_len: int
    ):
        n = len(data) - seq_len - pred_len + 1
        if n <= 0:
            raise DataError(
                f"a split of {len(data)} rows is too short for lookback {seq_len} + horizon "
                f"{pred_len}; use shorter windows or more data"
            )
        self.data = torch.as_tensor(data, dtype=torch.float32)
        self.marks = torch.as_tensor(marks, dtype=torch.float32)
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self._len = n

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self._len:
            raise IndexError(i)
        s_end = i + self.seq_len
        r_begin = s_end - self.label_len
        r_end = s_end + self.pred_len
        return {
            "x": self.data[i:s_end],
            "x_mark": self.marks[i:s_end],
            "y": self.data[r_begin:r_end],
            "y_mark": self.marks[r_begin:r_end],
        }

    def gather(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The batch of windows ``indices`` in four gathers: equal to stacking ``self[i]``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self._len):
            bad = [i for i in indices if not 0 <= i < self._len]
            raise IndexError(f"window index {bad[0]} out of range for {self._len} windows")
        x_rows = idx[:, None] + torch.arange(self.seq_len)
        y_rows = idx[:, None] + (
            self.seq_len - self.label_len + torch.arange(self.label_len + self.pred_len)
        )
        return {
            "x": self.data[x_rows],
            "x_mark": self.marks[x_rows],
            "y": self.data[y_rows],
            "y_mark": self.marks[y_rows],
        }


class _Batched(Dataset):
    """A dataset that hands ``DataLoader`` whole batches (``__getitems__``) through its ``gather``.

    The data module's loaders use it (with ``_pass_batches`` as collate function), so that a batch
    costs four gathers instead of ``4 x batch_size`` slices and a stack; the wrapped dataset stays
    an ordinary one for any other loader.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i]

    def __getitems__(self, indices: list[int]):
        gather = getattr(self.dataset, "gather", None)
        return gather(indices) if gather is not None else [self.dataset[i] for i in indices]


def _pass_batches(batch: list[dict[str, torch.Tensor]] | dict[str, torch.Tensor]):
    """``default_collate``, except for a batch that ``_Batched`` already gathered."""
    return batch if isinstance(batch, dict) else default_collate(batch)


class FutureWindow(Dataset):
    """The one window that forecasts past the end of the data.

    Its item has the keys of ``ForecastWindows``: ``x [L, C]`` and ``x_mark [L, F]`` are the last
    ``L`` rows; ``y [label_len + H, C]`` is the known start token (the last ``label_len`` rows)
    followed by ``H`` zeros standing for the unknown future, and ``y_mark`` the time features of the
    start token and of the ``H`` future timestamps (so that the task's decoder input is the usual
    one; the zeros are never a target).
    """

    def __init__(
        self,
        data: np.ndarray,
        marks: np.ndarray,
        future_marks: np.ndarray,
        seq_len: int,
        label_len: int,
        pred_len: int,
    ):
        if len(data) < seq_len:
            raise DataError(
                f"forecasting needs the last lookback seq_len={seq_len} rows, the data has "
                f"{len(data)}; give a longer history"
            )
        if len(future_marks) != pred_len:
            raise ValueError(f"need {pred_len} future time-feature rows, got {len(future_marks)}")
        data = torch.as_tensor(data[len(data) - seq_len :], dtype=torch.float32)
        marks = torch.as_tensor(marks[len(marks) - seq_len :], dtype=torch.float32)
        future = torch.as_tensor(future_marks, dtype=torch.float32)
        start = seq_len - label_len
        self.item = {
            "x": data,
            "x_mark": marks,
            "y": torch.cat([data[start:], data.new_zeros(pred_len, data.shape[1])]),
            "y_mark": torch.cat([marks[start:], future]),
        }

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i not in (0, -1):
            raise IndexError(i)
        return self.item


class ForecastDataModule(pl.LightningDataModule):
    """The standard long-term forecasting benchmark protocol (see the module docstring).

    Args:
        data_path: CSV file name (``"ETTh1.csv"``) or path.
        root: folder holding the file (else ``$MIXERZOO_DATA``, the cache, then a download).
        features: ``"M"``, ``"S"`` or ``"MS"``.
        target: target column, moved last.
        seq_len: lookback ``L``.
        label_len: decoder start-token length (encoder-decoder models).
        pred_len: horizon ``H``.
        freq: frequency for time features (default ``"h"`` as Time-Series-Library; None infers).
        timeenc: 1 for "timeF" features, 0 for integer calendar fields.
        protocol: ``"auto"`` (by file name), ``"ett_hour"``, ``"ett_minute"`` or ``"ratio"``.
        scale: standardise with statistics of the training rows.
        batch_size: windows per batch.
        num_workers: DataLoader workers.
        fill: missing-value policy (see ``read_forecast_csv``).
        date_column: timestamp column name.
        train_fraction: training share of the ``"ratio"`` protocol.
        test_fraction: test share of the ``"ratio"`` protocol (0: no test split).
        predict_split: what ``predict`` runs on: ``"test"`` (every test window, the default),
            ``"val"``, ``"train"`` or ``"future"`` (the ``H`` steps after the last row; the
            ``true`` arrays of that prediction are placeholders).

    A pandas frame instead of a file: ``ForecastDataModule.from_frame(df, ...)``.
    """

    def __init__(
        self,
        data_path: str = "ETTh1.csv",
        root: str | None = None,
        features: str = "M",
        target: str = "OT",
        seq_len: int = 96,
        label_len: int = 48,
        pred_len: int = 96,
        freq: str | None = "h",
        timeenc: int = 1,
        protocol: str = "auto",
        scale: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        fill: str | None = None,
        date_column: str = "date",
        train_fraction: float = 0.7,
        test_fraction: float = 0.2,
        predict_split: str = "test",
    ):
        super().__init__()
        if features not in ("M", "S", "MS"):
            raise ValueError(f"features must be 'M', 'S' or 'MS', got {features!r}")
        if predict_split not in ("train", "val", "test", "future"):
            raise ValueError(
                f"predict_split must be 'train', 'val', 'test' or 'future', got {predict_split!r}"
            )
        for name, value in (
            ("seq_len", seq_len),
            ("pred_len", pred_len),
            ("batch_size", batch_size),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not 0 <= label_len <= seq_len:
            raise ValueError(f"label_len must be in [0, seq_len={seq_len}], got {label_len}")
        self.save_hyperparameters()
        self.data_path, self.root, self.features, self.target = data_path, root, features, target
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.freq, self.timeenc, self.scale = freq, timeenc, scale
        self.protocol = protocol
        self.batch_size, self.num_workers = batch_size, num_workers
        self.fill, self.date_column = fill, date_column
        self.train_fraction, self.test_fraction = train_fraction, test_fraction
        self.predict_split = predict_split
        self.scaler = StandardScaler()
        self.splits: dict[str, ForecastWindows | FutureWindow] = {}
        self.dates: dict[str, pd.DatetimeIndex] = {}
        self.columns: list[str] = []
        self.frame_info: FrameInfo | None = None
        self._frame: pd.DataFrame | None = None
        self._scaler_given = False
        self._is_setup = False

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        freq: str | None = None,
        fill: str | None = None,
        target: str | None = None,
        columns: Sequence[Hashable] | None = None,
        scaler: StandardScaler | None = None,
        id_column: str = "unique_id",
        time_column: str = "ds",
        value_column: str = "y",
        date_column: str = "date",
        **kwargs,
    ) -> ForecastDataModule:
        """A data module over a pandas frame instead of a CSV file.

        Args:
            df: wide frame (``DatetimeIndex`` or ``date_column``, one column per series) or long
                frame (``id_column``, ``time_column``, ``value_column``); see ``prepare_frame``.
            freq: pandas frequency alias of the timestamps; ``None`` infers it. It sets both the
                time features and the future timestamps.
            fill: ``None`` (gaps and NaNs are errors) or ``"ffill"``/``"interpolate"``/
                ``"zero"`` (resample onto the regular grid and fill).
            target: target column for features ``S``/``MS`` (moved last); ``None`` for ``M``.
            columns: the series the frame must hold exactly (e.g. those a model was trained
                on); they are put in this order. Unknown or missing ids are a ``DataError``.
            scaler: fitted statistics to use instead of fitting on the training rows (needed by
                the ``"all"`` and ``"none"`` protocols, which have no training rows).
            id_column: long-format id column.
            time_column: long-format timestamp column.
            value_column: long-format value column.
            date_column: wide timestamp column.
            **kwargs: the other constructor arguments (``seq_len``, ``pred_len``, ``protocol``
                (``"auto"`` means ``"ratio"`` here), ``predict_split``, ``batch_size``, ...);
                ``label_len`` defaults to ``seq_len // 2``.

        Raises:
            DataError: bad frames (see ``prepare_frame``), series that the frame must (not) hold,
                or a frame shorter than the windows need.
        """
        # Time-Series-Library's habit (label_len = seq_len / 2), also for short windows.
        kwargs.setdefault("label_len", kwargs.get("seq_len", 96) // 2)
        dm = cls(
            data_path="<frame>",
            freq=freq,
            fill=fill,
            target=target,
            date_column=date_column,
            **kwargs,
        )
        if dm.protocol == "none":
            need, why = dm.seq_len, f"the lookback seq_len={dm.seq_len}"
        else:
            need = dm.seq_len + dm.pred_len
            why = f"lookback seq_len={dm.seq_len} + horizon pred_len={dm.pred_len}"
        wide, info = prepare_frame(
            df,
            date_column=date_column,
            id_column=id_column,
            time_column=time_column,
            value_column=value_column,
            freq=freq,
            fill=fill,
            min_length=need,
            min_length_reason=why,
        )
        if columns is not None:
            columns = list(columns)
            unknown = [c for c in info.columns if c not in columns]
            missing = [c for c in columns if c not in info.columns]
            if unknown or missing:
                parts = [f"series not seen in training: {unknown}"] if unknown else []
                parts += [f"missing series: {missing}"] if missing else []
                raise DataError(
                    f"frame: {'; '.join(parts)}. The model was trained on exactly {columns}; "
                    f"give a frame with those series (a new set of series needs a new fit)."
                )
            wide = wide[[date_column, *columns]]
            info = FrameInfo(info.layout, info.freq, tuple(columns), info.date_name)
        if target is not None:
            if target not in info.columns:
                raise DataError(
                    f"frame: target column {target!r} not found; series are {list(info.columns)}"
                )
            wide = wide[[date_column, *(c for c in info.columns if c != target), target]]
        elif dm.features != "M":
            raise ValueError(f"features={dm.features!r} needs a target=<series name>")
        if scaler is not None:
            if scaler.mean is None:
                raise ValueError("the given scaler is not fitted")
            dm.scaler = StandardScaler(
                np.array(scaler.mean, dtype=np.float64), np.array(scaler.std, dtype=np.float64)
            )
            dm._scaler_given = True
        dm._frame, dm._source, dm.frame_info, dm.freq = wide, "frame", info, info.freq
        return dm

    @property
    def target_only_output(self) -> bool:
        """True when only the last (target) column is scored (features ``S`` or ``MS``)."""
        return self.features in ("S", "MS")

    def load_frame(self) -> pd.DataFrame:
        """Read and validate the CSV (cached after the first call)."""
        if self._frame is None:
            path = find_dataset(self.data_path, self.root)
            self._frame = read_forecast_csv(path, self.date_column, self.target, self.fill)
            self._source = str(path)
        return self._frame

    def setup(self, stage: str | None = None) -> None:
        if self._is_setup:
            return
        df = self.load_frame()
        protocol = self.protocol
        if protocol == "auto":
            protocol = "ratio" if self.frame_info is not None else protocol_for(self.data_path)
        borders = split_borders(
            len(df), self.seq_len, protocol, self.train_fraction, self.test_fraction
        )
        value_cols = [c for c in df.columns if c != self.date_column]
        if self.features == "S":
            value_cols = [self.target]
        self.columns = value_cols
        values = df[value_cols].to_numpy(dtype=np.float64)
        if self.scale:
            if not self._scaler_given:
                train_start, train_end = borders[0]
                if train_end <= train_start:
                    raise DataError(
                        f"protocol {protocol!r} has no training rows to fit the scaler on; pass "
                        f"a fitted scaler (from_frame(..., scaler=...)) or scale=False"
                    )
                self.scaler.fit(values[train_start:train_end])
            elif np.shape(self.scaler.mean) != (values.shape[1],):
                raise DataError(
                    f"the scaler has statistics for {np.size(self.scaler.mean)} columns, the data "
                    f"has {values.shape[1]}"
                )
            values = self.scaler.transform(values)
        dates = pd.DatetimeIndex(df[self.date_column])
        freq = self.freq or _infer_freq(dates[:1000]) or "h"
        marks = time_features(dates, freq, self.timeenc)
        for split, (start, end) in zip(("train", "val", "test"), borders):
            if end > start:
                self.splits[split] = ForecastWindows(
                    values[start:end], marks[start:end], self.seq_len, self.label_len, self.pred_len
                )
                self.dates[split] = dates[start:end]
        if self.predict_split == "future":
            # The step of the data itself: a CSV keeps Time-Series-Library's freq="h" for its time
            # features whatever its real step, but its future timestamps must follow the data.
            step = (
                self.frame_info.freq if self.frame_info is not None else _guess_freq(dates[-1000:])
            )
            future = pd.date_range(dates[-1], periods=self.pred_len + 1, freq=step)[1:]
            self.splits["future"] = FutureWindow(
                values,
                marks,
                time_features(future, freq, self.timeenc),
                self.seq_len,
                self.label_len,
                self.pred_len,
            )
            self.dates["future"] = future
        self._is_setup = True

    @property
    def n_features(self) -> int:
        """Number of input variables ``C`` (after ``setup``)."""
        return len(self.columns)

    def _loader(self, split: str, shuffle: bool, drop_last: bool) -> DataLoader:
        self.setup()
        if split not in self.splits:
            raise DataError(
                f"this data module has no {split!r} split (protocol {self.protocol!r}, "
                f"splits: {sorted(self.splits)})"
            )
        return DataLoader(
            _Batched(self.splits[split]),
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=_pass_batches,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        # Time-Series-Library drops the last incomplete training batch (unless none would be left);
        # evaluation loaders never drop a window.
        train = self.splits.get("train")
        drop_last = train is not None and len(train) >= self.batch_size
        return self._loader("train", shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, shuffle=False, drop_last=False)

    def inverse_transform(self, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Map scaled values ``[..., C]`` (or ``[..., 1]`` for the target) to original units."""
        if not self.scale:
            return values
        return self.scaler.inverse_transform(values)

    def state_dict(self) -> dict:
        """Scaler statistics, saved in checkpoints so predictions reload in original units."""
        if self.scaler.mean is None:
            return {}
        return {"scaler_mean": self.scaler.mean.tolist(), "scaler_std": self.scaler.std.tolist()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.scaler.mean = np.asarray(state["scaler_mean"])
            self.scaler.std = np.asarray(state["scaler_std"])
