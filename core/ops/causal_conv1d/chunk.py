"""Pure-PyTorch causal depthwise convolution: one grouped ``F.conv1d`` over the state and the
inputs, or, with resets, one vectorised pass per tap that reads zero across a segment boundary."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_conv1d_chunk"]


def causal_conv1d_chunk(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
    dilation: int = 1,
    *,
    segments: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """Same arguments and result as :func:`.naive.causal_conv1d_naive` (in ``x``'s dtype, computed
    in it too, as ``nn.Conv1d`` would)."""
    batch, length, channels = x.shape
    taps = weight.shape[1]
    context = dilation * (taps - 1)
    if state is None:
        state = x.new_zeros(batch, context, channels)
    history = torch.cat([state.to(x.dtype), x], dim=1)  # [B, context + T, C]
    weight = weight.to(x.dtype)
    if segments is None:
        y = F.conv1d(
            history.transpose(1, 2), weight.unsqueeze(1), bias, groups=channels, dilation=dilation
        ).transpose(1, 2)
    else:
        seg = segments.long()
        seg_history = torch.cat([seg.new_zeros(batch, context), seg], dim=1)
        y = x.new_zeros(batch, length, channels) if bias is None else bias.to(x.dtype).expand(
            batch, length, channels
        ).clone()  # fmt: skip
        for i in range(taps):
            start = context - dilation * (taps - 1 - i)
            same = (seg_history[:, start : start + length] == seg).unsqueeze(-1)
            y = y + weight[:, i] * history[:, start : start + length] * same.to(x.dtype)
    return F.silu(y) if activation == "silu" else y
