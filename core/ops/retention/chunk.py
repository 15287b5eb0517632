"""Fast pure-PyTorch retention: the parallel form and the chunkwise recurrent form.

RetNet (Sun et al., 2023, "Retentive Network: A Successor to Transformer for Large Language
Models", arXiv 2307.08621):

- parallel form: ``O = (Q K^T * D) V`` with ``D_nm = gamma^(n-m)`` for ``n >= m`` and 0
  otherwise; with a state ``S_0`` before the sequence, ``o_n += gamma^(n+1) q_n S_0``.
- chunkwise recurrent form: inside a chunk the parallel form; across chunks the state
  ``R_i = gamma^B R_{i-1} + K_[i]^T (V_[i] * zeta)`` with ``zeta_j = gamma^(B-1-j)``, read by
  ``(Q_[i] R_{i-1}) * xi`` with ``xi_j = gamma^(j+1)``.

Every power of ``gamma`` is taken as ``exp(e * log(gamma))`` with ``e >= 0`` so that nothing
overflows, and with the exponent built from a per-position log-decay whose padded tail positions
have log-decay 0 (no decay) and zero keys, so a sequence length that is not a multiple of the
chunk size leaves the final state exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["parallel_retention", "chunk_retention", "chunk_bidirectional_retention"]


def parallel_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    causal: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Retention in the parallel form (``T x T`` decay mask), the form RetNet trains with.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        gamma: ``[H]`` per-head decay in ``(0, 1]``.
        initial_state: ``[B, H, dk, dv]`` or ``None`` (causal only).
        causal: ``True`` for ``D_nm = gamma^(n-m) [n >= m]``; ``False`` for the symmetric
            ``D_nm = gamma^|n-m|`` (no state).

    Returns:
        ``o [B, H, T, dv]`` and the final state ``[B, H, dk, dv]`` (``None`` when not causal),
        in the compute dtype (``float32`` or wider).
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    b, h, t, dk = q.shape
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    log_gamma = torch.log(gamma.to(dtype)).view(h, 1, 1)
    pos = torch.arange(t, device=q.device)
    distance = (pos[:, None] - pos[None, :]).to(dtype)
    if causal:
        exponent = torch.where(distance >= 0, distance * log_gamma, float("-inf"))
    else:
        exponent = distance.abs() * log_gamma
    decay = torch.exp(exponent)  # [H, T, T]
    o = (q @ k.transpose(-1, -2) * decay) @ v
    if not causal:
        return o, None
    pos = pos.to(dtype)
    # Key m reaches the end of the sequence with gamma^(T-1-m); the old state with gamma^T.
    k_to_end = k * torch.exp((t - 1 - pos).view(1, t, 1) * log_gamma)
    final = k_to_end.transpose(-1, -2) @ v
    if initial_state is not None:
        s0 = initial_state.to(dtype)
        o = o + (q * torch.exp((pos + 1).view(1, t, 1) * log_gamma)) @ s0
        final = final + torch.exp(t * log_gamma) * s0
    return o, final


def chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal retention in the chunkwise recurrent form.

    The intra-chunk parts of all chunks are computed at once; only the ``[dk, dv]`` chunk states
    are carried in a loop over the ``ceil(T / chunk_size)`` chunks.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        gamma: ``[H]`` per-head decay in ``(0, 1]``.
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
    q, k, v = (F.pad(x.to(dtype), (0, 0, 0, pad)).view(b, h, n_chunks, size, -1) for x in (q, k, v))

    # Cumulative log-decay inside each chunk: cum[..., i] = (i + 1) log(gamma) on real positions.
    log_decay = torch.log(gamma.to(dtype)).view(h, 1).expand(h, t)
    cum = F.pad(log_decay, (0, pad)).view(1, h, n_chunks, size).cumsum(-1)
    cum_last = cum[..., -1:]  # [1, H, NC, 1]

    causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    intra_decay = torch.exp(
        torch.where(causal, cum.unsqueeze(-1) - cum.unsqueeze(-2), float("-inf"))
    )  # [1, H, NC, C, C]
    o = (q @ k.transpose(-1, -2) * intra_decay) @ v

    # What each chunk adds to the state (keys decayed to the chunk end), then the carry loop.
    k_to_end = k * torch.exp(cum_last - cum).unsqueeze(-1)
    chunk_kv = k_to_end.transpose(-1, -2) @ v  # [B, H, NC, dk, dv]
    chunk_decay = torch.exp(cum_last).unsqueeze(-1)  # [1, H, NC, 1, 1]
    state = q.new_zeros(b, h, dk, dv) if initial_state is None else initial_state.to(dtype)
    starts = []
    for c in range(n_chunks):
        starts.append(state)
        state = chunk_decay[:, :, c] * state + chunk_kv[:, :, c]
    o = o + (q * torch.exp(cum).unsqueeze(-1)) @ torch.stack(starts, dim=2)
    return o.reshape(b, h, n_chunks * size, dv)[:, :, :t], state


def chunk_bidirectional_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    chunk_size: int = 64,
) -> torch.Tensor:
    """Non-causal retention (``D_nm = gamma^|n-m|``) as a forward plus a backward chunkwise scan.

    The diagonal ``m = n`` is counted by both scans and subtracted once.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        gamma: ``[H]`` per-head decay in ``(0, 1]``.
        chunk_size: tokens per chunk.

    Returns:
        ``o [B, H, T, dv]`` in the compute dtype.
    """
    forward, _ = chunk_retention(q, k, v, gamma, None, chunk_size)
    backward, _ = chunk_retention(q.flip(2), k.flip(2), v.flip(2), gamma, None, chunk_size)
    dtype = forward.dtype
    diagonal = (q.to(dtype) * k.to(dtype)).sum(-1, keepdim=True) * v.to(dtype)
    return forward + backward.flip(2) - diagonal
