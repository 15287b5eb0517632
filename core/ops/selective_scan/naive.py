"""Step-by-step reference for Mamba's selective scan (S6).

Follows the reference recurrence of "Mamba: Linear-Time Sequence Modeling with Selective State
Spaces" (Gu & Dao, 2023, arXiv 2312.00752), Algorithm 2, with the argument conventions of
mamba-ssm's ``selective_scan_fn``. One Python loop over time; the ground truth of the fast paths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_naive"]


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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan, one time step at a time (see :func:`mixerzoo.core.ops.selective_scan`).

    For every channel ``d`` and state ``n``::

        h[d, n] <- exp(delta_t[d] * A[d, n]) * h[d, n] + delta_t[d] * B_t[g(d), n] * u_t[d]
        y_t[d]  =  sum_n C_t[g(d), n] * h[d, n]  (+ D[d] * u_t[d]) (* silu(z_t[d]))

    with ``g(d) = d // (D / G)`` the group of channel ``d``.

    Returns:
        ``out [B, D, L]`` in the dtype of ``u``, and ``last_state [B, D, N]`` (float32 or float64)
        when ``return_last_state``.
    """
    dtype_in = u.dtype
    compute = torch.promote_types(u.dtype, torch.float32)
    u, delta, A = u.to(compute), delta.to(compute), A.to(compute)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    channels = u.shape[1]
    # [B, N, L] is one group; channel d uses group d // (D / G), i.e. groups repeat-interleaved.
    B = B.to(compute) if B.dim() == 4 else B.to(compute).unsqueeze(1)
    C = C.to(compute) if C.dim() == 4 else C.to(compute).unsqueeze(1)
    B = B.repeat_interleave(channels // B.shape[1], dim=1)
    C = C.repeat_interleave(channels // C.shape[1], dim=1)

    h = u.new_zeros(u.shape[0], channels, A.shape[1]) if h0 is None else h0.to(compute)
    ys = []
    # unbind (not x[..., t]) so that autograd stacks the per-step gradients once, not L times.
    for u_t, delta_t, B_t, C_t in zip(u.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1)):
        decay = torch.exp(delta_t[:, :, None] * A)
        h = decay * h + (delta_t * u_t)[:, :, None] * B_t
        ys.append((h * C_t).sum(-1))
    out = torch.stack(ys, dim=-1)
    if D is not None:
        out = out + D.to(compute)[:, None] * u
    if z is not None:
        out = out * F.silu(z.to(compute))
    out = out.to(dtype_in)
    return (out, h) if return_last_state else out
