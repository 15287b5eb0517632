"""Normalisations over the feature dimension."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["make_norm", "ScaleNorm", "head_norm", "NORMS"]

NORMS = ("layernorm", "rmsnorm", "scalenorm", "none")


class ScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar, 2019, arXiv 1910.05895): ``g * x / max(||x|| / sqrt(D), eps)``
    with one learned scalar ``g``.

    Args:
        dim: feature width ``D``.
        eps: lower bound of the scaled norm.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


def make_norm(kind: str, d_model: int, eps: float = 1e-5) -> nn.Module:
    """A normalisation over the last dim: ``"layernorm"``, ``"rmsnorm"``, ``"scalenorm"`` or
    ``"none"``."""
    kind = kind.lower()
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(d_model, eps=eps)
    if kind == "scalenorm":
        return ScaleNorm(d_model, eps=eps)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def head_norm(
    x: torch.Tensor,
    n_heads: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Per-head LayerNorm of ``x [..., H * d]``: each head's ``d`` features of each token are
    normalised on their own (GroupNorm with one group per head, as RetNet, GLA and xLSTM use),
    then scaled by ``weight`` and shifted by ``bias`` (``[H * d]`` each, optional)."""
    shape = x.shape
    y = F.group_norm(x.reshape(-1, shape[-1]), n_heads, weight, bias, eps)
    return y.view(shape)
