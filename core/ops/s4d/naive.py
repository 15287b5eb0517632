"""Ground-truth S4D operators: explicit matrix powers and a step-by-step recurrence.

Everything here is deliberately literal (dense matrices, Python loops over time) so that the fast
path in ``chunk.py`` can be checked against it.
"""

from __future__ import annotations

import torch

__all__ = ["s4d_kernel_naive", "causal_conv_naive", "s4d_scan_naive"]


def s4d_kernel_naive(
    log_dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, length: int
) -> torch.Tensor:
    """``K[h, l] = 2 Re(C_h dA_h^l dB_h)`` by repeated multiplication with the dense matrix ``dA``.

    Args:
        log_dA: ``[H, N2]`` complex, logarithm of the diagonal discrete state matrix.
        dB: ``[H, N2]`` complex discrete input vector.
        C: ``[H, N2]`` complex output vector.
        length: number of kernel taps ``L``.

    Returns:
        ``[H, L]`` real kernel.
    """
    dA = torch.diag_embed(torch.exp(log_dA))  # [H, N2, N2] explicit (diagonal) matrix
    state = dB.unsqueeze(-1)  # dA^0 dB, [H, N2, 1]
    taps = []
    for _ in range(length):
        taps.append(2 * (C.unsqueeze(-2) @ state).squeeze(-1).squeeze(-1).real)
        state = dA @ state
    return torch.stack(taps, dim=-1)


def causal_conv_naive(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``y[b, t, h] = sum_{j <= t} k[h, j] u[b, t - j, h]`` as a direct sum over lags.

    Args:
        u: ``[B, T, H]`` input.
        k: ``[H, L]`` kernel with ``L >= T`` (taps beyond ``T`` are unused).

    Returns:
        ``[B, T, H]``.
    """
    t = u.shape[1]
    y = torch.zeros_like(u)
    for j in range(t):
        y[:, j:] = y[:, j:] + u[:, : t - j] * k[:, j]
    return y


def s4d_scan_naive(
    u: torch.Tensor,
    log_dA: torch.Tensor,
    dB: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The S4D recurrence ``h_t = dA h_{t-1} + dB u_t``, ``y_t = 2 Re(C h_t)`` step by step.

    Args:
        u: ``[B, T, H]`` real input.
        log_dA, dB, C: ``[H, N2]`` complex.
        h0: ``[B, H, N2]`` complex state before the first token (zeros if ``None``).

    Returns:
        ``y [B, T, H]`` real and ``h_last [B, H, N2]`` complex.
    """
    b, t, h = u.shape
    dA = torch.exp(log_dA)
    state = h0 if h0 is not None else u.new_zeros(b, h, dA.shape[-1], dtype=dA.dtype)
    ys = []
    for i in range(t):
        state = dA * state + dB * u[:, i, :, None]
        ys.append(2 * (C * state).sum(-1).real)
    y = torch.stack(ys, dim=1) if ys else u.new_zeros(b, 0, h)
    return y, state
