"""``ForecastDataModule``: the benchmark protocol over a CSV file or a pandas frame."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mixerzoo.timeseries.data.errors import DataError
from mixerzoo.timeseries.data.files import find_dataset
from mixerzoo.timeseries.data.frames import FrameInfo, load_forecast_csv, prepare_frame
from mixerzoo.timeseries.data.protocol import (
    StandardScaler,
    protocol_for,
    split_borders,
    time_features,
)
from mixerzoo.timeseries.data.windows import (
    BatchedWindows,
    ForecastWindows,
    FutureWindow,
    collate_windows,
)

__all__ = ["ForecastDataModule"]


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
        fill: ``None`` makes gaps, off-grid timestamps and NaNs errors; ``"ffill"``,
            ``"interpolate"`` or ``"zero"`` resample onto the regular grid and fill them (see
            ``read_forecast_csv``; the same checks as for frames).
        date_column: timestamp column name.
        train_fraction: training share of the ``"ratio"`` protocol.
        test_fraction: test share of the ``"ratio"`` protocol (0: no test split).
        predict_split: what ``predict`` runs on: ``"test"`` (every test window, the default),
            ``"val"``, ``"train"`` or ``"future"`` (the ``H`` steps after the last row, dated at
            the data's step; there is no truth to compare with).

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
        # The step of the data's regular time grid (checked when the data is read): it dates the
        # forecasts; `freq` only chooses the time features of a CSV.
        self.data_freq: str | None = None
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
        freq_from: str = "argument",
        feature_freq: str | None = None,
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
            freq_from: where ``freq`` comes from, for the hint of an irregular-grid error:
                ``"argument"`` (the caller's option) or ``"model"`` (the step a trained model
                works at; see ``prepare_frame``).
            feature_freq: frequency of the time features (``None``: the data's step, ``freq``).
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
        need, why = dm._min_rows()
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
            freq_from=freq_from,
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
        dm._frame, dm._source, dm.frame_info = wide, "frame", info
        dm.freq = feature_freq or info.freq
        dm.data_freq = info.freq
        return dm

    @property
    def target_only_output(self) -> bool:
        """True when only the last (target) column is scored (features ``S`` or ``MS``)."""
        return self.features in ("S", "MS")

    def load_frame(self) -> pd.DataFrame:
        """Read and validate the CSV (cached after the first call)."""
        if self._frame is None:
            path = find_dataset(self.data_path, self.root)
            need, why = self._min_rows()
            self._frame, info = load_forecast_csv(
                path, self.date_column, self.target, self.fill, need, why
            )
            self.data_freq = info.freq
            self._source = str(path)
        return self._frame

    def _min_rows(self) -> tuple[int, str]:
        """Fewest rows the windows need, and why (for the error message)."""
        if self.protocol == "none":
            return self.seq_len, f"the lookback seq_len={self.seq_len}"
        return (
            self.seq_len + self.pred_len,
            f"lookback seq_len={self.seq_len} + horizon pred_len={self.pred_len}",
        )

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
        freq = self.freq or self.data_freq
        marks = time_features(dates, freq, self.timeenc)
        for split, (start, end) in zip(("train", "val", "test"), borders):
            if end > start:
                self.splits[split] = ForecastWindows(
                    values[start:end], marks[start:end], self.seq_len, self.label_len, self.pred_len
                )
                self.dates[split] = dates[start:end]
        if self.predict_split == "future":
            # The step of the data itself: a CSV keeps Time-Series-Library's freq="h" for its time
            # features whatever its real step, but its future timestamps follow the data.
            step = self.data_freq
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

    def window_dates(self, split: str) -> np.ndarray:
        """Timestamps of every window of ``split`` (after ``setup``), in loader order.

        Returns:
            ``[N, L + H]`` datetime64: the lookback's ``L`` timestamps, then the horizon's ``H``
            (for ``"future"``: the last ``L`` of the data and the ``H`` after it).
        """
        self.setup()
        if split not in self.splits:
            raise DataError(
                f"this data module has no {split!r} split (splits: {sorted(self.splits)})"
            )
        if split == "future":
            frame = self.load_frame()
            past = pd.DatetimeIndex(frame[self.date_column])[-self.seq_len :]
            return past.append(self.dates["future"]).to_numpy()[None]
        span = self.seq_len + self.pred_len
        dates = self.dates[split].to_numpy()
        return np.lib.stride_tricks.sliding_window_view(dates, span)[: len(self.splits[split])]

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
            BatchedWindows(self.splits[split]),
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_windows,
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
        """The scaler's statistics (``StandardScaler.state_dict``), saved in checkpoints so that
        predictions reload in original units."""
        state = self.scaler.state_dict()
        return {"scaler": state} if state else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore the scaler of ``state_dict`` (used instead of fitting one in ``setup``)."""
        if "scaler" in state:
            self.scaler = StandardScaler.from_state_dict(state["scaler"])
            self._scaler_given = True
