"""ProbSparse self-attention (Informer) as a mixer.

Follows "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting"
(Zhou et al., AAAI 2021, arXiv 2012.07436) and the ``ProbAttention`` / ``AttentionLayer`` of the
official code (zhouhaoyi/Informer2020). Per head:

1. sample ``U_part = factor * ceil(ln L_K)`` key positions per query (uniformly, with replacement,
   the same positions for every batch element and head, as the official code does);
2. score each query by the sparsity measurement ``M(q) = max_j(q k_j) - sum_j(q k_j) / L_K``
   over its sampled keys (note the division by ``L_K``, not by the number of samples);
3. the top ``u = factor * ceil(ln L_Q)`` queries ("active") get full scaled-dot-product attention
   over all keys (scale ``1 / sqrt(d_head)``);
4. the other ("lazy") queries output ``mean(V)``, or, in the masked (decoder) variant,
   ``cumsum(V)`` -- the running *sum*, not mean, exactly as the official code -- and the active
   queries are causally masked (the official ``ProbMask``).

Deviations from the official code, all invisible at the defaults:

- ``U_part`` is at least 1 (the official code crashes when ``L_K == 1`` with cross-attention).
- ``dropout`` is applied to the active queries' attention weights; the official ``ProbAttention``
  builds a dropout layer but never applies it (``dropout=0.0`` here reproduces it exactly).

Streaming: the masked variant never attends to future keys, but *which* queries are active is
decided from sequence-level statistics (including future keys through the sampled scores), so a
prefix's output changes when the sequence grows. It is therefore not a streaming mixer:
``causal`` is always False and the variant is selected with ``masked=True``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mixerzoo.core.layers import split_heads
from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops.probsparse import prob_sparse_attention, probsparse_counts  # noqa: F401  (public API)
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.validation import check_tensor

__all__ = ["ProbSparseAttention", "prob_sparse_attention", "probsparse_counts"]


@register_mixer("probsparse_attention")
class ProbSparseAttention(Mixer):
    """Informer's multi-head ProbSparse self-attention (see the module docstring).

    Args:
        d_model: model width ``D``.
        n_heads: number of heads; ``D`` must be divisible by it.
        factor: sampling factor ``c`` (Informer's default 5).
        masked: the decoder variant (causally masked active queries, ``cumsum(V)`` for lazy
            ones); not a streaming mixer, so ``causal`` stays False.
        dropout: dropout on the attention weights of the active queries (training only).
        mix: Informer's ``AttentionLayer(mix=True)`` output layout (used in its decoder
            self-attention): the ``[B, H, L, d_head]`` context is read as ``[B, L, H * d_head]``.
        bias: use biases in the projections.

    Shapes:
        ``forward(x [B, T, D]) -> (y [B, T, D], None)``;
        ``attend(queries [B, L_Q, D], keys [B, L_K, D], values [B, L_K, D]) -> [B, L_Q, D]``.
    """

    causal = False
    supports_mask = False

    def __init__(
        self,
        d_model: int,
        n_heads: int = 8,
        factor: int = 5,
        masked: bool = False,
        dropout: float = 0.0,
        mix: bool = False,
        bias: bool = True,
    ):
        super().__init__(d_model)
        if n_heads <= 0 or d_model % n_heads:
            raise ValueError(
                f"ProbSparseAttention: d_model ({d_model}) must be divisible by n_heads "
                f"({n_heads}); choose n_heads among the divisors of d_model"
            )
        if not isinstance(factor, int) or factor <= 0:
            raise ValueError(f"ProbSparseAttention: factor must be a positive int, got {factor!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ProbSparseAttention: dropout must be in [0, 1), got {dropout}")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.factor = factor
        self.masked = masked
        self.dropout = dropout
        self.mix = mix
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """ProbSparse attention of ``queries`` over ``keys``/``values`` (cross-attention use).

        Args:
            queries: ``[B, L_Q, D]``.
            keys: ``[B, L_K, D]``.
            values: ``[B, L_K, D]``.
            generator: random generator for the key sampling (default: torch's global one).

        Returns:
            ``[B, L_Q, D]``.
        """
        where = f"{type(self).__name__}.attend"
        check_tensor("queries", queries, ("B", "L_Q", self.d_model), where=where)
        b, l_q, _ = queries.shape
        check_tensor("keys", keys, (b, "L_K", self.d_model), where=where)
        check_tensor("values", values, (b, keys.shape[1], self.d_model), where=where)
        q = split_heads(self.q_proj(queries), self.n_heads)
        k = split_heads(self.k_proj(keys), self.n_heads)
        v = split_heads(self.v_proj(values), self.n_heads)
        context, _ = prob_sparse_attention(
            q,
            k,
            v,
            factor=self.factor,
            masked=self.masked,
            dropout_p=self.dropout if self.training else 0.0,
            generator=generator,
        )
        if self.mix:
            # Informer's mix=True reads the head-major context buffer as [B, L, H * d_head].
            out = context.contiguous().view(b, l_q, self.d_model)
        else:
            out = context.transpose(1, 2).reshape(b, l_q, self.d_model)
        return self.out_proj(out)

    def forward(
        self, x: Tensor, state: None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, None]:
        self.check_args(x, reset, mask)  # refuses a reset and a mask
        if state is not None:
            raise ValueError(
                "ProbSparseAttention attends to the whole sequence and takes no state; pass state=None"
            )
        return self.attend(x, x, x), None

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, factor={self.factor}, "
            f"masked={self.masked}, dropout={self.dropout}, mix={self.mix}"
        )
