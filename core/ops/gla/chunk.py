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

One gate per head (``g [B, H, T]``: "simple GLA", fla's ``chunk_simple_gla``; RetNet's retention
is the case ``g = log(gamma)``) takes a cheaper path: the decay between two positions is a scalar,
so the chunk's ``[C, C]`` decay matrix multiplies the ``q k^T`` scores (no sub-chunks).

**Resets and masks** (see :mod:`mixerzoo.core.ops.gla.flags`). A masked step becomes log gate 0
and key 0 (the identity on the state). A reset position's own gate never matters (it decays a
dropped state), so it is set to 0 before the cumulative sums; then, with segment ids ``seg``,
every term is kept or dropped by a mask on its exponent before ``exp`` (exact zeros, zero
gradients, no ``-inf`` arithmetic): pairs ``s <= t`` iff ``seg_s == seg_t``; the carried state
at ``t`` iff ``seg_t`` is the segment entering the chunk; keys in the chunk-end state iff in the
chunk's last segment; the chunk decay iff no reset in the chunk. Between sub-chunks the pair mask
factorises around ``r`` too: ``seg_s == seg_t`` iff ``seg_s == seg_r`` and ``seg_t == seg_r``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mixerzoo.core.layers.sequence import segment_ids
from mixerzoo.core.ops.gla.flags import chunk_segments

__all__ = ["parallel_gla", "chunk_gla", "apply_flags"]

SUB_CHUNK = 16


