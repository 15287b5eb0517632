"""Multi-head softmax attention as a mixer.

Follows "Attention Is All You Need" (Vaswani et al., 2017, arXiv 1706.03762): separate query,
key and value projections, scaled dot-product attention per head, output projection. Uses
``torch.nn.functional.scaled_dot_product_attention`` (fused kernels where available). The causal
variant keeps a key/value cache as its state, so ``forward`` over pieces and ``step`` token by
token give the same result as ``forward`` over the whole sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mixerzoo.core.mixers.base import Mixer
from mixerzoo.core.registry import register_mixer

__all__ = ["Attention"]

KVCache = dict[str, torch.Tensor]


@register_mixer("attention")
class Attention(Mixer):
    """Multi-head softmax self-attention.

    Args:
        d_model: model width ``D``.
        n_heads: number of heads; ``D`` must be divisible by it.
        causal: mask future tokens (and enable ``step`` with a KV cache).
        dropout: dropout on the attention weights (training only).
        bias: use biases in the projections.

    Shapes:
        ``forward(x [B, T, D], state=None) -> (y [B, T, D], state)``; state is ``None`` for the
        bidirectional variant and ``{"k", "v": [B, H, S, D/H]}`` (all keys/values so far) when causal.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int = 8,
        causal: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__(d_model)
        if n_heads <= 0 or d_model % n_heads:
            raise ValueError(
                f"Attention: d_model ({d_model}) must be divisible by n_heads ({n_heads}); "
                f"choose n_heads among the divisors of d_model"
            )
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.causal = causal
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, state: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache | None]:
        self.check_input(x)
        b, t, _ = x.shape
        q, k, v = (
            self._heads(self.q_proj(x)),
            self._heads(self.k_proj(x)),
            self._heads(self.v_proj(x)),
        )
        mask = None
        is_causal = False
        if state is not None:
            if not self.causal:
                raise ValueError(
                    "Attention(causal=False) attends to the whole sequence and takes no state; "
                    "pass state=None or build it with causal=True"
                )
            k = torch.cat([state["k"].to(k.dtype), k], dim=2)
            v = torch.cat([state["v"].to(v.dtype), v], dim=2)
        if self.causal:
            past = k.shape[2] - t
            if past == 0:
                is_causal = True
            else:
                # Query i (absolute position past + i) sees keys 0 .. past + i.
                mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(
                    diagonal=past
                )
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        y = self.out_proj(y.transpose(1, 2).reshape(b, t, self.d_model))
        return y, ({"k": k, "v": v} if self.causal else None)

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> KVCache | None:
        if not self.causal:
            return None
        empty = torch.zeros(batch_size, self.n_heads, 0, self.d_head, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone()}

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, causal={self.causal}, dropout={self.dropout}"
