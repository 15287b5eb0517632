"""mixerzoo.medical: segmentation networks, data and the Lightning task, on MONAI.

Public API::

    from mixerzoo.medical import XLSTMUNet, SegmentationTask, ImageFolderSegmentation, VolumeSegmentation

Needs the ``medical`` extra (``pip install "mixerzoo[medical]"``: MONAI, nibabel, Pillow, SciPy).
"""

from mixerzoo.core.plugins import require

require("monai", extra="medical")

from mixerzoo.medical import models  # noqa: E402
from mixerzoo.medical.data import (  # noqa: E402
    DataError,
    ImageFolderSegmentation,
    SegmentationDataModule,
    VolumeSegmentation,
    map_labels,
    read_image_2d,
    read_mask_2d,
    read_nifti,
    split_cases,
)
from mixerzoo.medical.models import MixerLayer, ResidualBlock, XLSTMUNet  # noqa: E402
from mixerzoo.medical.task import (  # noqa: E402
    NnUNetSGD,
    SegmentationTask,
    SegmentationWriter,
    deep_supervision_weights,
    overlay_image,
)

__all__ = [
    "models",
    "XLSTMUNet",
    "MixerLayer",
    "ResidualBlock",
    "SegmentationTask",
    "SegmentationWriter",
    "NnUNetSGD",
    "deep_supervision_weights",
    "overlay_image",
    "DataError",
    "SegmentationDataModule",
    "ImageFolderSegmentation",
    "VolumeSegmentation",
    "map_labels",
    "read_image_2d",
    "read_mask_2d",
    "read_nifti",
    "split_cases",
]
