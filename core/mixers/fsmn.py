"""FSMN memory blocks as mixers: the deep FSMN layer and MossFormer2's gated dilated FSMN.

``fsmn`` follows "Feedforward Sequential Memory Networks: A New Structure to Learn Long-term
Dependency" (Zhang et al., 2015, arXiv 1512.08301) in its deep/compact form ("Deep-FSMN for Large
Vocabulary Continuous Speech Recognition", Zhang et al., 2018, arXiv 1803.05030) as used by FRCRN
("FRCRN: Boosting Feature Representation using Frequency Recurrence for Monaural Speech
Enhancement", Zhao et al., 2022, arXiv 2206.07293; the official ``UniDeepFsmn``):

    p_t = W2 relu(W1 x_t + b1)                                  (hidden layer, linear projection)
    y_t = x_t + p_t + sum_{i=0}^{N1-1} a_i * p_{t - s i} + sum_{j=1}^{N2} c_j * p_{t + s j}

with per-channel (vectorised) memory coefficients ``a``, ``c``, look-back order ``N1 = lorder``,
look-ahead order ``N2 = rorder`` and stride (dilation) ``s``. FRCRN uses ``lorder=20``,
``rorder=0`` (the default here), which is causal: ``step`` keeps the last ``s * (lorder - 1)``
projections ``p`` as its state. ``rorder > 0`` makes the mixer bidirectional.

``gated_fsmn`` follows "MossFormer2: Combining Transformer and RNN-Free Recurrent Network for
Enhanced Time-Domain Monaural Speech Separation" (Zhao et al., ICASSP 2024, arXiv 2312.11825) and
the official ``Gated_FSMN_Block_Dilated`` (ClearerVoice-Studio): 1x1 projection + PReLU ->
LayerNorm -> gated FSMN (two FFConvM branches ``u`` and ``v``; ``u`` goes through a dilated dense
FSMN: linear + ReLU + projection, then ``depth`` bidirectional depthwise FIR layers with kernel
``2 * lorder - 1`` and dilation ``2^i``, each fed the concatenation of all previous outputs and
followed by instance norm over time and PReLU; output ``v * (u + fsmn(u)) + input``) ->
LayerNorm -> 1x1 projection back to ``D`` (+ the input). It is bidirectional (centred filters,
instance norm over the whole sequence).

Options and deviations: both mixers add the input (``residual=True``, as the official modules);
set ``residual=False`` inside a ``Block`` that adds its own residual. ``gated_fsmn``'s 1x1
convolutions are ``nn.Linear`` layers (the same map) and its dropout defaults to 0 (the official
FFConvM branches use 0.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixerzoo.core.layers.conv import causal_depthwise_conv1d, depthwise_conv1d
from mixerzoo.core.layers.sequence import Compaction
from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.mixers.gated_attention import FFConvM, zero_padding
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.validation import check_tensor

__all__ = [
    "FSMN",
    "GatedFSMN",
    "DilatedDenseFSMN",
    "fsmn_memory",
    "fsmn_side_by_side",
    "stacked_fsmn_weights",
]


def fsmn_memory(
    p: torch.Tensor, weight: torch.Tensor, lorder: int, rorder: int = 0, dilation: int = 1
) -> torch.Tensor:
    """Per-channel FIR memory over past and future steps (zero outside the sequence).

    Args:
        p: ``[B, T, C]`` sequence to filter.
        weight: ``[C, lorder + rorder]`` taps; ``weight[:, lorder - 1 - i]`` multiplies
            ``p[t - dilation * i]`` (``i = 0 .. lorder - 1``) and ``weight[:, lorder - 1 + j]``
            multiplies ``p[t + dilation * j]`` (``j = 1 .. rorder``).
        lorder: look-back order (taps on the current and past steps, at least 1).
        rorder: look-ahead order.
        dilation: stride between taps.

    Returns:
        ``[B, T, C]``.
    """
    where = "fsmn_memory"
    check_tensor("p", p, ("B", "T", "C"), where=where)
    check_tensor("weight", weight, (p.shape[-1], lorder + rorder), where=where)
    return depthwise_conv1d(
        p, weight, dilation=dilation, padding=(dilation * (lorder - 1), dilation * rorder)
    )


def stacked_fsmn_weights(mixers: Sequence[FSMN]) -> tuple[Tensor, Tensor, Tensor]:
    """The first linears' weights and biases and the memory taps of ``mixers``, each
    concatenated over the mixers (the parameters :func:`fsmn_side_by_side` runs on)."""
    first = mixers[0]
    shape = (first.d_model, first.hidden_size, first.lorder, first.rorder, first.dilation)
    for m in mixers:
        if (m.d_model, m.hidden_size, m.lorder, m.rorder, m.dilation) != shape or (
            m.residual != first.residual
        ):
            raise ValueError(
                "fsmn_side_by_side: the mixers must share d_model, hidden_size, lorder, rorder, "
                "dilation and residual"
            )
    return (
        torch.cat([m.linear.weight for m in mixers]),
        torch.cat([m.linear.bias for m in mixers]),
        torch.cat([m.memory_weight for m in mixers]),
    )


def fsmn_side_by_side(
    mixers: Sequence[FSMN], x: Tensor, stacked: tuple[Tensor, Tensor, Tensor] | None = None
) -> Tensor:
    """``torch.cat([m(x)[0] for m in mixers], -1)`` as one wider pass: one product for all the
    first linears, one memory filter over all the projections' channels (no state, resets or
    masks: each sequence of ``x [B, T, D]`` from zeros).

    For several FSMNs reading the same input (FRCRN's real and imaginary mixers), a third of the
    operations, which is what counts when each call holds little (a streamed frame).

    Args:
        mixers: FSMN mixers of one configuration.
        x: ``[B, T, D]``.
        stacked: :func:`stacked_fsmn_weights` of ``mixers`` (e.g. kept between calls), or
            ``None`` to form it here.

    Returns:
        ``[B, T, len(mixers) * D]``: each mixer's output in turn.
    """
    check_tensor("x", x, ("B", "T", mixers[0].d_model), where="fsmn_side_by_side")
    w1, b1, taps = stacked_fsmn_weights(mixers) if stacked is None else stacked
    first, h, k = mixers[0], mixers[0].hidden_size, len(mixers)
    hidden = F.relu(F.linear(x, w1, b1))
    p = torch.cat(
        [
            F.linear(hidden[..., i * h : (i + 1) * h], m.project.weight)
            for i, m in enumerate(mixers)
        ],
        dim=-1,
    )
    y = p + fsmn_memory(p, taps, first.lorder, first.rorder, first.dilation)
    if first.residual:
        y = (y.view(*x.shape[:-1], k, first.d_model) + x.unsqueeze(-2)).flatten(-2)
    return y


@register_mixer("fsmn")
class FSMN(Mixer):
    """Deep FSMN layer (FRCRN's ``UniDeepFsmn``) with optional look-ahead and dilation.

    Args:
        d_model: model width ``D``.
        lorder: look-back order ``N1`` (taps on the current and ``N1 - 1`` past steps; FRCRN: 20).
        rorder: look-ahead order ``N2`` (0: causal, streaming ``step``).
        dilation: stride ``s`` between memory taps.
        hidden_size: width of the hidden layer (default ``D``, as FRCRN).
        residual: add the input ``x`` to the output (the deep-FSMN skip connection).

    Shapes:
        ``forward(x [B, T, D], state) -> (y [B, T, D], state)``; when causal the state is the
        last ``dilation * (lorder - 1)`` projections ``[B, dilation * (lorder - 1), D]``.
    """

    def __init__(
        self,
        d_model: int,
        lorder: int = 20,
        rorder: int = 0,
        dilation: int = 1,
        hidden_size: int | None = None,
        residual: bool = True,
    ):
        super().__init__(d_model)
        if lorder < 1 or rorder < 0 or dilation < 1:
            raise ValueError(
                f"FSMN: need lorder >= 1, rorder >= 0 and dilation >= 1, got lorder={lorder}, "
                f"rorder={rorder}, dilation={dilation}"
            )
        hidden = hidden_size or d_model
        self.lorder, self.rorder, self.dilation = lorder, rorder, dilation
        self.hidden_size = hidden
        self.residual = residual
        self.causal = rorder == 0
        self.context = dilation * (lorder - 1)
        self.linear = nn.Linear(d_model, hidden)
        self.project = nn.Linear(hidden, d_model, bias=False)
        # Same initialisation as the official depthwise Conv2d (fan-in = number of taps).
        conv = nn.Conv1d(d_model, d_model, lorder + rorder, groups=d_model, bias=False)
        self.memory_weight = nn.Parameter(conv.weight.detach().squeeze(1).clone())

    def forward(
        self, x: Tensor, state: Tensor | None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, Tensor | None]:
        reset, mask = self.check_args(x, reset, mask)
        p = self.project(F.relu(self.linear(x)))
        if not self.causal:
            if state is not None:
                raise ValueError(
                    f"FSMN(rorder={self.rorder}) looks ahead and takes no state; pass state=None "
                    f"or build it with rorder=0"
                )
            compaction = Compaction(mask) if mask is not None else None
            if compaction is None:
                memory = fsmn_memory(p, self.memory_weight, self.lorder, self.rorder, self.dilation)
            else:
                # Each row without its padding (zeros past its last real token), as run alone.
                p_rows = zero_padding(compaction.compact(p), compaction.valid)
                memory = compaction.expand(
                    fsmn_memory(p_rows, self.memory_weight, self.lorder, self.rorder, self.dilation)
                )
            new_state = None
        else:
            if state is not None:
                check_tensor(
                    "state", state, (x.shape[0], self.context, self.d_model), where="FSMN.forward"
                )
            # The look-back taps are a causal depthwise convolution (the carried history replaces
            # the zero padding of the first lorder - 1 taps).
            memory, new_state = causal_depthwise_conv1d(
                p, self.memory_weight, None, state, self.dilation, reset=reset, mask=mask
            )
        y = p + memory
        return (x + y if self.residual else y), new_state

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor | None:
        if not self.causal:
            return None
        return torch.zeros(batch_size, self.context, self.d_model, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, lorder={self.lorder}, rorder={self.rorder}, "
            f"dilation={self.dilation}, hidden_size={self.hidden_size}, residual={self.residual}"
        )


class _InstanceNormTime(nn.Module):
    """Instance norm over time of ``[B, C, T]`` with per-channel affine (``InstanceNorm2d`` on the
    official ``[B, C, T, 1]`` layout); also defined for ``T = 1`` (output = bias)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, C, T]``; statistics over the ``valid [B, T]`` positions only when given."""
        if valid is None:
            mean = x.mean(dim=-1, keepdim=True)
            var = x.var(dim=-1, unbiased=False, keepdim=True)
        else:
            w = valid.unsqueeze(1).to(x.dtype)
            count = w.sum(-1, keepdim=True).clamp(min=1)
            mean = (x * w).sum(-1, keepdim=True) / count
            var = ((x - mean).square() * w).sum(-1, keepdim=True) / count
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None] + self.bias[:, None]


class DilatedDenseFSMN(nn.Module):
    """MossFormer2's ``UniDeepFsmn_dilated``: ``x + DilatedDenseNet(W2 relu(W1 x))`` on ``[B, T, C]``.

    The dense net has ``depth`` layers; layer ``i`` filters the concatenation
    ``[out_{i-1}, ..., out_0, p]`` (``C * (i + 1)`` channels, ``C`` groups of ``i + 1``
    consecutive channels) with a bidirectional depthwise FIR of ``2 * lorder - 1`` taps and
    dilation ``2^i``, then instance norm over time and a per-channel PReLU. The last layer's
    output is the memory.
    """

    def __init__(self, channels: int, lorder: int = 20, depth: int = 2):
        super().__init__()
        if lorder < 1 or depth < 1:
            raise ValueError(
                f"DilatedDenseFSMN: need lorder >= 1 and depth >= 1, got {lorder}, {depth}"
            )
        self.lorder = lorder
        self.linear = nn.Linear(channels, channels)
        self.project = nn.Linear(channels, channels, bias=False)
        self.convs = nn.ModuleList(
            nn.Conv1d(
                channels * (i + 1),
                channels,
                2 * lorder - 1,
                dilation=2**i,
                groups=channels,
                bias=False,
            )
            for i in range(depth)
        )
        self.norms = nn.ModuleList(_InstanceNormTime(channels) for _ in range(depth))
        self.acts = nn.ModuleList(nn.PReLU(channels) for _ in range(depth))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, T, C]``; ``valid [B, T]`` (real tokens first in each row) makes every filter
        and norm see each row without its padding."""
        p = zero_padding(self.project(F.relu(self.linear(x))), valid)
        skip = p.transpose(1, 2)  # [B, C, T]
        keep = None if valid is None else valid.unsqueeze(1).to(x.dtype)
        out = skip
        for conv, norm, act in zip(self.convs, self.norms, self.acts):
            pad = conv.dilation[0] * (self.lorder - 1)
            out = act(norm(conv(F.pad(skip, (pad, pad))), valid))
            if keep is not None:
                out = out * keep
            skip = torch.cat([out, skip], dim=1)
        return x + out.transpose(1, 2)


@register_mixer("gated_fsmn")
class GatedFSMN(Mixer):
    """MossFormer2's gated dilated FSMN block (``Gated_FSMN_Block_Dilated``).

    Args:
        d_model: model width ``D``.
        inner_channels: width of the gated FSMN (MossFormer2: 256).
        lorder: FIR half-length; each dense layer has ``2 * lorder - 1`` taps (MossFormer2: 20).
        depth: number of dilated dense FIR layers (MossFormer2: 2).
        conv_kernel: kernel of the FFConvM depthwise convolutions (17).
        dropout: dropout at the end of the FFConvM branches (MossFormer2: 0.1).
        residual: add the input to the output (as the official block).

    Shapes:
        ``forward(x [B, T, D]) -> (y [B, T, D], None)``; bidirectional, no ``step``.
    """

    causal = False

    def __init__(
        self,
        d_model: int,
        inner_channels: int = 256,
        lorder: int = 20,
        depth: int = 2,
        conv_kernel: int = 17,
        dropout: float = 0.0,
        residual: bool = True,
    ):
        super().__init__(d_model)
        c = inner_channels
        self.inner_channels = c
        self.residual = residual
        self.conv1 = nn.Linear(d_model, c)
        self.act1 = nn.PReLU()
        self.norm1 = nn.LayerNorm(c)
        ff = {"norm": "layernorm", "dropout": dropout, "kernel_size": conv_kernel}
        self.to_u = FFConvM(c, c, **ff)
        self.to_v = FFConvM(c, c, **ff)
        self.fsmn = DilatedDenseFSMN(c, lorder, depth)
        self.norm2 = nn.LayerNorm(c)
        self.conv2 = nn.Linear(c, d_model)

    def forward(
        self, x: Tensor, state: None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, None]:
        _, mask = self.check_args(x, reset, mask)
        if state is not None:
            raise ValueError("GatedFSMN is bidirectional and takes no state; pass state=None")
        compaction = Compaction(mask) if mask is not None else None
        valid = compaction.valid if compaction is not None else None
        if compaction is not None:
            x = compaction.compact(x)
        h = self.norm1(self.act1(self.conv1(x)))
        gated = self.to_v(h, valid) * self.fsmn(self.to_u(h, valid), valid) + h
        out = self.conv2(self.norm2(gated))
        out = x + out if self.residual else out
        return (out if compaction is None else compaction.expand(out)), None

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, inner_channels={self.inner_channels}, "
            f"lorder={self.fsmn.lorder}, depth={len(self.fsmn.convs)}, residual={self.residual}"
        )
