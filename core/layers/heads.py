"""Splitting features into attention heads and back."""

from __future__ import annotations

import torch

__all__ = ["split_heads", "merge_heads"]


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[B, T, H * d] -> [B, H, T, d]`` (a view when ``x`` is contiguous)."""
    b, t, width = x.shape
    if width % n_heads:
        raise ValueError(f"split_heads: width {width} is not divisible by n_heads {n_heads}")
    return x.view(b, t, n_heads, width // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, T, d] -> [B, T, H * d]``."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)
