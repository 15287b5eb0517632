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

import torch
from torch import Tensor, nn

from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops.autocorrelation import (  # noqa: F401  (public API)
    auto_correlation,
    period_correlation,
    time_delay_agg_inference,
    time_delay_agg_training,
    top_k_delays,
)
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
    supports_mask = False

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

    def forward(
        self, x: Tensor, state: None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, None]:
        self.check_args(x, reset, mask)  # refuses a reset and a mask
        if state is not None:
            raise ValueError(
                "AutoCorrelation looks at the whole series and takes no state; pass state=None"
            )
        return self.attend(x, x, x), None

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, factor={self.factor}"
