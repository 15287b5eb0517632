"""mixerzoo.timeseries: long-term forecasting data, models and the Lightning task.

Public API::

    from mixerzoo.timeseries import ForecastDataModule, ForecastTask, ITransformer

The domain plugs into core with the entry point ``timeseries = "mixerzoo.timeseries"`` (group
``mixerzoo.domains``): importing this package registers its models, and ``configure_cli`` sets the
trainer defaults and window links of forecasting runs of the ``mixerzoo`` command.
"""

from mixerzoo.core.plugins import require

for _module in ("pandas", "sklearn"):
    require(_module, extra="timeseries")

from mixerzoo.timeseries import models  # noqa: E402
from mixerzoo.timeseries.cli import configure_cli  # noqa: E402
from mixerzoo.timeseries.data import (  # noqa: E402
    DataError,
    ForecastDataModule,
    ForecastWindows,
    StandardScaler,
    find_dataset,
    read_forecast_csv,
    split_borders,
    time_features,
)
from mixerzoo.timeseries.forecaster import Forecaster  # noqa: E402
from mixerzoo.timeseries.models import ITransformer  # noqa: E402
from mixerzoo.timeseries.task import ForecastTask, ForecastWriter  # noqa: E402

__all__ = [
    "configure_cli",
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
