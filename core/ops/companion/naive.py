"""Ground truth for companion-matrix Krylov vectors: one structured matrix-vector product per step.

With ``A = S + a e_N^T`` (``S`` the down-shift, ``a`` the last column), ``A v`` shifts ``v`` down
by one and adds ``a * v[N-1]``; ``A^T v`` shifts ``v`` up by one and puts ``a . v`` last.
"""

from __future__ import annotations

import torch

__all__ = ["companion_apply", "companion_krylov_naive"]


def companion_apply(a: torch.Tensor, v: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``A v`` (or ``A^T v``) for the companion matrix with last column ``a``.

    Args:
        a: ``[..., N]`` last column.
        v: ``[..., N]`` vectors (broadcast against ``a``).
        transpose: apply ``A^T`` instead of ``A``.
    """
    if transpose:
        last = (a * v).sum(-1, keepdim=True)
        return torch.cat([v[..., 1:], last], dim=-1)
    shifted = torch.cat([torch.zeros_like(v[..., :1]), v[..., :-1]], dim=-1)
    return shifted + a * v[..., -1:]


def companion_krylov_naive(
    a: torch.Tensor, v: torch.Tensor, length: int, transpose: bool = False
) -> torch.Tensor:
    """Krylov vectors ``[v, A v, ..., A^{L-1} v]`` as ``[K, L, N]`` by ``L - 1`` products."""
    out = [v]
    for _ in range(length - 1):
        out.append(companion_apply(a, out[-1], transpose))
    return torch.stack(out, dim=-2)
