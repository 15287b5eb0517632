"""Pieces every vision backbone of mixerzoo shares: input checks, checkpoint errors, timm configs.

The backbones are timm models (DESIGN.md, "Vision models are timm models"): each family file
registers its named variants in timm's registry (``timm.create_model("mixerzoo_<name>")``, the
prefix keeps them apart from timm's own names) and in mixerzoo's (``create_model("<name>")``),
and builds them with timm's ``build_model_with_cfg``, so that ``pretrained=``,
``pretrained_cfg_overlay=dict(file=...)``, ``checkpoint_path=``, ``features_only=True``,
``num_classes=`` and ``in_chans=`` behave as for any timm model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

__all__ = ["check_image", "CheckpointMixin", "default_cfg"]


def check_image(x: object, in_chans: int, stride: int, where: str) -> torch.Tensor:
    """Check an image batch ``x [B, in_chans, H, W]`` whose sides are multiples of ``stride``.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: wrong rank, wrong channel count or a side not divisible by ``stride``; the
            message says what to change.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: expected an image tensor [B, C, H, W], got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{where}: images must be a floating-point tensor (normalised pixels), got dtype "
            f"{x.dtype}; convert with .float() (and normalise, e.g. timm's transforms)"
        )
    if x.dim() != 4:
        raise ValueError(
            f"{where}: images must have shape [B, C, H, W] (4 dims), got {tuple(x.shape)}; add a "
            f"batch dimension with x.unsqueeze(0) for a single image"
        )
    if x.shape[1] != in_chans:
        raise ValueError(
            f"{where}: the model takes {in_chans}-channel images, got {x.shape[1]} channels "
            f"(shape {tuple(x.shape)}); build it with in_chans={x.shape[1]} "
            f"(timm.create_model(..., in_chans={x.shape[1]})) or convert the images"
        )
    h, w = x.shape[-2:]
    if h % stride or w % stride:
        fit_h, fit_w = max(stride, h // stride * stride), max(stride, w // stride * stride)
        raise ValueError(
            f"{where}: image size {h}x{w} is not divisible by the model's total stride {stride}; "
            f"resize or crop the images to a multiple of {stride} (e.g. {fit_h}x{fit_w})"
        )
    return x


def default_cfg(**kwargs: Any) -> dict[str, Any]:
    """A timm pretrained config (ImageNet-1k at 224, ImageNet normalisation) without weights."""
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "license": "apache-2.0",
        **kwargs,
    }


class CheckpointMixin:
    """``load_state_dict`` whose errors name the keys and say what to do.

    PyTorch lists missing / unexpected keys and size mismatches in one long message; this wraps it
    with the likely cause (another variant, another ``num_classes`` / ``in_chans``, a checkpoint of
    another family) and the fix. Keys a family remaps on load (e.g. timm's MambaOut layout) are
    renamed before the check by that family's ``_load_from_state_dict``.
    """

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):
        if "state_dict" in state_dict and not any(
            isinstance(v, torch.Tensor) for v in state_dict.values()
        ):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: got a training checkpoint (keys "
                f"{sorted(state_dict)[:6]}...), not a state dict; pass checkpoint['state_dict'] "
                f"(strip a 'model.' prefix from Lightning checkpoints) or use "
                f"timm.create_model(..., checkpoint_path=...)"
            )
        name = type(self).__name__
        try:
            result = nn.Module.load_state_dict(self, state_dict, strict=False, assign=assign)
        except RuntimeError as err:
            raise RuntimeError(
                f"{name}: the checkpoint does not fit this model ({err}). A size mismatch usually "
                f"means another variant, num_classes or in_chans: build the model with the "
                f"checkpoint's settings (num_classes / in_chans as saved), then reset_classifier()"
            ) from err
        if strict and (result.missing_keys or result.unexpected_keys):
            parts = []
            if result.missing_keys:
                parts.append(f"missing keys {_short(result.missing_keys)}")
            if result.unexpected_keys:
                parts.append(f"unexpected keys {_short(result.unexpected_keys)}")
            raise RuntimeError(
                f"{name}: the checkpoint does not match this model: {'; '.join(parts)}. Check that "
                f"it was saved from the same family and variant; to load the matching part only, "
                f"pass strict=False (and inspect the returned missing/unexpected keys)"
            )
        return result


def _short(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)} in all)"
