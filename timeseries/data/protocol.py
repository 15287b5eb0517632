"""The benchmark protocol of Time-Series-Library: splits, time features and scaling.

See ``mixerzoo.timeseries.data`` for the protocol as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mixerzoo.timeseries.data.errors import DataError

__all__ = ["StandardScaler", "protocol_for", "split_borders", "time_features"]


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
    """Per-column standardisation (population std, as scikit-learn's ``StandardScaler``).

    Attributes:
        mean: per-column means ``[C]`` (float64), ``None`` before ``fit``.
        std: per-column standard deviations ``[C]`` (1 for constant columns).

    Saved and restored with ``state_dict`` / ``from_state_dict`` (float64 tensors, so that it
    travels in Lightning checkpoints and ``Forecaster.save`` files that load with
    ``torch.load(weights_only=True)``).
    """

    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"mean": [C], "std": [C]}`` as float64 tensors; empty before ``fit``."""
        if self.mean is None:
            return {}
        return {
            "mean": torch.tensor(np.asarray(self.mean, dtype=np.float64)),
            "std": torch.tensor(np.asarray(self.std, dtype=np.float64)),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> StandardScaler:
        """The scaler ``state_dict`` described (an empty state gives an unfitted scaler).

        Raises:
            ValueError: ``state`` lacks ``mean`` or ``std`` or their shapes differ.
        """
        if not state:
            return cls()
        if set(state) != {"mean", "std"}:
            raise ValueError(f"a scaler state has keys 'mean' and 'std', got {sorted(state)}")
        mean = torch.as_tensor(state["mean"], dtype=torch.float64).numpy()
        std = torch.as_tensor(state["std"], dtype=torch.float64).numpy()
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError(
                f"a scaler state holds two vectors of one length, got mean {mean.shape} and std "
                f"{std.shape}"
            )
        return cls(mean.copy(), std.copy())

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
