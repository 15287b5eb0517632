"""mixerzoo.vision: timm-native backbones (ViR, EfficientVMamba, MambaOut), image-folder data and
the image-classification task.

Public API::

    import timm, mixerzoo.vision
    model = timm.create_model("mixerzoo_mambaout_femto", num_classes=10)
    from mixerzoo.vision import ClassificationTask, ImageFolderDataModule

The domain plugs into core with the entry point ``vision = "mixerzoo.vision"`` (group
``mixerzoo.domains``): importing this package registers the models in timm's and mixerzoo's
registries, and ``configure_cli`` sets the trainer defaults of classification runs.
"""

from mixerzoo.core.plugins import require

for _module in ("timm", "torchvision", "PIL"):
    require(_module, extra="vision")

from mixerzoo.vision import models  # noqa: E402
from mixerzoo.vision.cli import configure_cli, trainer_defaults  # noqa: E402
from mixerzoo.vision.data import (  # noqa: E402
    ImageFolderDataModule,
    ImageFolderDataset,
    ImageFolderError,
    ImageReadError,
)
from mixerzoo.vision.models import EfficientVMamba, MambaOut, ViR  # noqa: E402
from mixerzoo.vision.task import ClassificationTask, ClassificationWriter, WarmupCosineLR  # noqa: E402

__all__ = [
    "configure_cli",
    "trainer_defaults",
    "models",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "ImageFolderError",
    "ImageReadError",
    "EfficientVMamba",
    "MambaOut",
    "ViR",
    "ClassificationTask",
    "ClassificationWriter",
    "WarmupCosineLR",
]
