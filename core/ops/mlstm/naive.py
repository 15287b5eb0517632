"""Ground truth for the mLSTM cell: the stabilised recurrent form, one token at a time.

xLSTM (Beck et al., 2024, "xLSTM: Extended Long Short-Term Memory", arXiv 2405.04517): the
stabilised recurrent form, with the memory stored as ``C [dk, dv]`` (the transpose of the
paper's ``v k^T``)::

    m_t = max(log f_t + m_{t-1}, log i_t)
    i'_t = exp(log i_t - m_t),    f'_t = exp(log f_t + m_{t-1} - m_t)
    C_t = f'_t C_{t-1} + i'_t k_t^T v_t,    n_t = f'_t n_{t-1} + i'_t k_t
    h_t = q_t C_t / (max(|q_t . n_t|, exp(-m_t)) + eps)

``reset`` sets ``(C, n, m) = 0`` (the initial state) before step ``t``; at a masked step
``(C, n, m)`` stay as they are.
"""

from __future__ import annotations

import torch

__all__ = ["naive_mlstm"]

MLSTMState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def naive_mlstm(
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
    """The mLSTM cell by the stabilised step-by-step recurrence (at least float32).

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        log_i: ``[B, H, T]`` log input gates (the exponential gate's pre-activation).
        log_f: ``[B, H, T]`` log forget gates.
        initial_state: ``(C [B, H, dk, dv], n [B, H, dk], m [B, H])`` or ``None`` (zeros).
        eps: added to the normaliser.
        reset: ``[B, T]`` bool: the state is zeroed before the flagged steps.
        mask: ``[B, T]`` bool, true = real step; a masked step leaves the state as it is.

    Returns:
        ``h [B, H, T, dv]`` and the final ``(C, n, m)`` in the compute dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    q, k, v, log_i, log_f = (x.to(dtype) for x in (q, k, v, log_i, log_f))
    if initial_state is None:
        c_mem, n_mem, m = q.new_zeros(b, h, dk, dv), q.new_zeros(b, h, dk), q.new_zeros(b, h)
    else:
        c_mem, n_mem, m = (x.to(dtype) for x in initial_state)
    outputs = []
    for s in range(t):
        if reset is not None:
            drop = reset[:, s].view(b, 1)
            c_mem = c_mem.masked_fill(drop[..., None, None], 0.0)
            n_mem = n_mem.masked_fill(drop[..., None], 0.0)
            m = m.masked_fill(drop, 0.0)
        m_new = torch.maximum(log_f[:, :, s] + m, log_i[:, :, s])
        f_act = torch.exp(log_f[:, :, s] + m - m_new)
        i_act = torch.exp(log_i[:, :, s] - m_new)
        k_s, v_s, q_s = k[:, :, s], v[:, :, s], q[:, :, s]
        c_new = f_act[..., None, None] * c_mem + i_act[..., None, None] * (
            k_s[..., None] * v_s[..., None, :]
        )
        n_new = f_act[..., None] * n_mem + i_act[..., None] * k_s
        if mask is None:
            c_mem, n_mem, m = c_new, n_new, m_new
        else:
            keep = mask[:, s].view(b, 1)
            c_mem = torch.where(keep[..., None, None], c_new, c_mem)
            n_mem = torch.where(keep[..., None], n_new, n_mem)
            m = torch.where(keep, m_new, m)
        numerator = torch.einsum("bhk,bhkv->bhv", q_s, c_mem)
        denominator = torch.maximum((q_s * n_mem).sum(-1).abs(), torch.exp(-m)) + eps
        outputs.append(numerator / denominator[..., None])
    out = torch.stack(outputs, dim=2) if outputs else q.new_zeros(b, h, 0, dv)
    return out, (c_mem, n_mem, m)
