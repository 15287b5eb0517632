"""Ground truth for gated linear attention: the recurrent form, one token at a time.

GLA (Yang et al., 2024, "Gated Linear Attention Transformers with Hardware-Efficient Training",
arXiv 2312.06635), per head::

    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,    o_t = q_t S_t,    alpha_t = exp(g_t)
"""

from __future__ import annotations

import torch

__all__ = ["naive_gla"]


def naive_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention by the step-by-step recurrence (at least float32).

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        g: ``[B, H, T, dk]`` log forget gates ``log(alpha_t)``.
        initial_state: ``[B, H, dk, dv]`` or ``None`` (zeros).

    Returns:
        ``o [B, H, T, dv]`` and the final state ``[B, H, dk, dv]`` in the compute dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    q, k, v, g = q.to(dtype), k.to(dtype), v.to(dtype), g.to(dtype)
    state = q.new_zeros(b, h, dk, dv) if initial_state is None else initial_state.to(dtype)
    outputs = []
    for n in range(t):
        state = torch.exp(g[:, :, n, :, None]) * state + k[:, :, n, :, None] * v[:, :, n, None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, n], state))
    o = torch.stack(outputs, dim=2) if outputs else q.new_zeros(b, h, 0, dv)
    return o, state