def apply_flags(
    k: torch.Tensor, g: torch.Tensor, reset: torch.Tensor | None, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and log gates with masked steps made the identity (key 0, log gate 0) and reset
    positions' log gates set to 0 (their decay multiplies a dropped state).

    Args:
        k: ``[B, H, T, dk]``.
        g: ``[B, H, T, dk]``, or ``[B or 1, H, T]`` (one gate per head; a batch of 1 broadcasts
            and becomes ``B`` rows when a flag is given).
        reset, mask: ``[B, T]`` bool or ``None``.
    """
    if mask is not None:
        keep = mask[:, None, :]
        k = torch.where(keep.unsqueeze(-1), k, 0.0)
        g = torch.where(keep if g.dim() == 3 else keep.unsqueeze(-1), g, 0.0)
    if reset is not None:
        drop = reset[:, None, :]
        g = torch.where(drop if g.dim() == 3 else drop.unsqueeze(-1), 0.0, g)
    return k, g


def parallel_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention in the (log-space, stable) parallel form.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        g: ``[B, H, T, dk]`` log forget gates (``<= 0``), or ``[B or 1, H, T]`` (one per head).
        initial_state: ``[B, H, dk, dv]`` or ``None``.
        reset, mask: ``[B, T]`` bool or ``None`` (module docstring).

    Returns:
        ``o [B, H, T, dv]`` and the final state ``[B, H, dk, dv]`` in the compute dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    t = q.shape[2]
    q, k, v, g = q.to(dtype), k.to(dtype), v.to(dtype), g.to(dtype)
    k, g = apply_flags(k, g, reset, mask)
    scalar = g.dim() == 3
    cum = g.cumsum(2)
    allowed = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    if reset is not None:
        seg = segment_ids(reset, reset.shape)
        allowed = (allowed & (seg.unsqueeze(-1) == seg.unsqueeze(-2))).unsqueeze(1)  # [B,1,T,T]
    if scalar:
        decay = torch.exp(
            torch.where(allowed, cum.unsqueeze(-1) - cum.unsqueeze(-2), float("-inf"))
        )
        scores = q @ k.transpose(-1, -2) * decay  # [B, H, T, T]
        cum = cum.unsqueeze(-1)  # [B, H, T, 1]: the same decay for every key dimension
    else:
        # gate[b, h, t, s, d] = exp(b_td - b_sd) for s <= t.
        gate = torch.exp(
            torch.where(allowed.unsqueeze(-1), cum.unsqueeze(3) - cum.unsqueeze(2), float("-inf"))
        )
        scores = (q.unsqueeze(3) * k.unsqueeze(2) * gate).sum(-1)  # [B, H, T, T]
    o = scores @ v
    cum_last = cum[:, :, -1:]
    if reset is None:
        final = (k * torch.exp(cum_last - cum)).transpose(-1, -2) @ v
    else:
        in_last = (seg == seg[:, -1:]).view(seg.shape[0], 1, t, 1)
        final = (k * torch.exp(torch.where(in_last, cum_last - cum, float("-inf")))).transpose(
            -1, -2
        ) @ v
    if initial_state is not None:
        s0 = initial_state.to(dtype)
        if reset is None:
            o = o + (q * torch.exp(cum)) @ s0
            final = final + torch.exp(cum_last).transpose(-1, -2) * s0
        else:
            first = (seg == 0).view(seg.shape[0], 1, t, 1)
            o = o + (q * torch.exp(torch.where(first, cum, float("-inf")))) @ s0
            kept = first[:, :, -1:]
            final = (
                final + torch.exp(torch.where(kept, cum_last, float("-inf"))).transpose(-1, -2) * s0
            )
    return o, final


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention in the chunkwise form.

    With per-key gates, secondary (sub-chunk) chunking: sub-chunks have ``gcd(chunk_size, 16)``
    tokens and memory beyond the inputs is about ``(chunk_size / sub + sub) x`` the size of
    ``k``. With one gate per head, the scalar ``[C, C]`` decay form.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        g: ``[B, H, T, dk]`` log forget gates (``<= 0`` for the stability argument above), or
            ``[B or 1, H, T]`` (one per head; a batch of 1 is shared by every row).
        initial_state: ``[B, H, dk, dv]`` or ``None`` (zeros).
        chunk_size: tokens per chunk (clipped to ``T``).
        reset, mask: ``[B, T]`` bool or ``None`` (module docstring).

    Returns:
        ``o [B, H, T, dv]`` and the final state ``[B, H, dk, dv]`` in the compute dtype.
    """
    if g.dim() == 3:
        return _chunk_simple_gla(q, k, v, g, initial_state, chunk_size, reset, mask)
    dtype = torch.promote_types(q.dtype, torch.float32)
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    size = max(1, min(chunk_size, t))
    n_chunks = math.ceil(t / size)
    pad = n_chunks * size - t
    k, g = apply_flags(k, g, reset, mask)
    # Padded tail: zero keys and log gate 0 (gate 1) leave the final state exact.
    q, k, v, g = (
        F.pad(x.to(dtype), (0, 0, 0, pad)).view(b, h, n_chunks, size, -1) for x in (q, k, v, g)
    )
    cum = g.cumsum(3)  # [B, H, NC, C, dk], from the start of each chunk
    cum_last = cum[:, :, :, -1:]  # [B, H, NC, 1, dk]
    seg, seg_prev = chunk_segments(reset, n_chunks, size) if reset is not None else (None, None)

    o = _intra_chunk(q, k, v, cum, seg)

    # Chunk contributions to the state, then the carry loop over chunks.
    if seg is None:
        chunk_kv = (k * torch.exp(cum_last - cum)).transpose(-1, -2) @ v  # [B, H, NC, dk, dv]
        chunk_decay = torch.exp(cum_last).transpose(-1, -2)  # [B, H, NC, dk, 1]
        q_read = q * torch.exp(cum)
    else:
        in_last = (seg == seg[..., -1:]).unsqueeze(-1)  # [B, 1, NC, C, 1]
        to_end = torch.exp(torch.where(in_last, cum_last - cum, float("-inf")))
        chunk_kv = (k * to_end).transpose(-1, -2) @ v
        carried = (seg[..., -1] == seg_prev).view(b, 1, n_chunks, 1, 1)
        chunk_decay = torch.exp(torch.where(carried, cum_last, float("-inf"))).transpose(-1, -2)
        reads = (seg == seg_prev.unsqueeze(-1)).unsqueeze(-1)
        q_read = q * torch.exp(torch.where(reads, cum, float("-inf")))
    state = q.new_zeros(b, h, dk, dv) if initial_state is None else initial_state.to(dtype)
    starts = []
    for c in range(n_chunks):
        starts.append(state)
        state = chunk_decay[:, :, c] * state + chunk_kv[:, :, c]
    o = o + q_read @ torch.stack(starts, dim=2)
    return o.reshape(b, h, n_chunks * size, dv)[:, :, :t], state


def _intra_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cum: torch.Tensor,
    seg: torch.Tensor | None,
) -> torch.Tensor:
    """``o_t = sum_{s <= t, same chunk} sum_d q_td k_sd exp(cum_td - cum_sd) v_s`` for all chunks
    (and ``seg_s == seg_t`` when segment ids ``seg [B, 1, NC, C]`` are given).

    Shapes: ``q, k, cum [B, H, NC, C, dk]``, ``v [B, H, NC, C, dv]`` -> ``[B, H, NC, C, dv]``.
    """
    b, h, n_chunks, size, dk = q.shape
    sub = math.gcd(size, SUB_CHUNK)
    n_sub = size // sub
    split = (b, h, n_chunks, n_sub, sub, dk)
    q_s, k_s, cum_s = q.view(split), k.view(split), cum.view(split)
    seg_s = seg.view(seg.shape[0], 1, n_chunks, n_sub, sub) if seg is not None else None

    # Inside each sub-chunk: materialise the [sub, sub, dk] gate differences (all <= 0).
    causal = torch.ones(sub, sub, dtype=torch.bool, device=q.device).tril()
    if seg_s is not None:
        causal = causal & (seg_s.unsqueeze(-1) == seg_s.unsqueeze(-2))  # [B, 1, NC, n_sub, s, s]
    causal = causal.unsqueeze(-1)
    gate = torch.exp(torch.where(causal, cum_s.unsqueeze(-2) - cum_s.unsqueeze(-3), float("-inf")))
    scores = (q_s.unsqueeze(-2) * k_s.unsqueeze(-3) * gate).sum(-1)  # [.., n_sub, sub, sub]
    o = scores @ v.view(b, h, n_chunks, n_sub, sub, -1)
    if n_sub == 1:
        return o.view(b, h, n_chunks, size, -1)

    # Between sub-chunks: factor the gate around r, the position just before the query's
    # sub-chunk (cumulative log gate 0 at the chunk start).
    ref = F.pad(cum_s[:, :, :, :-1, -1], (0, 0, 1, 0))  # [B, H, NC, n_sub, dk]
    q_exponent = cum_s - ref.unsqueeze(-2)  # [.., n_sub, sub, dk]
    # Key s is seen from query sub-chunk i only when s lies in an earlier sub-chunk; elsewhere
    # the exponent would be positive, so mask it before exp.
    key_sub = torch.arange(size, device=q.device) // sub
    earlier = (key_sub.unsqueeze(0) < torch.arange(n_sub, device=q.device).unsqueeze(1)).unsqueeze(
        -1
    )
    exponent = ref.unsqueeze(-2) - cum.unsqueeze(3)  # [B, H, NC, n_sub, C, dk]
    if seg_s is None:
        q_ref = q_s * torch.exp(q_exponent)
    else:
        # Segment at r for each query sub-chunk (sub-chunk 0 sees no earlier key: any value).
        seg_ref = F.pad(seg_s[..., :-1, -1], (1, 0))  # [B, 1, NC, n_sub]
        q_same = (seg_s == seg_ref.unsqueeze(-1)).unsqueeze(-1)  # [B, 1, NC, n_sub, sub, 1]
        q_ref = q_s * torch.exp(torch.where(q_same, q_exponent, float("-inf")))
        k_same = seg.unsqueeze(3) == seg_ref.unsqueeze(-1)  # [B, 1, NC, n_sub, C]
        earlier = earlier & k_same.unsqueeze(-1)
    k_ref = k.unsqueeze(3) * torch.exp(torch.where(earlier, exponent, float("-inf")))
    o_between = (q_ref @ k_ref.transpose(-1, -2)) @ v.unsqueeze(3)  # [.., n_sub, sub, dv]
    return (o + o_between).view(b, h, n_chunks, size, -1)


