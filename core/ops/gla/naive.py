"""Ground truth for gated linear attention: the recurrent form, one token at a time.

GLA (Yang et al., 2024, "Gated Linear Attention Transformers with Hardware-Efficient Training",
arXiv 2312.06635), per head::

    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,    o_t = q_t S_t,    alpha_t = exp(g_t)

With one gate per head (``g [B, H, T]``, "simple GLA") ``alpha_t`` is the same for every key
dimension. ``reset`` sets ``S_{t-1} = 0`` before step ``t``; at a masked step ``S_t = S_{t-1}``.
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
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention by the step-by-step recurrence (at least float32).

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        g: ``[B, H, T, dk]`` log forget gates ``log(alpha_t)``, or ``[B, H, T]`` (one per head).
        initial_state: ``[B, H, dk, dv]`` or ``None`` (zeros).
        reset: ``[B, T]`` bool: the state is zeroed before the flagged steps.
        mask: ``[B, T]`` bool, true = real step; a masked step leaves the state as it is.

    Returns:
        ``o [B, H, T, dv]`` and the final state ``[B, H, dk, dv]`` in the compute dtype.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    q, k, v, g = q.to(dtype), k.to(dtype), v.to(dtype), g.to(dtype)
    if g.dim() == 3:
        g = g.unsqueeze(-1)  # one gate per head: the same decay for every key dimension
    state = q.new_zeros(b, h, dk, dv) if initial_state is None else initial_state.to(dtype)
    outputs = []
    for n in range(t):
        if reset is not None:
            state = state.masked_fill(reset[:, n].view(b, 1, 1, 1), 0.0)
        stepped = torch.exp(g[:, :, n, :, None]) * state + k[:, :, n, :, None] * v[:, :, n, None, :]
        state = (
            stepped if mask is None else torch.where(mask[:, n].view(b, 1, 1, 1), stepped, state)
        )
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, n], state))
    o = torch.stack(outputs, dim=2) if outputs else q.new_zeros(b, h, 0, dv)
    return o, state
