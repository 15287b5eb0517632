"""Forecasting models, one file per family, each registered by name in the ``timeseries`` domain.

Every model takes the common batch: ``forward(x [B, L, C], x_mark [B, L, F] | None,
x_dec [B, label_len + H, C] | None, x_mark_dec | None) -> [B, H, C]``. Configs name them as
``mixerzoo.timeseries.models.<Class>``.
"""

import importlib
import pkgutil

from mixerzoo.timeseries.models.autoformer import Autoformer
from mixerzoo.timeseries.models.chimera import Chimera
from mixerzoo.timeseries.models.informer import Informer
from mixerzoo.timeseries.models.itransformer import ITransformer
from mixerzoo.timeseries.models.s_mamba import SMamba
from mixerzoo.timeseries.models.spacetime import SpaceTime

# Every module of the package is imported, so that a new model file registers without an edit here.
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["Autoformer", "Chimera", "Informer", "ITransformer", "SMamba", "SpaceTime"]
