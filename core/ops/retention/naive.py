"""Ground truth for retention: the recurrent form, one token at a time.

RetNet (Sun et al., 2023, "Retentive Network: A Successor to Transformer for Large Language
Models", arXiv 2307.08621), recurrent form, per head::

    S_n = gamma * S_{n-1} + k_n^T v_n,        o_n = q_n S_n

``reset`` sets ``S_{n-1} = 0`` before step ``n``; at a masked step ``S_n = S_{n-1}``.
"""

from __future__ import annotations

import torch

__all__ = ["naive_retention", "naive_bidirectional_retention"]


def naive_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal retention by the step-by-step recurrence (at least float32).

    Args:
        q: ``[B, H, T, dk]`` queries.
        k: ``[B, H, T, dk]`` keys.
        v: ``[B, H, T, dv]`` values.
        gamma: ``[H]`` per-head decay.
        initial_state: ``[B, H, dk, dv]`` state before the first token, or ``None`` (zeros).
        reset: ``[B, T]`` bool: the state is zeroed before the flagged steps.
        mask: ``[B, T]`` bool, true = real step; a masked step leaves the state as it is.

    Returns:
        ``o [B, H, T, dv]`` and the final state ``[B, H, dk, dv]``, both in the compute dtype
        (``float32`` or wider).
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    decay = gamma.to(dtype).view(1, h, 1, 1)
    if initial_state is None:
        state = q.new_zeros(b, h, dk, dv)
    else:
        state = initial_state.to(dtype)
    outputs = []
    for n in range(t):
        if reset is not None:
            state = state.masked_fill(reset[:, n].view(b, 1, 1, 1), 0.0)
        stepped = decay * state + k[:, :, n, :, None] * v[:, :, n, None, :]
        state = (
            stepped if mask is None else torch.where(mask[:, n].view(b, 1, 1, 1), stepped, state)
        )
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, n], state))
    o = torch.stack(outputs, dim=2) if outputs else q.new_zeros(b, h, 0, dv)
    return o, state


def naive_bidirectional_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Non-causal retention with the symmetric decay ``gamma^|n - m|``, as two recurrent scans.

    ``o_n = sum_m gamma^|n-m| (q_n . k_m) v_m`` is the forward scan (``m <= n``) plus the backward
    scan (``m >= n``) minus the diagonal term ``m = n`` that both count. With ``mask``, both scans
    skip the masked steps, so ``|n - m|`` counts real tokens only.

    Args:
        q, k: ``[B, H, T, dk]``.
        v: ``[B, H, T, dv]``.
        gamma: ``[H]`` per-head decay.
        mask: ``[B, T]`` bool, true = real token, or ``None``.

    Returns:
        ``o [B, H, T, dv]``.
    """
    forward, _ = naive_retention(q, k, v, gamma, mask=mask)
    backward, _ = naive_retention(
        q.flip(2), k.flip(2), v.flip(2), gamma, mask=None if mask is None else mask.flip(1)
    )
    dtype = forward.dtype
    diagonal = (q.to(dtype) * k.to(dtype)).sum(-1, keepdim=True) * v.to(dtype)
    if mask is not None:
        diagonal = torch.where(mask[:, None, :, None], diagonal, 0.0)
    return forward + backward.flip(2) - diagonal
