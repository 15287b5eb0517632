"""Fast pure-PyTorch gated linear attention: parallel form and chunkwise form.

GLA (Yang et al., 2024, "Gated Linear Attention Transformers with Hardware-Efficient Training",
arXiv 2312.06635), chunkwise form. With ``b_t = sum_{s <= t} g_s`` (cumulative log gates, per key
dimension), the output is::

    o_t = sum_{s <= t} sum_d q_td k_sd exp(b_td - b_sd) v_s  +  (q_t * exp(b_t)) S_0

The paper's parallel form factors ``exp(b_t - b_s)`` into ``(q * exp(b)) (k * exp(-b))^T``, which
overflows once the gates have decayed far (``exp(-b)`` grows without bound). Every exponent here is
instead a difference ``b_later - b_earlier <= 0`` (for log gates ``<= 0``):

- ``parallel_gla`` materialises the ``[T, T, dk]`` tensor of those differences (the paper's
  "log-space" parallel form; memory ``T^2 dk``, for tests and short sequences);
- ``chunk_gla`` is the paper's chunkwise form. Across chunks the ``[dk, dv]`` state is carried
  (queries see it with ``exp(b_t - b_start)``, keys enter it with ``exp(b_end - b_s)``). Inside a
  chunk it uses the paper's secondary chunking: the chunk is cut into sub-chunks; between two
  sub-chunks the gate factorises around the boundary ``r`` before the query's sub-chunk,
  ``exp(b_t - b_s) = exp(b_t - b_r) exp(b_r - b_s)`` with both factors ``<= 1``, so it is a plain
  matmul; inside a sub-chunk the ``[c, c, dk]`` differences are materialised.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["parallel_gla", "chunk_gla"]

SUB_CHUNK = 16


def parallel_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention in the (log-space, stable) parallel form.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        g: ``[B, H, T, dk]`` log forget gates (``<= 0``).
        initial_state: ``[B, H, dk, dv]`` or ``None``.

    Returns:
        ``o [B, H, T, dv]`` and the final state ``[B, H, dk, dv]`` in the compute dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    t = q.shape[2]
    q, k, v, g = q.to(dtype), k.to(dtype), v.to(dtype), g.to(dtype)
    cum = g.cumsum(2)
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril().unsqueeze(-1)
    # gate[b, h, t, s, d] = exp(b_td - b_sd) for s <= t.
    gate = torch.exp(torch.where(causal, cum.unsqueeze(3) - cum.unsqueeze(2), float("-inf")))
    scores = (q.unsqueeze(3) * k.unsqueeze(2) * gate).sum(-1)  # [B, H, T, T]
    o = scores @ v
    cum_last = cum[:, :, -1:]
    final = (k * torch.exp(cum_last - cum)).transpose(-1, -2) @ v
    if initial_state is not None:
        s0 = initial_state.to(dtype)
        o = o + (q * torch.exp(cum)) @ s0
        final = final + torch.exp(cum_last).transpose(-1, -2) * s0
    return o, final


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention in the chunkwise form with secondary (sub-chunk) chunking.

    Sub-chunks have ``gcd(chunk_size, 16)`` tokens. Memory beyond the inputs is about
    ``(chunk_size / sub + sub) x`` the size of ``k``.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        g: ``[B, H, T, dk]`` log forget gates (``<= 0`` for the stability argument above).
        initial_state: ``[B, H, dk, dv]`` or ``None`` (zeros).
        chunk_size: tokens per chunk (clipped to ``T``).

    Returns:
        ``o [B, H, T, dv]`` and the final state ``[B, H, dk, dv]`` in the compute dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    size = max(1, min(chunk_size, t))
    n_chunks = math.ceil(t / size)
    pad = n_chunks * size - t
    # Padded tail: zero keys and log gate 0 (gate 1) leave the final state exact.
    q, k, v, g = (
        F.pad(x.to(dtype), (0, 0, 0, pad)).view(b, h, n_chunks, size, -1) for x in (q, k, v, g)
    )
    cum = g.cumsum(3)  # [B, H, NC, C, dk], from the start of each chunk
    cum_last = cum[:, :, :, -1:]  # [B, H, NC, 1, dk]

    o = _intra_chunk(q, k, v, cum)

    # Chunk contributions to the state, then the carry loop over chunks.
    chunk_kv = (k * torch.exp(cum_last - cum)).transpose(-1, -2) @ v  # [B, H, NC, dk, dv]
    chunk_decay = torch.exp(cum_last).transpose(-1, -2)  # [B, H, NC, dk, 1]
    state = q.new_zeros(b, h, dk, dv) if initial_state is None else initial_state.to(dtype)
    starts = []
    for c in range(n_chunks):
        starts.append(state)
        state = chunk_decay[:, :, c] * state + chunk_kv[:, :, c]
    o = o + (q * torch.exp(cum)) @ torch.stack(starts, dim=2)
    return o.reshape(b, h, n_chunks * size, dv)[:, :, :t], state


def _intra_chunk(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cum: torch.Tensor
) -> torch.Tensor:
    """``o_t = sum_{s <= t, same chunk} sum_d q_td k_sd exp(cum_td - cum_sd) v_s`` for all chunks.

    Shapes: ``q, k, cum [B, H, NC, C, dk]``, ``v [B, H, NC, C, dv]`` -> ``[B, H, NC, C, dv]``.
    """
    b, h, n_chunks, size, dk = q.shape
    sub = math.gcd(size, SUB_CHUNK)
    n_sub = size // sub
    split = (b, h, n_chunks, n_sub, sub, dk)
    q_s, k_s, cum_s = q.view(split), k.view(split), cum.view(split)

    # Inside each sub-chunk: materialise the [sub, sub, dk] gate differences (all <= 0).
    causal = torch.ones(sub, sub, dtype=torch.bool, device=q.device).tril().unsqueeze(-1)
    gate = torch.exp(torch.where(causal, cum_s.unsqueeze(-2) - cum_s.unsqueeze(-3), float("-inf")))
    scores = (q_s.unsqueeze(-2) * k_s.unsqueeze(-3) * gate).sum(-1)  # [.., n_sub, sub, sub]
    o = scores @ v.view(b, h, n_chunks, n_sub, sub, -1)
    if n_sub == 1:
        return o.view(b, h, n_chunks, size, -1)

    # Between sub-chunks: factor the gate around r, the position just before the query's
    # sub-chunk (cumulative log gate 0 at the chunk start).
    ref = F.pad(cum_s[:, :, :, :-1, -1], (0, 0, 1, 0))  # [B, H, NC, n_sub, dk]
    q_ref = q_s * torch.exp(cum_s - ref.unsqueeze(-2))  # [.., n_sub, sub, dk]
    # Key s is seen from query sub-chunk i only when s lies in an earlier sub-chunk; elsewhere
    # the exponent would be positive, so mask it before exp.
    key_sub = torch.arange(size, device=q.device) // sub
    earlier = (key_sub.unsqueeze(0) < torch.arange(n_sub, device=q.device).unsqueeze(1)).unsqueeze(
        -1
    )
    exponent = ref.unsqueeze(-2) - cum.unsqueeze(3)  # [B, H, NC, n_sub, C, dk]
    k_ref = k.unsqueeze(3) * torch.exp(torch.where(earlier, exponent, float("-inf")))
    o_between = (q_ref @ k_ref.transpose(-1, -2)) @ v.unsqueeze(3)  # [.., n_sub, sub, dv]
    return (o + o_between).view(b, h, n_chunks, size, -1)