def _chunk_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None,
    chunk_size: int,
    reset: torch.Tensor | None,
    mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise form with one log gate per head, ``g [B or 1, H, T]``.

    Inside a chunk the parallel form ``(Q K^T * D) V`` with ``D_ts = exp(cum_t - cum_s)``
    (``s <= t``); across chunks the ``[dk, dv]`` state, as RetNet's chunkwise recurrent form.
    The intra-chunk decays of all chunks are computed at once, only the states loop.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    size = max(1, min(chunk_size, t))
    n_chunks = math.ceil(t / size)
    pad = n_chunks * size - t
    k, g = apply_flags(k, g, reset, mask)
    # Padded tail: zero keys and log gate 0 (no decay) leave the final state exact.
    q, k, v = (F.pad(x.to(dtype), (0, 0, 0, pad)).view(b, h, n_chunks, size, -1) for x in (q, k, v))
    cum = F.pad(g.to(dtype), (0, pad)).view(g.shape[0], h, n_chunks, size).cumsum(-1)
    cum_last = cum[..., -1:]  # [B or 1, H, NC, 1]

    allowed = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    if reset is not None:
        seg, seg_prev = chunk_segments(reset, n_chunks, size)
        allowed = allowed & (seg.unsqueeze(-1) == seg.unsqueeze(-2))
    intra_decay = torch.exp(
        torch.where(allowed, cum.unsqueeze(-1) - cum.unsqueeze(-2), float("-inf"))
    )  # [B or 1, H, NC, C, C]
    o = (q @ k.transpose(-1, -2) * intra_decay) @ v

    # What each chunk adds to the state (keys decayed to the chunk end), then the carry loop.
    if reset is None:
        to_end = torch.exp(cum_last - cum)
        chunk_decay = torch.exp(cum_last).unsqueeze(-1)  # [B or 1, H, NC, 1, 1]
        read = torch.exp(cum)
    else:
        to_end = torch.exp(torch.where(seg == seg[..., -1:], cum_last - cum, float("-inf")))
        carried = (seg[..., -1] == seg_prev).unsqueeze(-1)  # [B, 1, NC, 1]
        chunk_decay = torch.exp(torch.where(carried, cum_last, float("-inf"))).unsqueeze(-1)
        read = torch.exp(torch.where(seg == seg_prev.unsqueeze(-1), cum, float("-inf")))
    chunk_kv = (k * to_end.unsqueeze(-1)).transpose(-1, -2) @ v  # [B, H, NC, dk, dv]
    state = q.new_zeros(b, h, dk, dv) if initial_state is None else initial_state.to(dtype)
    starts = []
    for c in range(n_chunks):
        starts.append(state)
        state = chunk_decay[:, :, c] * state + chunk_kv[:, :, c]
    o = o + (q * read.unsqueeze(-1)) @ torch.stack(starts, dim=2)
    return o.reshape(b, h, n_chunks * size, dv)[:, :, :t], state
