"""Fast pure-PyTorch mLSTM cell: the stabilised parallel form and a chunkwise form.

xLSTM (Beck et al., 2024, "xLSTM: Extended Long Short-Term Memory", arXiv 2405.04517): the
stabilised parallel form of the paper's appendix. With ``F_t = sum_{r <= t} log f_r``, the gate matrix is
``log D_ts = F_t - F_s + log i_s`` for ``s <= t`` (``-inf`` above the diagonal), the stabiliser
``m_t = max_s log D_ts`` and::

    h_t = sum_s (q_t . k_s) exp(log D_ts - m_t) v_s / (max(|sum_s (q_t . k_s) exp(log D_ts - m_t)|,
                                                      exp(-m_t)) + eps)

A state ``(C_0, n_0, m_0)`` before the sequence enters as one more "column" of log weight
``m_0 + F_t``. Including it in the row maximum makes ``m_t`` exactly the recurrent stabiliser
``m_t = max(log f_t + m_{t-1}, log i_t)`` (unrolled), so the parallel, chunkwise and recurrent
forms return the same ``(C, n, m)``, not just the same outputs. (The stabilised outputs do not
depend on the choice of ``m`` at all, apart from ``eps``.)

The chunkwise form applies the parallel form inside each chunk (all chunks at once) and carries
``(C, n, m)`` across chunks; every ``exp`` has a non-positive argument.

**Resets and masks** (see :mod:`mixerzoo.core.ops.gla.flags`). A masked step gets ``log f = 0``
and ``log i = -inf`` (input gate 0): ``m``, ``C`` and ``n`` stay exactly as they are. A row whose
every column has ``log i = -inf`` has no finite intra-chunk maximum; it is stabilised by 0 instead
(its terms are zeros) and its weight ``exp(-inf - m_t) = 0``, so nothing divides ``inf`` by
``inf``. With segment ids ``seg``, pairs ``s <= t`` count iff ``seg_s == seg_t``. After a reset
at ``r`` the recurrence restarts from the zero state with ``m = 0``, whose column keeps the log
weight ``F_t - F_{r-1}`` (the cumulative log forget gate since the segment start, ``log f_r``
included) though it adds nothing to ``C`` and ``n``: so ``m_t`` stays the recurrent one. Across
chunks the carried state reaches the positions of the segment entering the chunk, and a chunk
with a reset ends with the zero-state column of its last segment in place of the carried state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mixerzoo.core.layers.sequence import segment_ids
from mixerzoo.core.ops.gla.flags import chunk_segments

__all__ = ["parallel_mlstm", "chunk_mlstm"]

MLSTMState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _apply_mask(
    log_i: torch.Tensor, log_f: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked steps: input gate 0 (``log i = -inf``) and forget gate 1 (``log f = 0``)."""
    if mask is None:
        return log_i, log_f
    keep = mask.unsqueeze(1)
    return torch.where(keep, log_i, float("-inf")), torch.where(keep, log_f, 0.0)


