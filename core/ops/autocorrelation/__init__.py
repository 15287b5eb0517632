"""Autoformer's Auto-Correlation: period-based dependencies found by FFT auto-correlation, and
time-delay aggregation of the values (Wu et al., 2021, "Autoformer: Decomposition Transformers with
Auto-Correlation for Long-Term Series Forecasting", arXiv 2106.13008). The mixer is
``mixerzoo.core.mixers.autocorrelation.AutoCorrelation``; see its module docstring for the details
followed from the official code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mixerzoo.core.validation import check_tensor

__all__ = [
    "auto_correlation",
    "period_correlation",
    "time_delay_agg_training",
    "time_delay_agg_inference",
    "top_k_delays",
]


def top_k_delays(factor: float, length: int) -> int:
    """``int(factor * ln L)`` delays, clamped to ``[1, L]``."""
    return max(1, min(length, int(factor * math.log(length))))


def period_correlation(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Circular cross-correlation along time via the real FFT.

    Args:
        q: ``[B, H, E, L]``.
        k: ``[B, H, E, L]``.

    Returns:
        ``corr [B, H, E, L]`` with ``corr[..., tau] = sum_t q[..., (t + tau) % L] * k[..., t]``.
    """
    length = q.shape[-1]
    q_fft = torch.fft.rfft(q, dim=-1)
    k_fft = torch.fft.rfft(k, dim=-1)
    return torch.fft.irfft(q_fft * torch.conj(k_fft), n=length, dim=-1)


def _delay_sum(values: torch.Tensor, delays: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``out[b, ..., t] = sum_i weights[b, i] * values[b, ..., (t + delays[b, i]) % L]``.

    The weighted sum of rolled copies is a circular cross-correlation of ``values`` with the
    sparse kernel ``g[b, delays[b, i]] = weights[b, i]``, computed as
    ``irfft(rfft(values) * conj(rfft(g)))``: two FFTs instead of ``top_k`` rolls, multiplies and
    adds over the whole ``[B, H, E, L]`` tensor (which dominated an Autoformer training step), with
    the same gradients to ``values`` and ``weights`` up to rounding.

    Args:
        values: ``[B, H, E, L]``.
        delays: ``[B, K]`` integer delays in ``[0, L)``, distinct per sample.
        weights: ``[B, K]``.
    """
    length = values.shape[-1]
    compute = torch.promote_types(values.dtype, torch.float32)  # FFTs need float32 or float64
    kernel = torch.zeros(values.shape[0], length, dtype=compute, device=values.device)
    kernel = kernel.scatter(-1, delays, weights.to(compute))
    spectrum = torch.fft.rfft(values.to(compute), dim=-1)
    spectrum = spectrum * torch.conj(torch.fft.rfft(kernel, dim=-1))[:, None, None, :]
    return torch.fft.irfft(spectrum, n=length, dim=-1).to(values.dtype)


def time_delay_agg_training(values: torch.Tensor, corr: torch.Tensor, top_k: int) -> torch.Tensor:
    """Aggregation with delays shared by the batch (training form).

    Args:
        values: ``[B, H, E, L]``.
        corr: ``[B, H, E, L]`` auto-correlation.
        top_k: number of delays.

    Returns:
        ``[B, H, E, L]``: ``sum_i w[b, i] * roll(values, -tau_i)`` where the ``tau_i`` are the
        top delays of the batch-, head- and channel-averaged correlation and ``w[b]`` is the
        softmax of sample ``b``'s (head/channel-averaged) correlation at those delays.
    """
    mean_corr = corr.mean(dim=(1, 2))  # [B, L]
    delays = torch.topk(mean_corr.mean(dim=0), top_k, dim=-1).indices  # [top_k]
    weights = torch.softmax(mean_corr[:, delays], dim=-1)  # [B, top_k]
    return _delay_sum(values, delays.expand(values.shape[0], -1), weights)


def time_delay_agg_inference(values: torch.Tensor, corr: torch.Tensor, top_k: int) -> torch.Tensor:
    """Aggregation with per-sample delays (inference form).

    Args:
        values: ``[B, H, E, L]``.
        corr: ``[B, H, E, L]`` auto-correlation.
        top_k: number of delays.

    Returns:
        ``[B, H, E, L]``: ``sum_i w[b, i] * values[b, ..., (t + tau[b, i]) % L]`` with each
        sample's own top delays ``tau[b]`` and weights ``w[b] = softmax(corr at tau[b])``.
    """
    mean_corr = corr.mean(dim=(1, 2))  # [B, L]
    top, delays = torch.topk(mean_corr, top_k, dim=-1)  # [B, top_k]
    return _delay_sum(values, delays, torch.softmax(top, dim=-1))


def auto_correlation(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    factor: float = 1.0,
    training: bool = False,
) -> torch.Tensor:
    """The Auto-Correlation mechanism on per-head tensors.

    Args:
        q: queries ``[B, L, H, E]``.
        k: keys ``[B, S, H, E]``.
        v: values ``[B, S, H, D]``; keys and values are truncated or zero-padded to ``L``.
        factor: ``top_k = int(factor * ln L)`` delays.
        training: batch-shared delays (True) or per-sample delays (False).

    Returns:
        ``[B, L, H, D]``.
    """
    where = "auto_correlation"
    check_tensor("q", q, ("B", "L", "H", "E"), where=where)
    b, length, h, e = q.shape
    check_tensor("k", k, (b, "S", h, e), where=where)
    check_tensor("v", v, (b, k.shape[1], h, "D"), where=where)
    s = k.shape[1]
    if length > s:
        k = F.pad(k, (0, 0, 0, 0, 0, length - s))
        v = F.pad(v, (0, 0, 0, 0, 0, length - s))
    else:
        k, v = k[:, :length], v[:, :length]
    corr = period_correlation(q.permute(0, 2, 3, 1), k.permute(0, 2, 3, 1))
    top_k = top_k_delays(factor, length)
    agg = time_delay_agg_training if training else time_delay_agg_inference
    return agg(v.permute(0, 2, 3, 1), corr, top_k).permute(0, 3, 1, 2)
