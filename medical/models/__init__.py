"""Segmentation networks of the medical domain (registered by name in ``mixerzoo.core``)."""

from mixerzoo.medical.models.xlstm_unet import MixerLayer, ResidualBlock, XLSTMUNet

__all__ = ["XLSTMUNet", "MixerLayer", "ResidualBlock"]
