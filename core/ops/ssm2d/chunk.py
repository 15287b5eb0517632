"""Faster 2-D selective SSM: a Python loop over the shorter grid axis, a parallel linear scan
along the other.

Going variate by variate, column ``v`` of ``h2`` needs only column ``v-1`` (no recurrence in time),
and then column ``v`` of ``h1`` is a 1-D linear recurrence in time with known inputs:
``linear_scan`` over ``T``. Going time step by time step, row ``t`` of ``h1`` needs only row
``t-1``, and row ``t`` of ``h2`` is a linear recurrence over variates: ``linear_scan`` over ``V``.
Both give exactly the naive double loop; ``loop_over=None`` loops over the shorter axis.

Padded time steps (``mask``): going by time steps, both states are kept with a ``where``; going by
variates, ``h1`` runs identity steps in its scan (decay 1, input 0) and ``h2``, which has no
recurrence in time there, is held at its value of the last real time step (a gather).
"""

from __future__ import annotations

import torch

from mixerzoo.core.ops.linear_scan import linear_scan

__all__ = ["ssm2d_scan_chunk"]


def _shift(seq: torch.Tensor, first: torch.Tensor, dim: int) -> torch.Tensor:
    """``seq`` delayed by one along ``dim`` with ``first`` ([..] without ``dim``) in front."""
    head = first.unsqueeze(dim)
    return torch.cat([head, seq.narrow(dim, 0, seq.shape[dim] - 1)], dim=dim)


def _hold(seq: torch.Tensor, first: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``seq [B, T, ...]`` with every padded step holding the value of the last real step before
    it (``first [B, ...]`` where there is none)."""
    bsz, length = mask.shape
    steps = torch.arange(1, length + 1, device=mask.device)
    # Index into [first, seq_0, ..., seq_{T-1}] of the last real step at or before t (0: none).
    source = torch.where(mask, steps, 0).cummax(dim=1).values
    index = source.view(bsz, length, *[1] * (seq.dim() - 2)).expand_as(seq)
    return torch.gather(torch.cat([first.unsqueeze(1), seq], dim=1), 1, index)


def _loop_over_variates(x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, h1_0, h2_0, backend, mask):
    bsz, length, n_var, e = x.shape
    n = A1.shape[-1]
    h1_left = x.new_zeros(bsz, length, e, n)
    h2_left = x.new_zeros(bsz, length, e, n)
    ys, h1_last, h2_last = [], [], []
    for v in range(n_var):
        xv = x[:, :, v, :, None]  # [B, T, E, 1]
        a4 = torch.exp(dt2[:, :, v, :, None] * A4)
        h2 = a4 * h2_left + (a4 - 1) / A4 * (A3 * h1_left + B2[:, :, v, None, :] * xv)
        if mask is not None:
            h2 = _hold(h2, h2_0[:, v], mask)
        a1 = torch.exp(dt1[:, :, v, :, None] * A1)
        h2_before = _shift(h2, h2_0[:, v], dim=1)  # h2[t-1, v], the state at t = -1 first
        inp = (a1 - 1) / A1 * (A2 * h2_before + B1[:, :, v, None, :] * xv)
        if mask is not None:
            real = mask[:, :, None, None]
            a1 = torch.where(real, a1, torch.ones_like(a1))
            inp = torch.where(real, inp, torch.zeros_like(inp))
        h1, last = linear_scan(a1, inp, h0=h1_0[:, v], backend=backend)
        ys.append((C1[:, :, v, None, :] * h1).sum(-1) + (C2[:, :, v, None, :] * h2).sum(-1))
        h1_last.append(last)
        h2_last.append(h2[:, -1])
        h1_left, h2_left = h1, h2
    return torch.stack(ys, dim=2), torch.stack(h1_last, dim=1), torch.stack(h2_last, dim=1)


def _loop_over_time(x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, h1_0, h2_0, backend, mask):
    length = x.shape[1]
    h1, h2 = h1_0, h2_0  # [B, V, E, N], the previous time step
    ys = []
    for t in range(length):
        xt = x[:, t, :, :, None]  # [B, V, E, 1]
        a1 = torch.exp(dt1[:, t, :, :, None] * A1)
        h1_up, h2_up = h1, h2
        h1 = a1 * h1 + (a1 - 1) / A1 * (A2 * h2 + B1[:, t, :, None, :] * xt)
        a4 = torch.exp(dt2[:, t, :, :, None] * A4)
        h1_before = _shift(h1, torch.zeros_like(h1[:, 0]), dim=1)  # h1[t, v-1]
        inp = (a4 - 1) / A4 * (A3 * h1_before + B2[:, t, :, None, :] * xt)
        h2, _ = linear_scan(a4, inp, backend=backend)
        if mask is not None:
            real = mask[:, t, None, None, None]
            h1 = torch.where(real, h1, h1_up)
            h2 = torch.where(real, h2, h2_up)
        ys.append((C1[:, t, :, None, :] * h1).sum(-1) + (C2[:, t, :, None, :] * h2).sum(-1))
    return torch.stack(ys, dim=1), h1, h2


def ssm2d_scan_chunk(
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
    loop_over: str | None = None,
    scan_backend: str | None = None,
    *,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as ``naive.ssm2d_scan_naive``.

    Args:
        mask: ``[B, T]`` bool, true = real time step (padded steps keep the state).
        loop_over: ``"variates"`` or ``"time"``; ``None`` loops over the shorter axis.
        scan_backend: backend of the inner ``linear_scan``.
    """
    bsz, length, n_var, e = x.shape
    zeros = x.new_zeros(bsz, n_var, e, A1.shape[-1])
    h1_0 = h1_0 if h1_0 is not None else zeros
    h2_0 = h2_0 if h2_0 is not None else zeros
    if loop_over is None:
        loop_over = "variates" if n_var <= length else "time"
    fn = {"variates": _loop_over_variates, "time": _loop_over_time}.get(loop_over)
    if fn is None:
        raise ValueError(
            f"ssm2d_scan_chunk: loop_over must be 'variates', 'time' or None, got {loop_over!r}"
        )
    return fn(x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, h1_0, h2_0, scan_backend, mask)
