"""Step-by-step reference for the first-order linear recurrence ``h_t = a_t * h_{t-1} + b_t``.

This is the ground truth the fast paths are tested against: one Python loop over time, written
to be obviously right rather than fast.
"""

from __future__ import annotations

import torch

__all__ = ["linear_scan_naive"]


def linear_scan_naive(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    reset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``h_t = a_t * h_{t-1} + b_t`` one step at a time (``h_t = b_t`` where ``reset_t``).

    Args:
        a: decays ``[B, T, *]`` (real or complex).
        b: inputs ``[B, T, *]``, same shape and dtype as ``a``.
        h0: state before the first step ``[B, *]``; zeros when ``None``.
        reset: boolean ``[B, T]``; where true the state restarts: ``h_t = b_t``.

    Returns:
        ``(h [B, T, *], h_last [B, *])``. Half-precision inputs are computed in float32 and the
        outputs cast back.
    """
    dtype = a.dtype
    compute = torch.promote_types(dtype, torch.float32)
    a, b = a.to(compute), b.to(compute)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0.to(compute)
    trailing = (1,) * (b.dim() - 2)
    resets = reset.unbind(1) if reset is not None else [None] * b.shape[1]
    states = []
    # unbind (not b[:, t]) so that autograd stacks the per-step gradients once, not T times.
    for a_t, b_t, r_t in zip(a.unbind(1), b.unbind(1), resets):
        h = a_t * h + b_t
        if r_t is not None:
            h = torch.where(r_t.view(-1, *trailing), b_t, h)
        states.append(h)
    return torch.stack(states, dim=1).to(dtype), h.to(dtype)
