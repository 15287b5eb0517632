"""Fast pure-PyTorch retention: the parallel form and the chunkwise recurrent form.

RetNet (Sun et al., 2023, "Retentive Network: A Successor to Transformer for Large Language
Models", arXiv 2307.08621):

- parallel form: ``O = (Q K^T * D) V`` with ``D_nm = gamma^(n-m)`` for ``n >= m`` and 0
  otherwise; with a state ``S_0`` before the sequence, ``o_n += gamma^(n+1) q_n S_0``.
- chunkwise recurrent form: inside a chunk the parallel form; across chunks the state
  ``R_i = gamma^B R_{i-1} + K_[i]^T (V_[i] * zeta)`` with ``zeta_j = gamma^(B-1-j)``, read by
  ``(Q_[i] R_{i-1}) * xi`` with ``xi_j = gamma^(j+1)``.

Retention is gated linear attention with one constant gate per head, ``log(gamma)`` at every
position, so the chunkwise form is the one-gate-per-head ("simple GLA") path of
:func:`mixerzoo.core.ops.gla.chunk_gla` (fla builds retention on its simple-GLA kernel the same
way). Without a mask the log-decays are a ``[1, H, T]`` tensor shared by the batch, so the
``[C, C]`` decay matrices are computed once for every row; every power of ``gamma`` is an
``exp`` of a non-positive exponent, and the padded tail of the last chunk has log-decay 0 and
zero keys, so a length that is not a multiple of the chunk size leaves the final state exact.

With a mask, a padded step has log-decay 0 and a zero key (the identity on the state), so the
distance ``n - m`` in ``gamma^(n-m)`` counts real tokens only; with resets, pairs in different
segments are dropped (see :mod:`mixerzoo.core.ops.gla.flags`).
"""

from __future__ import annotations

import torch

from mixerzoo.core.layers.sequence import segment_ids
from mixerzoo.core.ops.gla.chunk import chunk_gla

__all__ = ["parallel_retention", "chunk_retention", "chunk_bidirectional_retention"]


def parallel_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    causal: bool = True,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Retention in the parallel form (``T x T`` decay mask), the form RetNet trains with.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        gamma: ``[H]`` per-head decay in ``(0, 1]``.
        initial_state: ``[B, H, dk, dv]`` or ``None`` (causal only).
        causal: ``True`` for ``D_nm = gamma^(n-m) [n >= m]``; ``False`` for the symmetric
            ``D_nm = gamma^|n-m|`` (no state).
        reset: ``[B, T]`` bool (causal only): ``D_nm = 0`` across a reset, and the initial state
            reaches only the tokens before the first one.
        mask: ``[B, T]`` bool, true = real token: padded keys are dropped and ``n - m`` counts
            the real tokens in ``(m, n]``.

    Returns:
        ``o [B, H, T, dv]`` and the final state ``[B, H, dk, dv]`` (``None`` when not causal),
        in the compute dtype (``float32`` or wider).
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    b, h, t, dk = q.shape
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    log_gamma = torch.log(gamma.to(dtype)).view(h, 1, 1)
    # count[n]: real tokens up to and including n, so gamma^(count_n - count_m) decays m to n.
    if mask is None:
        count = torch.arange(1, t + 1, device=q.device).view(1, t)
    else:
        count = mask.long().cumsum(1)
        k = torch.where(mask[:, None, :, None], k, 0.0)
    rows = count.shape[0]
    distance = (count.unsqueeze(-1) - count.unsqueeze(-2)).to(dtype).unsqueeze(1)  # [B|1,1,T,T]
    if causal:
        allowed = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
        if reset is not None:
            seg = segment_ids(reset, reset.shape)
            allowed = (allowed & (seg.unsqueeze(-1) == seg.unsqueeze(-2))).unsqueeze(1)
        exponent = torch.where(allowed, distance * log_gamma, float("-inf"))
    else:
        exponent = distance.abs() * log_gamma
    decay = torch.exp(exponent)  # [B or 1, H, T, T]
    o = (q @ k.transpose(-1, -2) * decay) @ v
    if not causal:
        return o, None
    count = count.to(dtype)
    # Key m reaches the end of the sequence with gamma^(count_last - count_m); the old state
    # with gamma^count_last.
    to_end = (count[:, -1:] - count).view(rows, 1, t, 1) * log_gamma
    if reset is not None:
        to_end = torch.where((seg == seg[:, -1:]).view(b, 1, t, 1), to_end, float("-inf"))
    final = (k * torch.exp(to_end)).transpose(-1, -2) @ v
    if initial_state is not None:
        s0 = initial_state.to(dtype)
        read = count.view(rows, 1, t, 1) * log_gamma
        kept = count[:, -1].view(rows, 1, 1, 1) * log_gamma
        if reset is not None:
            first = (seg == 0).view(b, 1, t, 1)
            read = torch.where(first, read, float("-inf"))
            kept = torch.where(first[:, :, -1:], kept, float("-inf"))
        o = o + (q * torch.exp(read)) @ s0
        final = final + torch.exp(kept) * s0
    return o, final


def chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal retention in the chunkwise recurrent form (simple GLA with ``g = log(gamma)``).

    The intra-chunk parts of all chunks are computed at once; only the ``[dk, dv]`` chunk states
    are carried in a loop over the ``ceil(T / chunk_size)`` chunks.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        gamma: ``[H]`` per-head decay in ``(0, 1]``.
        initial_state: ``[B, H, dk, dv]`` or ``None`` (zeros).
        chunk_size: tokens per chunk (clipped to ``T``).
        reset, mask: ``[B, T]`` bool or ``None`` (see :mod:`mixerzoo.core.ops.gla.flags`).

    Returns:
        ``o [B, H, T, dv]`` and the final state ``[B, H, dk, dv]`` in the compute dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    h, t = q.shape[1], q.shape[2]
    # One log-decay per head and position, shared by the batch (a [1, H, T] view).
    log_decay = torch.log(gamma.to(dtype)).view(1, h, 1).expand(1, h, t)
    return chunk_gla(q, k, v, log_decay, initial_state, chunk_size, reset=reset, mask=mask)


def chunk_bidirectional_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    chunk_size: int = 64,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Non-causal retention (``D_nm = gamma^|n-m|``) as a forward plus a backward chunkwise scan.

    The diagonal ``m = n`` is counted by both scans and subtracted once. With ``mask`` both scans
    skip the padded tokens (so ``|n - m|`` counts real tokens) and padded keys are dropped.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        gamma: ``[H]`` per-head decay in ``(0, 1]``.
        chunk_size: tokens per chunk.
        mask: ``[B, T]`` bool, true = real token, or ``None``.

    Returns:
        ``o [B, H, T, dv]`` in the compute dtype.
    """
    forward, _ = chunk_retention(q, k, v, gamma, None, chunk_size, mask=mask)
    backward, _ = chunk_retention(
        q.flip(2),
        k.flip(2),
        v.flip(2),
        gamma,
        None,
        chunk_size,
        mask=None if mask is None else mask.flip(1),
    )
    dtype = forward.dtype
    diagonal = (q.to(dtype) * k.to(dtype)).sum(-1, keepdim=True) * v.to(dtype)
    if mask is not None:
        diagonal = torch.where(mask[:, None, :, None], diagonal, 0.0)
    return forward + backward.flip(2) - diagonal
