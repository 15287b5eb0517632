"""Companion-matrix state-space operators (SpaceTime).

Follows "Effectively Modeling Time Series with Simple Discrete State Spaces" (Zhang, Saab, Poli,
Dao, Goel and Ré, 2023, arXiv 2303.09489). A companion SSM ``h_t = A h_{t-1} + b u_t``,
``y_t = c . h_t`` has ``A = S + a e_N^T``: the down-shift ``S`` plus a learnable last column ``a``.
Its convolution kernel is ``K_j = c^T A^j b``, obtained from the Krylov vectors ``A^j b``.

Deviation from the paper: SpaceTime computes the kernel with an FFT-based algorithm exploiting the
companion structure (``O(N log N + L log L)``); here the Krylov vectors are built by repeated
squaring (``"chunk"``, ``O(N^3 log L + N^2 L)``) or one structured ``O(N)`` product per step
(``"naive"``). The kernel values are identical.

Also here: the fixed preprocessing kernels of SpaceTime (order-``p`` differencing and
moving-average residual), which are shift SSMs (``a = 0``, ``b = e_1``) with a fixed ``c``.
"""

from __future__ import annotations

import math

import torch

from mixerzoo.core.ops.backend import resolve_backend
from mixerzoo.core.ops.companion.chunk import (
    companion_krylov_chunk,
    companion_matrix,
    krylov_doubling,
)
from mixerzoo.core.ops.companion.naive import companion_apply, companion_krylov_naive
from mixerzoo.core.validation import check_tensor

__all__ = [
    "companion_matrix",
    "companion_apply",
    "companion_krylov",
    "companion_kernel",
    "krylov_doubling",
    "differencing_kernel",
    "moving_average_residual_kernel",
]

_AVAILABLE = ("naive", "chunk")


def companion_krylov(
    a: torch.Tensor,
    v: torch.Tensor,
    length: int,
    transpose: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Krylov vectors ``X[k, j] = A_k^j v_k`` (or ``(A_k^T)^j v_k``) for ``j < length``.

    Args:
        a: ``[K, N]`` last columns of ``K`` companion matrices ``A_k``.
        v: ``[K, N]`` start vectors.
        length: number of vectors ``L >= 1``.
        transpose: use ``A^T`` (for ``c^T A^j`` rows, e.g. the effect of an initial state).
        backend: ``"naive"`` (structured step per power) or ``"chunk"`` (repeated squaring).

    Returns:
        ``[K, L, N]``.
    """
    where = "companion_krylov"
    check_tensor("a", a, ("K", "N"), where=where)
    check_tensor("v", v, tuple(a.shape), where=where)
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"{where}: length must be a positive int, got {length!r}")
    choice = resolve_backend(where, backend, _AVAILABLE, a.device)
    fn = companion_krylov_naive if choice == "naive" else companion_krylov_chunk
    return fn(a, v, length, transpose)


def companion_kernel(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    length: int,
    backend: str | None = None,
) -> torch.Tensor:
    """Companion SSM convolution kernel ``K[k, j] = c_k^T A_k^j b_k``, ``j < length``.

    Args:
        a, b, c: ``[K, N]``.
        length: number of taps.
        backend: see ``companion_krylov``.

    Returns:
        ``[K, L]``.
    """
    check_tensor("c", c, tuple(a.shape), where="companion_kernel")
    return torch.einsum("kln,kn->kl", companion_krylov(a, b, length, backend=backend), c)


def differencing_kernel(
    order: int, length: int, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Taps of order-``p`` differencing ``(1 - z)^p``: ``y_t = sum_i (-1)^i C(p, i) u_{t-i}``.

    Equal to the kernel of a shift SSM (``a = 0``, ``b = e_1``) whose ``c`` holds these
    coefficients (SpaceTime's differencing preprocessing). Order 0 is the identity.

    Returns:
        ``[length]`` (taps beyond ``order`` are zero).
    """
    if order < 0 or length < order + 1:
        raise ValueError(
            f"differencing_kernel: need 0 <= order < length, got order={order}, length={length}"
        )
    k = torch.zeros(length, dtype=dtype, device=device)
    for i in range(order + 1):
        k[i] = (-1) ** i * math.comb(order, i)
    return k


def moving_average_residual_kernel(
    window: int, length: int, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Taps of the moving-average residual ``y_t = u_t - mean(u_{t-window+1} .. u_t)``.

    SpaceTime's "MA residual" preprocessing, again a fixed shift-SSM kernel.

    Returns:
        ``[length]``.
    """
    if window < 1 or length < window:
        raise ValueError(
            f"moving_average_residual_kernel: need 1 <= window <= length, got {window}, {length}"
        )
    k = torch.zeros(length, dtype=dtype, device=device)
    k[:window] = -1.0 / window
    k[0] += 1.0
    return k
