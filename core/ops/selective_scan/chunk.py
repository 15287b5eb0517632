"""Fast pure-PyTorch selective scan: segmented chunked scan with a recomputing backward.

Computes exactly the recurrence of :mod:`.naive` (Mamba, Gu & Dao, 2023, arXiv 2312.00752) with
far fewer Python-level steps:

- Time is cut into *segments* whose ``[B, Ts, D, N]`` working tensors stay small (about
  ``SEGMENT_ELEMENTS`` values), processed left to right with the state carried across, so memory
  is bounded whatever the length. Inside a segment the discretised decays ``exp(delta * A)`` and
  inputs ``delta * u * B`` are materialised once and all states are computed by the chunked linear
  scan of :func:`mixerzoo.core.ops.linear_scan.chunk.scan_sweep` (products and sums only: no
  division by cumulative decays, so it is exact for decays that underflow to zero).
- The output contracts the states with ``C``; only the state entering each segment is saved.
- The backward pass walks the segments right to left, recomputes each segment's states from its
  saved start, and runs the adjoint recurrence as a reverse scan:
  ``mu_t = dA_t * (g_t + mu_{t+1})`` with ``g_t = dy_t C_t``; then ``lam_t = g_t + mu_{t+1}`` is
  the gradient of the input term ``delta u B`` and ``mu_t * h_{t-1}`` that of the decay ``dA_t``.
  ``mu`` at a segment's first step is the gradient of the state entering it, carried leftwards.

Resets and padding need no other machinery: a reset at step ``t`` is a decay of exactly zero there
(``exp(delta_t A)`` replaced by 0, mamba2's ``seq_idx``; the adjoint scan then stops at the same
step, and the decay, now a constant, passes no gradient to ``delta_t``); a padded step is
``delta_t = 0`` after the bias and softplus, so its decay is exactly one and its input zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mixerzoo.core.ops.linear_scan.chunk import scan_sweep

__all__ = ["selective_scan_chunk", "SEGMENT_ELEMENTS"]

# Values per [B, Ts, D, N] working buffer (4 MiB in float32): large enough that every tensor op
# amortises its dispatch cost, small enough to stay near the caches and bound the memory.
SEGMENT_ELEMENTS = 1 << 20


def _segment_length(batch: int, channels: int, d_state: int, length: int) -> int:
    return max(1, min(length, SEGMENT_ELEMENTS // max(1, batch * channels * d_state)))


class _SelectiveScanFn(torch.autograd.Function):
    """Core recurrence on time-major tensors.

    Inputs: ``delta, x [B, L, D]`` (``x = delta * u``), ``A [D, N]``, ``B, C [B, L, G, N]``,
    ``h0 [B, D, N]`` or ``None``, ``reset [B, L]`` bool or ``None`` (zero decay there). Outputs: ``y [B, L, D]`` (``y_t = C_t . h_t``) and the last state
    ``[B, D, N]``. Working tensors are laid out ``[B, Ts, G, N, H]`` (``D = G * H``) so that the
    innermost, contiguous dimension is the channel one: broadcasting ``delta`` against ``A`` or ``x``
    against ``B`` then runs over long contiguous rows, which vectorises well.
    """

    @staticmethod
    def forward(ctx, delta, x, A, B, C, h0, reset):
        batch, length, channels = delta.shape
        groups, d_state = B.shape[2], A.shape[1]
        heads = channels // groups
        seg = _segment_length(batch, channels, d_state, length)
        delta_row = delta.view(batch, length, groups, 1, heads)
        x_row = x.view(batch, length, groups, 1, heads)
        A_t = A.view(groups, heads, d_state).transpose(1, 2).contiguous()
        B_col = B.view(batch, length, groups, d_state, 1)
        C_row = C.view(batch, length, groups, 1, d_state)
        reset_row = reset.view(batch, length, 1, 1, 1) if reset is not None else None
        per_step = batch * channels * d_state
        decay_buf = delta.new_empty(seg * per_step)
        state_buf = delta.new_empty(seg * per_step)
        y = delta.new_empty(batch, length, groups, 1, heads)
        h = None
        if h0 is not None:
            h = h0.view(batch, groups, heads, d_state).transpose(-1, -2).contiguous()
        starts: list[torch.Tensor | None] = []
        for s0 in range(0, length, seg):
            s1 = min(length, s0 + seg)
            shape = (batch, s1 - s0, groups, d_state, heads)
            decay = decay_buf[: (s1 - s0) * per_step].view(shape)
            states = state_buf[: (s1 - s0) * per_step].view(shape)
            torch.mul(delta_row[:, s0:s1], A_t, out=decay).exp_()
            if reset_row is not None:
                decay.masked_fill_(reset_row[:, s0:s1], 0.0)
            torch.mul(x_row[:, s0:s1], B_col[:, s0:s1], out=states)
            starts.append(h)
            scan_sweep(decay, states, h, out=states)
            y[:, s0:s1] = torch.matmul(C_row[:, s0:s1], states)
            h = states[:, -1].clone()
        ctx.seg = seg
        ctx.reset_row = reset_row
        # Only the state entering each segment is kept; backward recomputes the rest.
        ctx.later_starts = starts[1:]
        ctx.save_for_backward(delta, x, A_t, B, C, starts[0])
        ctx.set_materialize_grads(False)
        last = h.transpose(-1, -2).reshape(batch, channels, d_state)
        return y.view(batch, length, channels), last

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        delta, x, A_t, B, C, h_first = ctx.saved_tensors
        starts, seg, reset_row = [h_first, *ctx.later_starts], ctx.seg, ctx.reset_row
        batch, length, channels = delta.shape
        groups, d_state = B.shape[2], A_t.shape[1]
        heads = channels // groups
        delta_row = delta.view(batch, length, groups, 1, heads)
        x_row = x.view(batch, length, groups, 1, heads)
        B_col = B.view(batch, length, groups, d_state, 1)
        B_row = B.view(batch, length, groups, 1, d_state)
        C_col = C.view(batch, length, groups, d_state, 1)
        if grad_y is None:
            grad_y = delta.new_zeros(batch, length, channels)
        grad_y = grad_y.contiguous()
        dy_row = grad_y.view(batch, length, groups, 1, heads)

        grad_delta = delta.new_empty(batch, length, groups, 1, heads)
        grad_x = delta.new_empty(batch, length, groups, 1, heads)
        grad_A = torch.zeros_like(A_t)
        grad_B = torch.empty_like(B)
        grad_C = torch.empty_like(C)
        per_step = batch * channels * d_state
        decay_buf = delta.new_empty(seg * per_step)
        state_buf = delta.new_empty(seg * per_step)
        adj_buf = delta.new_empty(seg * per_step)
        lam_buf = delta.new_empty(seg * per_step)
        carry = None
        if grad_last is not None:
            carry = grad_last.reshape(batch, groups, heads, d_state).transpose(-1, -2).contiguous()
        for k in range(len(starts) - 1, -1, -1):
            s0 = k * seg
            s1 = min(length, s0 + seg)
            n = s1 - s0
            shape = (batch, n, groups, d_state, heads)
            decay = decay_buf[: n * per_step].view(shape)
            states = state_buf[: n * per_step].view(shape)
            mu = adj_buf[: n * per_step].view(shape)
            lam = lam_buf[: n * per_step].view(shape)
            # Recompute this segment's decays and states from its saved start state.
            torch.mul(delta_row[:, s0:s1], A_t, out=decay).exp_()
            if reset_row is not None:
                decay.masked_fill_(reset_row[:, s0:s1], 0.0)
            torch.mul(x_row[:, s0:s1], B_col[:, s0:s1], out=states)
            scan_sweep(decay, states, starts[k], out=states)
            # Contractions over the inner channel dim: vecdot beats a batched matrix-vector bmm.
            grad_C[:, s0:s1] = torch.linalg.vecdot(states, dy_row[:, s0:s1])
            # g_t = dy_t C_t (gradient reaching h_t from the output), then the adjoint scan.
            torch.mul(C_col[:, s0:s1], dy_row[:, s0:s1], out=lam)
            torch.mul(decay, lam, out=mu)
            scan_sweep(decay, mu, carry, reverse=True, out=mu)
            lam[:, :-1] += mu[:, 1:]
            if carry is not None:
                lam[:, -1] += carry
            carry = mu[:, 0].clone()
            grad_x[:, s0:s1] = torch.matmul(B_row[:, s0:s1], lam)
            grad_B[:, s0:s1] = torch.linalg.vecdot(lam, x_row[:, s0:s1])
            # mu_t * h_{t-1} is the gradient of the decay factor times the decay itself.
            mu[:, 1:] *= states[:, :-1]
            if starts[k] is None:
                mu[:, 0].zero_()
            else:
                mu[:, 0] *= starts[k]
            grad_delta[:, s0:s1] = torch.mul(mu, A_t, out=decay).sum(-2, keepdim=True)
            grad_A += torch.mul(mu, delta_row[:, s0:s1], out=decay).sum((0, 1))
        grad_h0 = None
        if h_first is not None:
            grad_h0 = carry.transpose(-1, -2).reshape(batch, channels, d_state)
        return (
            grad_delta.view(batch, length, channels),
            grad_x.view(batch, length, channels),
            grad_A.transpose(1, 2).reshape(channels, d_state),
            grad_B,
            grad_C,
            grad_h0,
            None,
        )


def selective_scan_chunk(
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
    """Chunked selective scan; same arguments and results as the naive reference."""
    dtype_in = u.dtype
    compute = torch.promote_types(u.dtype, torch.float32)
    u, delta, A = u.to(compute), delta.to(compute), A.to(compute)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if mask is not None:
        # A padded step is the identity on the state: decay exp(0 * A) = 1, input 0 * u * B = 0.
        delta = delta.masked_fill(~mask[:, None, :], 0.0)
    B = B.to(compute) if B.dim() == 4 else B.to(compute).unsqueeze(1)
    C = C.to(compute) if C.dim() == 4 else C.to(compute).unsqueeze(1)
    if B.shape[1] != C.shape[1]:
        # Different group counts: refine both to the least common multiple (still divides D).
        groups = math.lcm(B.shape[1], C.shape[1])
        B = B.repeat_interleave(groups // B.shape[1], dim=1)
        C = C.repeat_interleave(groups // C.shape[1], dim=1)
    # Time-major layouts: every per-step slice of the [B, L, D, N] working tensors is contiguous.
    delta_t = delta.transpose(1, 2).contiguous()
    x_t = (delta * u).transpose(1, 2).contiguous()
    B_t = B.permute(0, 3, 1, 2).contiguous()
    C_t = C.permute(0, 3, 1, 2).contiguous()
    if h0 is not None:
        h0 = h0.to(compute).contiguous()
    reset_t = reset.contiguous() if reset is not None else None
    y, last = _SelectiveScanFn.apply(delta_t, x_t, A.contiguous(), B_t, C_t, h0, reset_t)
    out = y.transpose(1, 2)
    if D is not None:
        out = out + D.to(compute)[:, None] * u
    if z is not None:
        out = out * F.silu(z.to(compute))
    out = out.to(dtype_in)
    return (out, last) if return_last_state else out
