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
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "ForecastDataModule",
    "ForecastWindows",
    "StandardScaler",
    "find_dataset",
    "read_forecast_csv",
    "split_borders",
    "time_features",
    "DataError",
]

# Public locations of the ETT files (the Informer authors' repository).
_ETT_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{name}"
_DOWNLOADS = {f"{n}.csv": _ETT_URL.format(name=f"{n}.csv") for n in ("ETTh1", "ETTh2", "ETTm1", "ETTm2")}
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


def find_dataset(data_path: str, root: str | os.PathLike | None = None, download: bool = True) -> Path:
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
        raise DataError(f"{source}: column {date_column!r} does not parse as dates ({err})") from None
    if dates.isna().any():
        raise DataError(
            f"{source}: {int(dates.isna().sum())} missing timestamps in {date_column!r} "
            f"(first at row {int(np.flatnonzero(dates.isna())[0])}); remove or fill those rows"
        )
    values = df.drop(columns=[date_column])
    bad = [c for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
    if bad:
        raise DataError(
            f"{source}: non-numeric columns {bad}; every column but {date_column!r} must be a "
            f"number. Drop them or convert them (e.g. pd.to_numeric)."
        )
    if values.shape[1] == 0:
        raise DataError(f"{source}: no variable columns besides {date_column!r}")
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
        if fill == "ffill":
            values = values.ffill().bfill()
        elif fill == "interpolate":
            values = values.interpolate(limit_direction="both")
        elif fill == "zero":
            values = values.fillna(0.0)
        else:
            raise DataError(f"unknown fill {fill!r}; choose None, 'ffill', 'interpolate' or 'zero'")
    if not np.isfinite(values.to_numpy()).all():
        raise DataError(f"{source}: infinite values in the data; remove them")
    cols = [c for c in values.columns if c != target] + ([target] if target is not None else [])
    out = pd.concat([dates.rename(date_column), values[cols]], axis=1)
    return out.reset_index(drop=True)


def split_borders(n_rows: int, seq_len: int, protocol: str) -> list[tuple[int, int]]:
    """Row ranges ``[(start, end)]`` of the train, val and test splits.

    Args:
        n_rows: rows in the file.
        seq_len: lookback ``L``; val and test start ``L`` rows before their first target row.
        protocol: ``"ett_hour"``, ``"ett_minute"`` or ``"ratio"`` (70/10/20).
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
        n_train = int(n_rows * 0.7)
        n_test = int(n_rows * 0.2)
        n_val = n_rows - n_train - n_test
        starts = [0, n_train - seq_len, n_rows - n_test - seq_len]
        ends = [n_train, n_train + n_val, n_rows]
    else:
        raise ValueError(f"unknown split protocol {protocol!r}; use 'ett_hour', 'ett_minute' or 'ratio'")
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
_FREQ_ALIASES = {"min": "t", "a": "y", "ye": "y", "me": "m", "ms": "m", "qe": "q", "bh": "h", "10min": "t"}


def _freq_key(freq: str) -> str:
    key = freq.lower().lstrip("0123456789")
    key = _FREQ_ALIASES.get(key, key)
    if key.startswith("w-"):
        key = "w"
    if key not in _FREQ_FEATURES:
        raise ValueError(f"unsupported freq {freq!r}; use one of s, t (minutes), h, d, b, w, m, q, y")
    return key


def time_features(dates: pd.DatetimeIndex | Sequence, freq: str = "h", timeenc: int = 1) -> np.ndarray:
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
            return data * torch.as_tensor(std, dtype=data.dtype, device=data.device) + torch.as_tensor(
                mean, dtype=data.dtype, device=data.device
            )
        return data * std + mean


class ForecastWindows(Dataset):
    """Sliding windows (stride 1) over one split.

    Each item is a dict of float32 tensors: ``x [L, C]`` (lookback), ``x_mark [L, F]``,
    ``y [label_len + H, C]`` (decoder start token + horizon) and ``y_mark [label_len + H, F]``.
    """

    def __init__(self, data: np.ndarray, marks: np.ndarray, seq_len: int, label_len: int, pred_len: int):
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
    ):
        super().__init__()
        if features not in ("M", "S", "MS"):
            raise ValueError(f"features must be 'M', 'S' or 'MS', got {features!r}")
        for name, value in (("seq_len", seq_len), ("pred_len", pred_len), ("batch_size", batch_size)):
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
        self.scaler = StandardScaler()
        self.splits: dict[str, ForecastWindows] = {}
        self.dates: dict[str, pd.DatetimeIndex] = {}
        self.columns: list[str] = []
        self._frame: pd.DataFrame | None = None

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
        if self.splits:
            return
        df = self.load_frame()
        protocol = protocol_for(self.data_path) if self.protocol == "auto" else self.protocol
        borders = split_borders(len(df), self.seq_len, protocol)
        value_cols = [c for c in df.columns if c != self.date_column]
        if self.features == "S":
            value_cols = [self.target]
        self.columns = value_cols
        values = df[value_cols].to_numpy(dtype=np.float64)
        if self.scale:
            train_start, train_end = borders[0]
            self.scaler.fit(values[train_start:train_end])
            values = self.scaler.transform(values)
        dates = pd.DatetimeIndex(df[self.date_column])
        freq = self.freq or pd.infer_freq(dates[:1000]) or "h"
        marks = time_features(dates, freq, self.timeenc)
        for split, (start, end) in zip(("train", "val", "test"), borders):
            self.splits[split] = ForecastWindows(
                values[start:end], marks[start:end], self.seq_len, self.label_len, self.pred_len
            )
            self.dates[split] = dates[start:end]

    @property
    def n_features(self) -> int:
        """Number of input variables ``C`` (after ``setup``)."""
        return len(self.columns)

    def _loader(self, split: str, shuffle: bool, drop_last: bool) -> DataLoader:
        self.setup()
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        # Time-Series-Library drops the last incomplete training batch (unless none would be left);
        # evaluation loaders never drop a window.
        drop_last = len(self.splits["train"]) >= self.batch_size
        return self._loader("train", shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, drop_last=False)

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
