"""Per-window normalisation of forecaster inputs (Non-stationary Transformers, Liu et al. 2022,
arXiv 2205.14415), as iTransformer, S-Mamba and Chimera use it: each variate of each lookback
window is standardised by its own mean and (population) std, and the forecast is mapped back."""

from __future__ import annotations

import torch

__all__ = ["normalize_window", "denormalize_window"]

WindowStats = tuple[torch.Tensor, torch.Tensor]


def normalize_window(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, WindowStats]:
    """``x [B, L, C] -> (x_norm [B, L, C], (mean, std) [B, 1, C])``; the mean is detached as in the
    official code, ``std = sqrt(var + eps)``."""
    means = x.mean(dim=1, keepdim=True).detach()
    centred = x - means
    stdev = torch.sqrt(torch.var(centred, dim=1, keepdim=True, unbiased=False) + eps)
    return centred / stdev, (means, stdev)


def denormalize_window(y: torch.Tensor, stats: WindowStats) -> torch.Tensor:
    """Map a forecast ``y [B, H, C]`` back to the units of the window ``stats`` came from."""
    means, stdev = stats
    return y * stdev + means
