"""Vision backbones, one file per family; each registers its variants in mixerzoo and in timm.

After ``import mixerzoo.vision``: ``timm.create_model("mixerzoo_mambaout_femto", ...)`` or
``mixerzoo.core.create_model("mambaout_femto", ...)``. Configs name the classes as
``mixerzoo.vision.models.<Class>``.
"""

import importlib
import pkgutil

from mixerzoo.vision.models.efficientvmamba import EfficientVMamba
from mixerzoo.vision.models.mambaout import MambaOut
from mixerzoo.vision.models.vir import ViR

# Every module of the package is imported, so that a new model file registers without an edit here.
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["EfficientVMamba", "MambaOut", "ViR"]
