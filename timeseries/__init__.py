"""mixerzoo.timeseries: long-term forecasting data, models and the Lightning task.

Public API::

    from mixerzoo.timeseries import ForecastDataModule, ForecastTask, ITransformer
"""

from mixerzoo.timeseries import models
from mixerzoo.timeseries.data import (
    DataError,
    ForecastDataModule,
    ForecastWindows,
    StandardScaler,
    find_dataset,
    read_forecast_csv,
    split_borders,
    time_features,
)
from mixerzoo.timeseries.forecaster import Forecaster
from mixerzoo.timeseries.models import ITransformer
from mixerzoo.timeseries.task import ForecastTask, ForecastWriter

__all__ = [
    "models",
    "DataError",
    "ForecastDataModule",
    "ForecastWindows",
    "StandardScaler",
    "find_dataset",
    "read_forecast_csv",
    "split_borders",
    "time_features",
    "ITransformer",
    "ForecastTask",
    "ForecastWriter",
    "Forecaster",
]
