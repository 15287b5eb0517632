"""Rotary position embeddings over interleaved feature pairs.

RoPE (Su et al., 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding",
arXiv 2104.09864): the pair ``(x_{2j}, x_{2j+1})`` of a token at position ``p`` is rotated by the
angle ``p * f_j``, so that ``q_p . k_s`` depends on ``p - s`` only. Two frequency spacings are in
use in the suite:

- ``"rope"``: ``f_j = theta^(-2j / R)`` (RoFormer, and the ``rotary-embedding-torch`` package that
  MossFormer uses, on the first ``R`` features);
- ``"linspace"``: ``f_j = theta^(-j / (R/2 - 1))`` (RetNet's xPos rotation as in torchscale).
"""

from __future__ import annotations

import torch

__all__ = ["rotary_frequencies", "rotate_pairs"]


def rotary_frequencies(
    rot_dim: int,
    theta: float = 10000.0,
    spacing: str = "rope",
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The ``rot_dim / 2`` angular frequencies ``f_j`` (see the module docstring)."""
    if rot_dim < 2 or rot_dim % 2:
        raise ValueError(f"rotary_frequencies: rot_dim must be an even int >= 2, got {rot_dim}")
    half = rot_dim // 2
    if spacing == "rope":
        exponent = torch.arange(0, rot_dim, 2, device=device, dtype=dtype) / rot_dim
    elif spacing == "linspace":
        exponent = torch.linspace(0, 1, half, device=device, dtype=dtype)
    else:
        raise ValueError(
            f"rotary_frequencies: spacing must be 'rope' or 'linspace', got {spacing!r}"
        )
    return theta**-exponent


def rotate_pairs(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate the interleaved pairs of the first ``2 * len(freqs)`` features of ``x``.

    Args:
        x: ``[..., T, E]`` features (e.g. ``[B, T, E]`` or ``[B, H, T, E]``).
        positions: token positions, broadcastable to ``x.shape[:-1]`` (``[T]``, or ``[B, 1, T]``
            for per-row offsets of a ``[B, H, T, E]`` input); any real dtype. Angles are formed
            in float64 so that long streams keep exact phases, then cast to ``x``'s dtype.
        freqs: ``[R/2]`` frequencies from :func:`rotary_frequencies`.

    Returns:
        ``x`` with the pair ``(2j, 2j+1)`` rotated by ``position * freqs[j]``; features beyond
        ``R`` pass unchanged.
    """
    rot = 2 * freqs.shape[-1]
    if rot > x.shape[-1]:
        raise ValueError(f"rotate_pairs: {rot} rotated features but x has only {x.shape[-1]}")
    angle = positions.to(torch.float64).unsqueeze(-1) * freqs.to(torch.float64)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x_rot = x[..., :rot]
    even, odd = x_rot[..., 0::2], x_rot[..., 1::2]
    rotated = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)
    if rot == x.shape[-1]:
        return rotated
    return torch.cat((rotated, x[..., rot:]), dim=-1)
