"""Step-by-step reference for the causal depthwise convolution: one output at a time, one tap at a
time, written to be obviously right (the ground truth of ``chunk.py`` and ``triton.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_conv1d_naive"]


def causal_conv1d_naive(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
    dilation: int = 1,
    *,
    segments: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """``y_t = act(bias + sum_i w_i x_{t - d (K - 1 - i)})`` (arguments of
    :func:`mixerzoo.core.ops.causal_conv1d.causal_conv1d`, resets given as segment ids).

    A tap that lands before the first token reads the carried ``state``; one that lands in an
    earlier segment than ``t`` (a reset in between) reads zero. Computed in float32 (float64 for
    float64 ``x``); the output in ``x``'s dtype.
    """
    batch, length, channels = x.shape
    taps = weight.shape[1]
    context = dilation * (taps - 1)
    f = torch.promote_types(x.dtype, torch.float32)
    if state is None:
        state = x.new_zeros(batch, context, channels)
    history = torch.cat([state.to(f), x.to(f)], dim=1)  # [B, context + T, C]
    seg = torch.zeros(batch, length, dtype=torch.long, device=x.device)
    if segments is not None:
        seg = segments.long()
    # The carried state belongs to segment 0.
    seg_history = torch.cat([seg.new_zeros(batch, context), seg], dim=1)
    outputs = []
    for t in range(length):
        now = context + t
        y = torch.zeros(batch, channels, dtype=f, device=x.device)
        if bias is not None:
            y = y + bias.to(f)
        for i in range(taps):
            src = now - dilation * (taps - 1 - i)
            same = (seg_history[:, src] == seg_history[:, now]).to(f).unsqueeze(-1)
            y = y + weight[:, i].to(f) * history[:, src] * same
        outputs.append(F.silu(y) if activation == "silu" else y)
    return torch.stack(outputs, dim=1).to(x.dtype)