def _segment_base(cum_f: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
    """``F_{r-1}`` for the latest reset ``r <= t`` along the last dim (0 where there is none), so
    that ``cum_f - base`` is the cumulative log forget gate since the segment start.

    Shapes: ``cum_f [B, H, *, L]``, ``reset [B, *, L]`` -> ``[B, H, *, L]``.
    """
    before = F.pad(cum_f[..., :-1], (1, 0))  # F_{t-1}, 0 at the first position
    position = torch.arange(reset.shape[-1], device=reset.device)
    latest = torch.where(reset, position, 0).cummax(-1).values
    return before.gather(-1, latest.unsqueeze(1).expand_as(cum_f))


def parallel_mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_i: torch.Tensor,
    log_f: torch.Tensor,
    initial_state: MLSTMState | None = None,
    eps: float = 1e-6,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, MLSTMState]:
    """The mLSTM cell in the stabilised parallel form (``T x T`` gate matrix ``D``).

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        log_i: ``[B, H, T]`` log input gates.
        log_f: ``[B, H, T]`` log forget gates.
        initial_state: ``(C [B, H, dk, dv], n [B, H, dk], m [B, H])`` or ``None`` (zeros).
        eps: added to the normaliser.
        reset, mask: ``[B, T]`` bool or ``None`` (module docstring).

    Returns:
        ``h [B, H, T, dv]`` and the final ``(C, n, m)`` in the compute dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    t = q.shape[2]
    q, k, v, log_i, log_f = (x.to(dtype) for x in (q, k, v, log_i, log_f))
    log_i, log_f = _apply_mask(log_i, log_f, mask)
    if initial_state is None:
        b, h, _, dk = q.shape
        c0, n0, m0 = q.new_zeros(b, h, dk, v.shape[-1]), q.new_zeros(b, h, dk), q.new_zeros(b, h)
    else:
        c0, n0, m0 = (x.to(dtype) for x in initial_state)

    cum_f = log_f.cumsum(-1)  # F_t
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    if reset is not None:
        seg = segment_ids(reset, reset.shape)
        causal = (causal & (seg.unsqueeze(-1) == seg.unsqueeze(-2))).unsqueeze(1)
    log_d = torch.where(
        causal, cum_f.unsqueeze(-1) - cum_f.unsqueeze(-2) + log_i.unsqueeze(-2), float("-inf")
    )  # [B, H, T, T]
    log_state = m0.unsqueeze(-1) + cum_f  # weight of the initial state in row t
    if reset is not None:
        # After a reset: the zero state's column, weighted from the segment start.
        first = (seg == 0).unsqueeze(1)  # [B, 1, T]
        log_state = torch.where(first, log_state, cum_f - _segment_base(cum_f, reset))
    # The state column is finite in every row, so m is finite even where log i = -inf.
    m = torch.maximum(log_d.amax(-1), log_state)  # [B, H, T]
    d = torch.exp(log_d - m.unsqueeze(-1))
    w_state = torch.exp(log_state - m)
    if reset is not None:
        w_state = torch.where(first, w_state, 0.0)

    scores = q @ k.transpose(-1, -2) * d
    numerator = scores @ v + w_state.unsqueeze(-1) * (q @ c0)
    denominator = scores.sum(-1) + w_state * (q @ n0.unsqueeze(-1)).squeeze(-1)
    h = numerator / (torch.maximum(denominator.abs(), torch.exp(-m)) + eps).unsqueeze(-1)

    # The last row of D gives each key's weight in the final memory.
    d_last, w_last = d[:, :, -1], w_state[:, :, -1]
    c_final = w_last[..., None, None] * c0 + (k * d_last.unsqueeze(-1)).transpose(-1, -2) @ v
    n_final = w_last[..., None] * n0 + (k * d_last.unsqueeze(-1)).sum(2)
    return h, (c_final, n_final, m[:, :, -1])


def chunk_mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_i: torch.Tensor,
    log_f: torch.Tensor,
    initial_state: MLSTMState | None = None,
    eps: float = 1e-6,
    chunk_size: int = 64,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, MLSTMState]:
    """The mLSTM cell in the chunkwise form.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        log_i: ``[B, H, T]`` log input gates.
        log_f: ``[B, H, T]`` log forget gates.
        initial_state: ``(C [B, H, dk, dv], n [B, H, dk], m [B, H])`` or ``None`` (zeros).
        eps: added to the normaliser.
        chunk_size: tokens per chunk (clipped to ``T``).
        reset, mask: ``[B, T]`` bool or ``None`` (module docstring).

    Returns:
        ``h [B, H, T, dv]`` and the final ``(C, n, m)`` in the compute dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    size = max(1, min(chunk_size, t))
    n_chunks = math.ceil(t / size)
    pad = n_chunks * size - t
    log_i, log_f = _apply_mask(log_i.to(dtype), log_f.to(dtype), mask)
    q, k, v = (F.pad(x.to(dtype), (0, 0, 0, pad)).view(b, h, n_chunks, size, -1) for x in (q, k, v))
    # Padded tail: forget gate 1 (log 0) and input gate 0 (log -inf) leave the state unchanged.
    cum_f = F.pad(log_f, (0, pad)).view(b, h, n_chunks, size).cumsum(-1)
    log_i = F.pad(log_i, (0, pad), value=float("-inf")).view(b, h, n_chunks, size)

    causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    if reset is not None:
        seg, seg_prev = chunk_segments(reset, n_chunks, size)  # [B, 1, NC, C], [B, 1, NC]
        causal = causal & (seg.unsqueeze(-1) == seg.unsqueeze(-2))
        reset_c = torch.cat([reset, reset.new_zeros(b, pad)], dim=1).view(b, n_chunks, size)
        # Cumulative log forget gate since the segment start, for rows after a reset.
        base = _segment_base(cum_f, reset_c)  # [B, H, NC, C]
    log_d = torch.where(
        causal, cum_f.unsqueeze(-1) - cum_f.unsqueeze(-2) + log_i.unsqueeze(-2), float("-inf")
    )  # [B, H, NC, C, C]
    m_intra = log_d.amax(-1)  # [B, H, NC, C]; -inf where every column has input gate 0
    m_shift = torch.where(torch.isneginf(m_intra), 0.0, m_intra)
    d = torch.exp(log_d - m_shift.unsqueeze(-1))
    scores = q @ k.transpose(-1, -2) * d
    num_intra = scores @ v  # [B, H, NC, C, dv], relative to exp(m_intra)
    den_intra = scores.sum(-1)  # [B, H, NC, C]

    # Each chunk's own contribution to the memory at its end, relative to exp(m_intra[last]).
    d_last = d[..., -1, :].unsqueeze(-1)  # [B, H, NC, C, 1]
    chunk_c = (k * d_last).transpose(-1, -2) @ v  # [B, H, NC, dk, dv]
    chunk_n = (k * d_last).sum(-2)  # [B, H, NC, dk]
    m_chunk, f_chunk = m_intra[..., -1], cum_f[..., -1]  # [B, H, NC]
    if reset is not None:
        restarted = seg[..., -1] != seg_prev  # [B, 1, NC]: a reset inside the chunk
        # The zero state's column of the chunk's last segment, at the chunk end.
        f_restart = cum_f[..., -1] - base[..., -1]  # [B, H, NC]

    if initial_state is None:
        c_mem, n_mem, m = q.new_zeros(b, h, dk, dv), q.new_zeros(b, h, dk), q.new_zeros(b, h)
    else:
        c_mem, n_mem, m = (x.to(dtype) for x in initial_state)
    starts_c, starts_n, starts_m = [], [], []
    for c in range(n_chunks):
        starts_c.append(c_mem)
        starts_n.append(n_mem)
        starts_m.append(m)
        if reset is None:
            m_new = torch.maximum(m + f_chunk[:, :, c], m_chunk[:, :, c])
            w_old = torch.exp(m + f_chunk[:, :, c] - m_new)
        else:
            old = torch.where(restarted[:, :, c], f_restart[:, :, c], m + f_chunk[:, :, c])
            m_new = torch.maximum(old, m_chunk[:, :, c])
            w_old = torch.where(restarted[:, :, c], 0.0, torch.exp(old - m_new))
        w_new = torch.exp(m_chunk[:, :, c] - m_new)
        c_mem = w_old[..., None, None] * c_mem + w_new[..., None, None] * chunk_c[:, :, c]
        n_mem = w_old[..., None] * n_mem + w_new[..., None] * chunk_n[:, :, c]
        m = m_new
    c_in = torch.stack(starts_c, dim=2)  # [B, H, NC, dk, dv]
    n_in = torch.stack(starts_n, dim=2)  # [B, H, NC, dk]
    m_in = torch.stack(starts_m, dim=2)  # [B, H, NC]

    # Combine the carried memory and the chunk's own part under the row stabiliser m_t.
    log_state = m_in.unsqueeze(-1) + cum_f  # [B, H, NC, C]
    if reset is not None:
        reads = seg == seg_prev.unsqueeze(-1)  # [B, 1, NC, C]: still in the carried segment
        log_state = torch.where(reads, log_state, cum_f - base)
    m_rows = torch.maximum(log_state, m_intra)
    w_state = torch.exp(log_state - m_rows)
    if reset is not None:
        w_state = torch.where(reads, w_state, 0.0)
    w_intra = torch.exp(m_intra - m_rows)
    numerator = w_intra.unsqueeze(-1) * num_intra + w_state.unsqueeze(-1) * (q @ c_in)
    denominator = w_intra * den_intra + w_state * (q @ n_in.unsqueeze(-1)).squeeze(-1)
    out = numerator / (torch.maximum(denominator.abs(), torch.exp(-m_rows)) + eps).unsqueeze(-1)
    return out.reshape(b, h, n_chunks * size, dv)[:, :, :t], (c_mem, n_mem, m)
