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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["parallel_mlstm", "chunk_mlstm"]

MLSTMState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def parallel_mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_i: torch.Tensor,
    log_f: torch.Tensor,
    initial_state: MLSTMState | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, MLSTMState]:
    """The mLSTM cell in the stabilised parallel form (``T x T`` gate matrix ``D``).

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        log_i: ``[B, H, T]`` log input gates.
        log_f: ``[B, H, T]`` log forget gates.
        initial_state: ``(C [B, H, dk, dv], n [B, H, dk], m [B, H])`` or ``None`` (zeros).
        eps: added to the normaliser.

    Returns:
        ``h [B, H, T, dv]`` and the final ``(C, n, m)`` in the compute dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    t = q.shape[2]
    q, k, v, log_i, log_f = (x.to(dtype) for x in (q, k, v, log_i, log_f))
    if initial_state is None:
        b, h, _, dk = q.shape
        c0, n0, m0 = q.new_zeros(b, h, dk, v.shape[-1]), q.new_zeros(b, h, dk), q.new_zeros(b, h)
    else:
        c0, n0, m0 = (x.to(dtype) for x in initial_state)

    cum_f = log_f.cumsum(-1)  # F_t
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    log_d = torch.where(
        causal, cum_f.unsqueeze(-1) - cum_f.unsqueeze(-2) + log_i.unsqueeze(-2), float("-inf")
    )  # [B, H, T, T]
    log_state = m0.unsqueeze(-1) + cum_f  # weight of the initial state in row t
    m = torch.maximum(log_d.amax(-1), log_state)  # [B, H, T]
    d = torch.exp(log_d - m.unsqueeze(-1))
    w_state = torch.exp(log_state - m)

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

    Returns:
        ``h [B, H, T, dv]`` and the final ``(C, n, m)`` in the compute dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    size = max(1, min(chunk_size, t))
    n_chunks = math.ceil(t / size)
    pad = n_chunks * size - t
    q, k, v = (F.pad(x.to(dtype), (0, 0, 0, pad)).view(b, h, n_chunks, size, -1) for x in (q, k, v))
    # Padded tail: forget gate 1 (log 0) and input gate 0 (log -inf) leave the state unchanged.
    cum_f = F.pad(log_f.to(dtype), (0, pad)).view(b, h, n_chunks, size).cumsum(-1)
    log_i = F.pad(log_i.to(dtype), (0, pad), value=float("-inf")).view(b, h, n_chunks, size)

    causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    log_d = torch.where(
        causal, cum_f.unsqueeze(-1) - cum_f.unsqueeze(-2) + log_i.unsqueeze(-2), float("-inf")
    )  # [B, H, NC, C, C]; every row has a finite entry (the first token of a chunk is real)
    m_intra = log_d.amax(-1)  # [B, H, NC, C]
    d = torch.exp(log_d - m_intra.unsqueeze(-1))
    scores = q @ k.transpose(-1, -2) * d
    num_intra = scores @ v  # [B, H, NC, C, dv], relative to exp(m_intra)
    den_intra = scores.sum(-1)  # [B, H, NC, C]

    # Each chunk's own contribution to the memory at its end, relative to exp(m_intra[last]).
    d_last = d[..., -1, :].unsqueeze(-1)  # [B, H, NC, C, 1]
    chunk_c = (k * d_last).transpose(-1, -2) @ v  # [B, H, NC, dk, dv]
    chunk_n = (k * d_last).sum(-2)  # [B, H, NC, dk]
    m_chunk, f_chunk = m_intra[..., -1], cum_f[..., -1]  # [B, H, NC]

    if initial_state is None:
        c_mem, n_mem, m = q.new_zeros(b, h, dk, dv), q.new_zeros(b, h, dk), q.new_zeros(b, h)
    else:
        c_mem, n_mem, m = (x.to(dtype) for x in initial_state)
    starts_c, starts_n, starts_m = [], [], []
    for c in range(n_chunks):
        starts_c.append(c_mem)
        starts_n.append(n_mem)
        starts_m.append(m)
        m_new = torch.maximum(m + f_chunk[:, :, c], m_chunk[:, :, c])
        w_old = torch.exp(m + f_chunk[:, :, c] - m_new)
        w_new = torch.exp(m_chunk[:, :, c] - m_new)
        c_mem = w_old[..., None, None] * c_mem + w_new[..., None, None] * chunk_c[:, :, c]
        n_mem = w_old[..., None] * n_mem + w_new[..., None] * chunk_n[:, :, c]
        m = m_new
    c_in = torch.stack(starts_c, dim=2)  # [B, H, NC, dk, dv]
    n_in = torch.stack(starts_n, dim=2)  # [B, H, NC, dk]
    m_in = torch.stack(starts_m, dim=2)  # [B, H, NC]

    # Combine the carried memory and the chunk's own part under the row stabiliser m_t.
    log_state = m_in.unsqueeze(-1) + cum_f  # [B, H, NC, C]
    m_rows = torch.maximum(log_state, m_intra)
    w_state = torch.exp(log_state - m_rows)
    w_intra = torch.exp(m_intra - m_rows)
    numerator = w_intra.unsqueeze(-1) * num_intra + w_state.unsqueeze(-1) * (q @ c_in)
    denominator = w_intra * den_intra + w_state * (q @ n_in.unsqueeze(-1)).squeeze(-1)
    out = numerator / (torch.maximum(denominator.abs(), torch.exp(-m_rows)) + eps).unsqueeze(-1)
    return out.reshape(b, h, n_chunks * size, dv)[:, :, :t], (c_mem, n_mem, m)
