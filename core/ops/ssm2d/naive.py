"""Ground truth for the 2-D selective SSM: a plain double loop over time and variates.

See ``mixerzoo.core.ops.ssm2d`` for the recurrence. Both states are updated at every grid point
``(t, v)`` from their neighbours: ``h1`` from ``(t-1, v)`` and ``h2`` from ``(t, v-1)``; at a
padded time step (``mask`` false) both keep their values from ``(t-1, v)``.
"""

from __future__ import annotations

import torch

__all__ = ["ssm2d_scan_naive"]


def ssm2d_scan_naive(
    x: torch.Tensor,
    dt1: torch.Tensor,
    dt2: torch.Tensor,
    A1: torch.Tensor,
    A2: torch.Tensor,
    A3: torch.Tensor,
    A4: torch.Tensor,
    B1: torch.Tensor,
    B2: torch.Tensor,
    C1: torch.Tensor,
    C2: torch.Tensor,
    h1_0: torch.Tensor | None = None,
    h2_0: torch.Tensor | None = None,
    *,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Double loop; shapes as in ``ssm2d_scan``. Returns ``(y, h1_last, h2_last)``."""
    bsz, length, n_var, e = x.shape
    n = A1.shape[-1]
    zeros = x.new_zeros(bsz, n_var, e, n)
    h1_prev_t = [(h1_0 if h1_0 is not None else zeros)[:, v] for v in range(n_var)]
    h2_prev_t = [(h2_0 if h2_0 is not None else zeros)[:, v] for v in range(n_var)]
    ys = []
    for t in range(length):
        h1_row, h2_row, y_row = [], [], []
        # The variate before the first one contributes nothing.
        h1_left = x.new_zeros(bsz, e, n)
        h2_left = x.new_zeros(bsz, e, n)
        for v in range(n_var):
            xv = x[:, t, v, :, None]  # [B, E, 1]
            d1 = dt1[:, t, v, :, None]
            d2 = dt2[:, t, v, :, None]
            a1 = torch.exp(d1 * A1)
            a4 = torch.exp(d2 * A4)
            h1 = a1 * h1_prev_t[v] + (a1 - 1) / A1 * (A2 * h2_prev_t[v] + B1[:, t, v, None, :] * xv)
            h2 = a4 * h2_left + (a4 - 1) / A4 * (A3 * h1_left + B2[:, t, v, None, :] * xv)
            if mask is not None:
                # A padded time step: both states stay as they were one time step up.
                real = mask[:, t].view(bsz, 1, 1)
                h1 = torch.where(real, h1, h1_prev_t[v])
                h2 = torch.where(real, h2, h2_prev_t[v])
            y_row.append((C1[:, t, v, None, :] * h1).sum(-1) + (C2[:, t, v, None, :] * h2).sum(-1))
            h1_row.append(h1)
            h2_row.append(h2)
            h1_left, h2_left = h1, h2
        ys.append(torch.stack(y_row, dim=1))
        h1_prev_t, h2_prev_t = h1_row, h2_row
    return torch.stack(ys, dim=1), torch.stack(h1_prev_t, dim=1), torch.stack(h2_prev_t, dim=1)
