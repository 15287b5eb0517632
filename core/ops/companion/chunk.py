"""Krylov vectors of a (companion or any dense) matrix by repeated squaring.

``[v, A v, ..., A^{L-1} v]`` is built by doubling: given the first ``m`` vectors and ``A^m``, the
next ``m`` are ``A^m`` times them, and ``A^{2m} = (A^m)^2``. This takes ``ceil(log2 L)`` batched
matrix products instead of ``L`` sequential steps (the "Krylov by squaring" of S4/SpaceTime).
"""

from __future__ import annotations

import torch

__all__ = ["companion_matrix", "krylov_doubling", "companion_krylov_chunk"]


def companion_matrix(a: torch.Tensor) -> torch.Tensor:
    """Dense companion matrix ``S + a e_N^T`` (ones on the sub-diagonal, ``a`` as last column).

    Args:
        a: ``[..., N]``.

    Returns:
        ``[..., N, N]``.
    """
    n = a.shape[-1]
    shift = torch.diag(torch.ones(n - 1, dtype=a.dtype, device=a.device), diagonal=-1)
    last = torch.zeros(n, dtype=a.dtype, device=a.device)
    last[-1] = 1
    return shift + a.unsqueeze(-1) * last


def krylov_doubling(matrix: torch.Tensor, v: torch.Tensor, length: int) -> torch.Tensor:
    """``[v, M v, ..., M^{L-1} v]``: ``matrix [K, N, N]``, ``v [K, N]`` -> ``[K, L, N]``."""
    x = v.unsqueeze(-2)
    power = matrix
    while x.shape[-2] < length:
        need = length - x.shape[-2]
        # Rows are vectors, so M applied to each row is x @ M^T.
        x = torch.cat([x, x[..., :need, :] @ power.transpose(-1, -2)], dim=-2)
        if x.shape[-2] < length:
            power = power @ power
    return x


def companion_krylov_chunk(
    a: torch.Tensor, v: torch.Tensor, length: int, transpose: bool = False
) -> torch.Tensor:
    """Same contract as ``naive.companion_krylov_naive`` via ``krylov_doubling``."""
    matrix = companion_matrix(a)
    if transpose:
        matrix = matrix.transpose(-1, -2)
    return krylov_doubling(matrix, v, length)
