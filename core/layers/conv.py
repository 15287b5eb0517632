"""Causal depthwise convolution over time with a carried state, resets and padding masks.

One implementation for the short causal convolutions of Mamba (kernel 4), the mLSTM / ViL block
(kernel 4), MambaOut's causal token mixer and FSMN's memory (kernel ``lorder``, dilated):

    y_t = bias + sum_{i=0}^{K-1} w_i * x_{t - d (K - 1 - i)}

(the tap order of ``torch.nn.Conv1d``: the last tap multiplies the current input). The state is
the ``d (K - 1)`` previous inputs ``[B, d (K - 1), C]`` (zeros before the first token), so a
sequence processed in pieces, or token by token, gives the same outputs as in one call.

With ``reset`` a tap never reaches across an episode boundary (it reads zero instead); with
``mask`` the padded positions are skipped (taps count real tokens only) and the state returned is
the history at each row's last real token.
"""

from __future__ import annotations

import torch
from torch import nn

from mixerzoo.core.layers.sequence import Compaction, check_mask, check_reset, segment_ids
from mixerzoo.core.ops.causal_conv1d import causal_conv1d
from mixerzoo.core.ops.causal_conv1d.chunk import depthwise_conv1d  # noqa: F401 (re-exported)
from mixerzoo.core.validation import check_tensor

__all__ = ["CausalDepthwiseConv1d", "causal_depthwise_conv1d", "depthwise_conv1d"]


def causal_depthwise_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
    dilation: int = 1,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal depthwise convolution of ``x`` continuing from ``state`` (see the module docstring).

    Args:
        x: ``[B, T, C]``.
        weight: ``[C, K]`` taps (``nn.Conv1d``'s ``[C, 1, K]`` weight squeezed).
        bias: ``[C]`` or ``None``.
        state: ``[B, d (K - 1), C]`` previous inputs, or ``None`` (zeros).
        dilation: spacing ``d`` of the taps.
        reset: ``[B, T]`` bool, drop the history before the flagged steps.
        mask: ``[B, T]`` bool, true = real token.

    Returns:
        ``(y [B, T, C], new_state [B, d (K - 1), C])``; ``y`` is zero at padded positions.
    """
    where = "causal_depthwise_conv1d"
    check_tensor("x", x, ("B", "T", "C"), where=where)
    b, t, c = x.shape
    k = weight.shape[-1]
    ctx = dilation * (k - 1)
    if state is None:
        state = x.new_zeros(b, ctx, c)
    else:
        check_tensor("state", state, (b, ctx, c), where=where)
    reset = check_reset(reset, x, where)
    mask = check_mask(mask, x, where)
    compaction = Compaction(mask) if mask is not None else None
    seg = segment_ids(reset, (b, t), x.device)
    if compaction is not None:
        x, seg = compaction.compact(x), compaction.compact(seg)
        # Positions past each row's real tokens are padding: zero them so nothing odd flows on.
        x = x * compaction.valid.unsqueeze(-1).to(x.dtype)
    # The op with its automatic backend: the fused Triton kernel on GPUs, the channels-last
    # convolution (tap by tap across resets) of its chunk backend on CPUs.
    y = causal_conv1d(x, weight, bias, state, dilation, segments=seg if reset is not None else None)
    if compaction is None:
        # The last ctx inputs of [state, x]: a copy of x's tail when x is that long, without
        # forming the whole history (a sequence-sized copy).
        if t >= ctx:
            new_state = x[:, t - ctx :].clone()
        else:
            new_state = torch.cat([state.to(x.dtype), x], dim=1)[:, t:]
        seg_state = (
            torch.cat([seg.new_zeros(b, ctx), seg], dim=1)[:, t:] if reset is not None else None
        )
    else:
        new_state = compaction.last(torch.cat([state.to(x.dtype), x], dim=1), ctx)
        seg_state = (
            compaction.last(torch.cat([seg.new_zeros(b, ctx), seg], dim=1), ctx)
            if reset is not None
            else None
        )
        y = compaction.expand(y)
    if reset is not None:
        # Keep only the history of the segment the next token continues (the row's last one,
        # which includes a reset flagged at trailing padding).
        last_seg = reset.long().sum(1, keepdim=True)
        new_state = new_state * (seg_state == last_seg).unsqueeze(-1).to(new_state.dtype)
    return y, new_state


class CausalDepthwiseConv1d(nn.Module):
    """Module form of :func:`causal_depthwise_conv1d` with ``nn.Conv1d``'s parameter layout
    (``weight [C, 1, K]``, ``bias [C]``) and initialisation, so state dicts of modules that used
    a plain depthwise ``nn.Conv1d`` load unchanged.

    Args:
        channels: ``C``.
        kernel_size: ``K``.
        dilation: tap spacing ``d``.
        bias: learn a bias.

    Shapes:
        ``forward(x [B, T, C], state=None, *, reset=None, mask=None) -> (y, state)`` with
        ``state [B, d (K - 1), C]``; ``step(x_t [B, C], state) -> (y_t, state)``.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1, bias: bool = True):
        super().__init__()
        if kernel_size < 1 or dilation < 1:
            raise ValueError(
                f"CausalDepthwiseConv1d: kernel_size and dilation must be >= 1, got "
                f"{kernel_size} and {dilation}"
            )
        conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)
        self.weight = conv.weight
        self.bias = conv.bias
        self.channels, self.kernel_size, self.dilation = channels, kernel_size, dilation

    @property
    def context(self) -> int:
        """Length ``d (K - 1)`` of the carried state."""
        return self.dilation * (self.kernel_size - 1)

    def init_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        return torch.zeros(
            batch_size,
            self.context,
            self.channels,
            device=device if device is not None else self.weight.device,
            dtype=dtype if dtype is not None else self.weight.dtype,
        )

    def forward(
        self,
        x: torch.Tensor,
        state: torch.Tensor | None = None,
        *,
        reset: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return causal_depthwise_conv1d(
            x, self.weight.squeeze(1), self.bias, state, self.dilation, reset=reset, mask=mask
        )

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token ``x_t [B, C]``: a dot product with the kept window, no convolution call."""
        window = torch.cat([state.to(x_t.dtype), x_t.unsqueeze(1)], dim=1)  # [B, ctx + 1, C]
        taps = window[:, :: self.dilation]  # the K tapped inputs, oldest first
        y = (taps * self.weight.squeeze(1).t().to(x_t.dtype)).sum(1)
        if self.bias is not None:
            y = y + self.bias.to(x_t.dtype)
        return y, window[:, 1:]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, dilation={self.dilation}"
