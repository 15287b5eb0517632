"""Fast S4D operators: Vandermonde kernel and FFT convolution.

The kernel of a diagonal SSM is a Vandermonde product, ``K[h, l] = 2 Re(sum_n (C dB)_{hn} dA_{hn}^l)``,
computed in one batched ``exp(l * log dA)`` (S4D, Gu et al. 2022, arXiv 2206.11893, Sec. 3.2),
and applied with an FFT convolution in ``O(T log T)``. The contribution of a carried initial state
and the state at the end of the piece are Vandermonde contractions as well, so a long sequence can
be processed in pieces with exactly the result of one pass.
"""

from __future__ import annotations

import torch

__all__ = ["vandermonde", "s4d_kernel_chunk", "causal_conv_fft", "s4d_scan_chunk"]


def vandermonde(log_dA: torch.Tensor, length: int, start: int = 0) -> torch.Tensor:
    """Powers ``dA^l`` for ``l = start .. start + length - 1``: ``[..., N2, length]`` complex."""
    steps = torch.arange(start, start + length, device=log_dA.device, dtype=log_dA.real.dtype)
    return torch.exp(log_dA.unsqueeze(-1) * steps)


def s4d_kernel_chunk(
    log_dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, length: int
) -> torch.Tensor:
    """``K [H, L]`` from one Vandermonde product (see ``naive.s4d_kernel_naive``)."""
    return 2 * torch.einsum("hn,hnl->hl", C * dB, vandermonde(log_dA, length)).real


def causal_conv_fft(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution ``y = k * u`` along time via FFT, zero-padded to ``2T`` (no wrap-around).

    Args:
        u: ``[B, T, H]``.
        k: ``[H, L]`` with ``L >= T``.

    Returns:
        ``[B, T, H]``.
    """
    t = u.shape[1]
    n = 2 * t
    u_f = torch.fft.rfft(u.transpose(1, 2), n=n)  # [B, H, n/2+1]
    k_f = torch.fft.rfft(k[:, :t], n=n)
    return torch.fft.irfft(u_f * k_f, n=n)[..., :t].transpose(1, 2)


def s4d_scan_chunk(
    u: torch.Tensor,
    log_dA: torch.Tensor,
    dB: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``naive.s4d_scan_naive`` via kernel + FFT convolution.

    ``y_t = (K * u)_t + 2 Re(C dA^{t+1} h0)`` and
    ``h_last = dA^T h0 + sum_k dA^{T-1-k} dB u_k``.
    """
    t = u.shape[1]
    powers = vandermonde(log_dA, t + 1)  # dA^0 .. dA^T, [H, N2, T+1]
    kernel = 2 * torch.einsum("hn,hnl->hl", C * dB, powers[..., :t]).real
    y = causal_conv_fft(u, kernel)
    # State at the end of the piece: input k is propagated T-1-k more steps.
    u_c = u.to(powers.dtype)
    h_last = torch.einsum("hnk,bkh->bhn", powers[..., :t].flip(-1) * dB.unsqueeze(-1), u_c)
    if h0 is not None:
        y = y + 2 * torch.einsum("hn,bhn,hnt->bth", C, h0, powers[..., 1:]).real
        h_last = h_last + powers[..., t] * h0
    return y, h_last
