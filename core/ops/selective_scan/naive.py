"""Step-by-step reference for Mamba's selective scan (S6), written from the definition.

"Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (Gu & Dao, 2023,
arXiv 2312.00752), Algorithm 2, with the argument conventions of mamba-ssm's
``selective_scan_fn`` (see :func:`mixerzoo.core.ops.selective_scan.selective_scan`).

This file is the ground truth of the fast paths, so it shares none of their code: every input
convention (``delta_bias``, softplus, the channel -> group map of ``B`` and ``C``, ``D``, the
``silu(z)`` gate, the initial state, resets, padding) is handled here on its own, one time step
at a time, in the most literal form. It is slow on purpose.
"""

from __future__ import annotations

import torch

__all__ = ["selective_scan_naive"]


def _per_channel(M: torch.Tensor, channels: int) -> torch.Tensor:
    """``B`` or ``C`` as one ``[batch, N, L]`` slice per channel: ``[batch, channels, N, L]``.

    ``[batch, N, L]`` is shared by every channel; ``[batch, G, N, L]`` gives channel ``d`` the group
    ``d // (channels / G)`` (consecutive channels share a group).
    """
    if M.dim() == 3:
        return M.unsqueeze(1).expand(M.shape[0], channels, *M.shape[1:])
    channels_per_group = channels // M.shape[1]
    group_of = torch.tensor([d // channels_per_group for d in range(channels)], device=M.device)
    return M.index_select(1, group_of)


def selective_scan_naive(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    h0: torch.Tensor | None = None,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan, one time step at a time (arguments of
    :func:`mixerzoo.core.ops.selective_scan.selective_scan`).

    For every batch row, channel ``d``, state ``n`` and step ``t``, with ``g(d)`` the group of
    channel ``d``::

        dt      = softplus(delta[d, t] + delta_bias[d])          (bias / softplus if requested)
        h[d, n] = 0                                               if reset[t]
        h[d, n] = exp(dt * A[d, n]) * h[d, n] + dt * B[g(d), n, t] * u[d, t]   if mask[t]
                  (a padded step, mask[t] false, leaves h unchanged)
        y[d, t] = (sum_n C[g(d), n, t] * h[d, n] + D[d] * u[d, t]) * silu(z[d, t])

    Returns:
        ``out [B, D, L]`` in the dtype of ``u``, and ``last_state [B, D, N]`` (float32, float64
        for float64 inputs) when ``return_last_state``.
    """
    # mamba-ssm's reference computes in float32; float64 inputs stay float64 (for gradcheck).
    f = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, channels, length = u.shape
    d_state = A.shape[1]
    A = A.to(f)
    B_d = _per_channel(B.to(f), channels)  # [batch, channels, N, L]
    C_d = _per_channel(C.to(f), channels)
    h = torch.zeros(batch, channels, d_state, dtype=f, device=u.device) if h0 is None else h0.to(f)

    # unbind (not x[..., t]) so that autograd stacks the per-step gradients once, not L times.
    steps = zip(
        u.to(f).unbind(-1),
        delta.to(f).unbind(-1),
        B_d.unbind(-1),
        C_d.unbind(-1),
        z.to(f).unbind(-1) if z is not None else [None] * length,
        reset.unbind(1) if reset is not None else [None] * length,
        mask.unbind(1) if mask is not None else [None] * length,
    )
    outs = []
    for u_t, dt, B_t, C_t, z_t, reset_t, mask_t in steps:  # u_t, dt, z_t: [batch, channels]
        if delta_bias is not None:
            dt = dt + delta_bias.to(f)
        if delta_softplus:
            dt = torch.logaddexp(dt, torch.zeros_like(dt))  # log(1 + e^dt), the softplus
        if reset_t is not None:
            # The episode ends before this step: the state it carries is dropped.
            h = torch.where(reset_t.view(batch, 1, 1), torch.zeros_like(h), h)
        updated = torch.exp(dt[:, :, None] * A) * h + (dt * u_t)[:, :, None] * B_t
        # A padded step (mask false) leaves the state as it was.
        h = updated if mask_t is None else torch.where(mask_t.view(batch, 1, 1), updated, h)
        y_t = (h * C_t).sum(-1)
        if D is not None:
            y_t = y_t + D.to(f) * u_t
        if z_t is not None:
            y_t = y_t * (z_t * torch.sigmoid(z_t))
        outs.append(y_t)
    out = torch.stack(outs, dim=-1).to(u.dtype)
    return (out, h) if return_last_state else out
