"""Multi-head softmax attention as a mixer, for self- and cross-attention.

Follows "Attention Is All You Need" (Vaswani et al., 2017, arXiv 1706.03762): separate query,
key and value projections, scaled dot-product attention per head, output projection. The causal
variant keeps a key/value cache as its state, so ``forward`` over pieces and ``step`` token by
token give the same result as ``forward`` over the whole sequence.

- **Cross-attention** (``forward(x, memory=...)``): queries from ``x``, keys and values from another
  sequence ``memory [B, S, D]`` (an encoder output), with an optional ``memory_mask [B, S]``; the
  decoders of the Transformer forecasters use it.
- **Resets and padding** (the mixer contract): the cache carries a per-key validity flag, so keys
  of an episode that ended (``reset``) or of padded positions (``mask``) are never attended to;
  ``core.state.reset_state`` clears a row's cache by clearing its flags.

The product itself is :func:`mixerzoo.core.ops.attention.dot_product_attention` (PyTorch's fused
kernels, or a faster explicit form on the CPU).
"""

from __future__ import annotations

import torch
from torch import nn

from mixerzoo.core.layers import merge_heads, split_heads
from mixerzoo.core.layers.sequence import check_mask, segment_ids
from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops.attention import dot_product_attention
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.validation import check_tensor

__all__ = ["Attention", "dot_product_attention"]

KVCache = dict[str, torch.Tensor]


@register_mixer("attention")
class Attention(Mixer):
    """Multi-head softmax attention (self-attention, or cross-attention with ``memory``).

    Args:
        d_model: model width ``D``.
        n_heads: number of heads; ``D`` must be divisible by it.
        causal: mask future tokens (and enable ``step`` with a KV cache).
        dropout: dropout on the attention weights (training only).
        bias: use biases in the projections.

    Shapes:
        ``forward(x [B, T, D], state=None, *, memory=None, memory_mask=None, reset=None,
        mask=None) -> (y [B, T, D], state)``. The state is ``None`` for the bidirectional variant
        and for cross-attention, and the cache ``{"k", "v": [B, H, S, D/H], "valid": [B, S]}`` (all
        keys/values so far, and whether each may still be attended to) when causal.
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

    def _attend(self, q, k, v, attn_mask=None, is_causal=False) -> torch.Tensor:
        y = dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        return self.out_proj(merge_heads(y))

    def forward(
        self,
        x: torch.Tensor,
        state: KVCache | None = None,
        *,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        reset: Flags = None,
        mask: Flags = None,
    ) -> tuple[torch.Tensor, KVCache | None]:
        self.check_input(x)
        mask = self.check_mask(mask, x)
        if memory is not None:
            return self._cross(x, memory, memory_mask, state, reset), None
        reset = self.check_reset(reset, x)
        b, t, _ = x.shape
        q, k, v = (
            split_heads(proj(x), self.n_heads) for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        if not self.causal:
            if state is not None:
                raise ValueError(
                    "Attention(causal=False) attends to the whole sequence and takes no state; "
                    "pass state=None or build it with causal=True"
                )
            attn_mask = (
                None if mask is None else _with_self(mask.view(b, 1, 1, t).expand(b, 1, t, t))
            )
            return self._attend(q, k, v, attn_mask), None

        if state is None and reset is None and mask is None:
            y = self._attend(q, k, v, is_causal=True)
            return y, {"k": k, "v": v, "valid": torch.ones(b, t, dtype=torch.bool, device=x.device)}
        if state is None:
            state = self.init_state(b, x.device, k.dtype)
        self._check_state(state, b)
        past = state["k"].shape[2]
        keys = torch.cat([state["k"].to(k.dtype), k], dim=2)
        values = torch.cat([state["v"].to(v.dtype), v], dim=2)
        real = torch.ones(b, t, dtype=torch.bool, device=x.device) if mask is None else mask
        seg = segment_ids(reset, (b, t), x.device)
        # Cached keys belong to segment 0 (the one the carried state continues).
        key_seg = torch.cat([seg.new_zeros(b, past), seg], dim=1)
        key_ok = torch.cat([state["valid"].to(x.device), real], dim=1)
        # Query i (absolute position past + i) sees the valid keys of its own segment up to itself.
        order = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
        allowed = order & key_ok.unsqueeze(1) & (key_seg.unsqueeze(1) == seg.unsqueeze(2))
        y = self._attend(q, keys, values, _with_self(allowed.unsqueeze(1), past))
        last_seg = seg[:, -1:] if reset is not None else seg.new_zeros(b, 1)
        valid = key_ok & (key_seg == last_seg)
        return y, {"k": keys, "v": values, "valid": valid}

    def _cross(self, x, memory, memory_mask, state, reset) -> torch.Tensor:
        where = f"{type(self).__name__}.forward"
        if state is not None or reset is not None:
            raise ValueError(
                f"{where}: cross-attention (memory=...) reads a whole memory and takes no state "
                f"or reset"
            )
        b, t, _ = x.shape
        check_tensor("memory", memory, (b, "S", self.d_model), where=where)
        s = memory.shape[1]
        q = split_heads(self.q_proj(x), self.n_heads)
        k, v = (
            split_heads(self.k_proj(memory), self.n_heads),
            split_heads(self.v_proj(memory), self.n_heads),
        )
        memory_mask = check_mask(memory_mask, memory, where) if memory_mask is not None else None
        attn_mask = None
        if memory_mask is not None:
            if not bool(memory_mask.any(1).all()):
                raise ValueError(f"{where}: memory_mask leaves a row without any real memory token")
            attn_mask = memory_mask.view(b, 1, 1, s)
        return self._attend(q, k, v, attn_mask)

    def _check_state(self, state: KVCache, batch: int) -> None:
        if not isinstance(state, dict) or set(state) != {"k", "v", "valid"}:
            raise TypeError(
                "Attention: state must be the dict {'k', 'v', 'valid'} returned by forward/step "
                "or init_state"
            )
        check_tensor(
            "state['k']", state["k"], (batch, self.n_heads, "S", self.d_head), where="Attention"
        )

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> KVCache | None:
        if not self.causal:
            return None
        empty = torch.zeros(batch_size, self.n_heads, 0, self.d_head, device=device, dtype=dtype)
        valid = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
        return {"k": empty, "v": empty.clone(), "valid": valid}

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, causal={self.causal}, dropout={self.dropout}"


def _with_self(allowed: torch.Tensor, past: int = 0) -> torch.Tensor:
    """Let a query whose row allows no key attend to its own key, so padded queries (whose
    outputs are unspecified) never produce NaN; a real query always sees itself already."""
    empty = ~allowed.any(-1, keepdim=True)
    if not bool(empty.any()):
        return allowed
    t, s = allowed.shape[-2], allowed.shape[-1]
    own = torch.zeros(t, s, dtype=torch.bool, device=allowed.device)
    own[torch.arange(t), past + torch.arange(t)] = True
    return allowed | (empty & own)
