"""Auto-Correlation (Autoformer) as a mixer.

Follows "Autoformer: Decomposition Transformers with Auto-Correlation for Long-Term Series
Forecasting" (Wu et al., NeurIPS 2021, arXiv 2106.13008) and the official ``AutoCorrelation`` /
``AutoCorrelationLayer`` (thuml/Autoformer):

- queries, keys and values are projected per head like attention;
- period-based dependencies: the auto-correlation ``R(tau) = sum_t q[(t + tau) mod L] k[t]`` of
  every head and channel, computed with the real FFT as ``irfft(rfft(q) * conj(rfft(k)))``;
- time-delay aggregation: the ``top_k = int(factor * ln L)`` delays with the largest
  correlation (averaged over heads and channels) are kept, their correlations are turned into
  weights by a softmax, and the values rolled by each delay (``roll(v, -tau)``, i.e.
  ``v[(t + tau) mod L]``) are summed with those weights. In training the delays are shared by
  the batch (chosen on the batch mean, the official ``time_delay_agg_training``); at inference
  each sample picks its own delays (``time_delay_agg_inference``). The weighted sum of rolled
  values is computed as one FFT circular correlation with the sparse delay kernel (equal to the
  official loop of ``torch.roll`` up to rounding, and several times faster).
- keys/values longer than the queries are truncated, shorter ones zero-padded (after the
  projections), as in the official code.

Deviations: ``top_k`` is clamped to ``[1, L]`` (the official code aggregates nothing when
``int(factor * ln L) == 0``, i.e. for ``L < 3`` at ``factor=1``, and fails when it exceeds ``L``);
the official layer's unused attention dropout is left out.

The mixer is bidirectional (``causal=False``): the circular correlation looks at the whole series.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mixerzoo.core.mixers.base import Mixer
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.validation import check_tensor

__all__ = [
    "AutoCorrelation",
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


@register_mixer("autocorrelation")
class AutoCorrelation(Mixer):
    """Autoformer's multi-head Auto-Correlation (see the module docstring).

    Args:
        d_model: model width ``D``.
        n_heads: number of heads; ``D`` must be divisible by it.
        factor: ``top_k = int(factor * ln L)`` delays (Autoformer's default 1).
        bias: use biases in the projections.

    Shapes:
        ``forward(x [B, T, D]) -> (y [B, T, D], None)``;
        ``attend(queries [B, L, D], keys [B, S, D], values [B, S, D]) -> [B, L, D]``.
        ``self.training`` chooses the batch-shared (training) or per-sample (eval) aggregation.
    """

    causal = False

    def __init__(self, d_model: int, n_heads: int = 8, factor: float = 1.0, bias: bool = True):
        super().__init__(d_model)
        if n_heads <= 0 or d_model % n_heads:
            raise ValueError(
                f"AutoCorrelation: d_model ({d_model}) must be divisible by n_heads ({n_heads}); "
                f"choose n_heads among the divisors of d_model"
            )
        if factor <= 0:
            raise ValueError(f"AutoCorrelation: factor must be positive, got {factor}")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.factor = factor
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def attend(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """Auto-Correlation of ``queries`` with ``keys``/``values`` (cross use, e.g. the decoder).

        Args:
            queries: ``[B, L, D]``.
            keys: ``[B, S, D]``.
            values: ``[B, S, D]``.

        Returns:
            ``[B, L, D]``.
        """
        where = f"{type(self).__name__}.attend"
        check_tensor("queries", queries, ("B", "L", self.d_model), where=where)
        b, length, _ = queries.shape
        check_tensor("keys", keys, (b, "S", self.d_model), where=where)
        check_tensor("values", values, (b, keys.shape[1], self.d_model), where=where)
        s = keys.shape[1]
        q = self.q_proj(queries).view(b, length, self.n_heads, self.d_head)
        k = self.k_proj(keys).view(b, s, self.n_heads, self.d_head)
        v = self.v_proj(values).view(b, s, self.n_heads, self.d_head)
        out = auto_correlation(q, k, v, factor=self.factor, training=self.training)
        return self.out_proj(out.reshape(b, length, self.d_model))

    def forward(self, x: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        self.check_input(x)
        if state is not None:
            raise ValueError(
                "AutoCorrelation looks at the whole series and takes no state; pass state=None"
            )
        return self.attend(x, x, x), None

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, factor={self.factor}"
