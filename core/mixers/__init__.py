"""Sequence mixers, one module per mixer, each registered by name (see ``base.Mixer``).

Every module in this package is imported here so that its ``@register_mixer`` runs; a new mixer
needs only its own file.
"""

import importlib
import pkgutil

from mixerzoo.core.mixers.attention import Attention
from mixerzoo.core.mixers.base import Mixer

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["Mixer", "Attention"]
