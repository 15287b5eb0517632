"""The windows a forecaster trains on and the one it forecasts the future from."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from mixerzoo.timeseries.data.errors import DataError

__all__ = ["ForecastWindows", "FutureWindow"]


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


class BatchedWindows(Dataset):
    """A dataset that hands ``DataLoader`` whole batches (``__getitems__``) through its ``gather``.

    The data module's loaders use it (with ``collate_windows`` as collate function), so that a batch
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


def collate_windows(batch: list[dict[str, torch.Tensor]] | dict[str, torch.Tensor]):
    """``default_collate``, except for a batch that ``BatchedWindows`` already gathered."""
    return batch if isinstance(batch, dict) else default_collate(batch)


class FutureWindow(Dataset):
    """The one window that forecasts past the end of the data.

    Its item has the keys of ``ForecastWindows``: ``x [L, C]`` and ``x_mark [L, F]`` are the last
    ``L`` rows; ``y [label_len + H, C]`` is the known start token (the last ``label_len`` rows)
    followed by ``H`` NaNs, the unknown future, and ``y_mark`` the time features of the start token
    and of the ``H`` future timestamps. The task's decoder input is the usual one (the start token,
    then zeros: the NaNs never reach a model), and a NaN horizon tells it there is no truth.
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
            "y": torch.cat([data[start:], data.new_full((pred_len, data.shape[1]), torch.nan)]),
            "y_mark": torch.cat([marks[start:], future]),
        }

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i not in (0, -1):
            raise IndexError(i)
        return self.item
