"""Pure-PyTorch causal depthwise convolution: one channels-last depthwise convolution over the
state and the inputs, or, with resets, one vectorised pass per tap that reads zero across a
segment boundary."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["causal_conv1d_chunk", "depthwise_conv1d"]


def depthwise_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dilation: int = 1,
    padding: int | tuple[int, int] = 0,
) -> torch.Tensor:
    """Depthwise convolution over dim 1 of a channels-last sequence, ``nn.Conv1d``'s arithmetic.

    ``x [B, T, C]`` is read as the channels-last image ``[B, C, 1, T]`` (a view, no copy) and
    convolved by ``F.conv2d``: oneDNN's channels-last depthwise kernel on the CPU, measured 3-10x
    faster forward (and mostly faster backward) than ``F.conv1d`` on the transposed ``[B, C, T]``
    view, which first copies the input to ``[B, C, T]`` and returns a strided ``[B, T, C]``
    result (FRCRN's frequency FSMN, ``[404, 178, 128]``, 20 taps: 66 ms -> 7 ms on 2 threads).

    Args:
        x: ``[B, T, C]``.
        weight: ``[C, K]`` taps (``nn.Conv1d``'s ``[C, 1, K]`` weight squeezed).
        bias: ``[C]`` or ``None``.
        dilation: tap spacing.
        padding: zeros added on both sides of dim 1, or ``(before, after)``.

    Returns:
        ``[B, T', C]``, ``T' = T + before + after - dilation (K - 1)``.
    """
    if isinstance(padding, tuple):
        x = F.pad(x, (0, 0, *padding))
        padding = 0
    channels, taps = weight.shape
    y = F.conv2d(
        x.transpose(1, 2).unsqueeze(2),
        weight.view(channels, 1, 1, taps),
        bias,
        padding=(0, padding),
        dilation=(1, dilation),
        groups=channels,
    )
    return y.squeeze(2).transpose(1, 2)


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
        y = depthwise_conv1d(history, weight, bias, dilation)
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
