"""Gated linear attention (GLA) as a mixer.

Follows "Gated Linear Attention Transformers with Hardware-Efficient Training" (Yang, Wang,
Shen, Panda and Kim, 2024, arXiv 2312.06635), the GLA Transformer layer::

    Q = X W_Q,  K = X W_K,  V = X W_V                      (d_k = D/2, d_v = D overall)
    alpha_t = sigmoid(x_t W_a1 W_a2 + b_a)^(1/tau)          (low rank 16, tau = 16)
    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,   o_t = q_t S_t   (per head)
    r_t = swish(x_t W_r + b_r)
    y_t = (r_t * concat_h(LN(o_t^h))) W_O

The per-head LayerNorm is a GroupNorm with one group per head (the authors' later library uses
an RMSNorm there). Queries are scaled by ``d_k^-0.5`` per head, as in the authors' code; the
paper's equations leave the scale implicit. No short convolution (the paper's layer has none).

``reset`` and ``mask`` go to the op (:func:`mixerzoo.core.ops.gla.gla`), whose semantics are the
mixer contract's: a reset drops the state, a padded step is the identity on it (log gate 0, key
dropped). Everything else in the layer acts token by token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixerzoo.core.layers import head_norm, merge_heads, split_heads
from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops.gla import gla
from mixerzoo.core.registry import register_mixer

__all__ = ["GatedLinearAttention"]


@register_mixer("gla")
class GatedLinearAttention(Mixer):
    """Gated linear attention layer.

    Args:
        d_model: model width ``D``.
        n_heads: number of heads ``H``.
        expand_k: total key width ``int(expand_k * D)`` (paper: 0.5), divisible by ``H``.
        expand_v: total value width ``int(expand_v * D)`` (paper: 1), divisible by ``H``.
        gate_low_rank: rank of the forget-gate projection ``W_a1 W_a2`` (paper: 16).
        gate_logit_normalizer: ``tau`` in ``alpha = sigmoid(.)^(1/tau)`` (paper: 16).
        norm_eps: per-head norm epsilon.
        chunk_size: chunk length of the chunkwise form.
        backend: op backend (``None``, ``"naive"``, ``"chunk"``).

    Shapes:
        ``forward(x [B, T, D], state=None, *, reset=None, mask=None) -> (y [B, T, D],
        S [B, H, d_k, d_v])``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        gate_low_rank: int = 16,
        gate_logit_normalizer: float = 16.0,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        backend: str | None = None,
    ):
        super().__init__(d_model)
        key_width, value_width = int(expand_k * d_model), int(expand_v * d_model)
        if n_heads <= 0 or key_width <= 0 or key_width % n_heads or value_width % n_heads:
            raise ValueError(
                f"GatedLinearAttention: key width {key_width} (expand_k * d_model) and value width "
                f"{value_width} (expand_v * d_model) must be positive multiples of n_heads ({n_heads})"
            )
        if gate_logit_normalizer <= 0:
            raise ValueError(
                f"GatedLinearAttention: gate_logit_normalizer must be positive, got {gate_logit_normalizer}"
            )
        self.n_heads = n_heads
        self.d_key = key_width // n_heads
        self.d_value = value_width // n_heads
        self.gate_logit_normalizer = gate_logit_normalizer
        self.chunk_size = chunk_size
        self.backend = backend
        self.q_proj = nn.Linear(d_model, key_width, bias=False)
        self.k_proj = nn.Linear(d_model, key_width, bias=False)
        self.v_proj = nn.Linear(d_model, value_width, bias=False)
        self.gate_proj = nn.Sequential(
            nn.Linear(d_model, gate_low_rank, bias=False), nn.Linear(gate_low_rank, key_width)
        )
        self.r_proj = nn.Linear(d_model, value_width)
        self.head_norm = nn.GroupNorm(n_heads, value_width, eps=norm_eps)
        self.out_proj = nn.Linear(value_width, d_model, bias=False)

    def forward(
        self, x: Tensor, state: Tensor | None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, Tensor]:
        reset, mask = self.check_args(x, reset, mask)
        h = self.n_heads
        q = split_heads(self.q_proj(x), h) * self.d_key**-0.5
        k, v = split_heads(self.k_proj(x), h), split_heads(self.v_proj(x), h)
        # log(sigmoid(z)^(1/tau)) = logsigmoid(z) / tau, computed stably in log space.
        g = split_heads(F.logsigmoid(self.gate_proj(x)) / self.gate_logit_normalizer, h)
        o, s_new = gla(
            q,
            k,
            v,
            g,
            state,
            reset=reset,
            mask=mask,
            backend=self.backend,
            chunk_size=self.chunk_size,
        )
        norm = self.head_norm
        o = head_norm(merge_heads(o), h, norm.weight, norm.bias, norm.eps)
        return self.out_proj(F.silu(self.r_proj(x)) * o), s_new

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        return torch.zeros(
            batch_size, self.n_heads, self.d_key, self.d_value, device=device, dtype=dtype
        )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, d_key={self.d_key}, "
            f"d_value={self.d_value}, tau={self.gate_logit_normalizer}"
        )
