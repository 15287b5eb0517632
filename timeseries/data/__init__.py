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

Modules: ``files`` (finding the CSVs), ``frames`` (checking CSVs and users' frames), ``protocol``
(splits, time features, scaling), ``windows`` (the datasets of windows) and ``datamodule``
(``ForecastDataModule``).
"""

from mixerzoo.timeseries.data.datamodule import ForecastDataModule
from mixerzoo.timeseries.data.errors import DataError
from mixerzoo.timeseries.data.files import find_dataset
from mixerzoo.timeseries.data.frames import (
    FrameInfo,
    prepare_frame,
    read_forecast_csv,
    validate_frame,
)
from mixerzoo.timeseries.data.protocol import (
    StandardScaler,
    protocol_for,
    split_borders,
    time_features,
)
from mixerzoo.timeseries.data.windows import ForecastWindows, FutureWindow

__all__ = [
    "ForecastDataModule",
    "ForecastWindows",
    "FutureWindow",
    "FrameInfo",
    "StandardScaler",
    "find_dataset",
    "prepare_frame",
    "protocol_for",
    "read_forecast_csv",
    "split_borders",
    "time_features",
    "validate_frame",
    "DataError",
]
