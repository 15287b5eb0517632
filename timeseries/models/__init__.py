"""Forecasting models, one file per family, each registered by name in the ``timeseries`` domain.

Every model takes the common batch: ``forward(x [B, L, C], x_mark [B, L, F] | None,
x_dec [B, label_len + H, C] | None, x_mark_dec | None) -> [B, H, C]``.
"""

import importlib
import pkgutil

from mixerzoo.timeseries.models.itransformer import ITransformer

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["ITransformer"]
