"""MossFormer's gated single-head attention (FLASH with shared quadratic/linear attention).

Follows "MossFormer: Pushing the Performance Limit of Monaural Speech Separation using Gated
Single-Head Transformer with Convolution-Augmented Joint Self-Attentions" (Zhao et al., ICASSP
2023, arXiv 2302.11824), built on FLASH from "Transformer Quality in Linear Time" (Hua et al.,
ICML 2022, arXiv 2202.10447), as in the official ``FLASH_ShareA_FFConvM`` (alibabasglab/MossFormer,
reused in ClearerVoice-Studio's MossFormer2):

- token shift: the first half of the channels is delayed by one step;
- ``to_hidden`` (width ``expansion_factor * D``, split into ``v`` and ``u``) and ``to_qk`` (width
  ``query_key_dim``) are FFConvM modules: norm -> linear -> SiLU -> depthwise conv (kernel 17,
  with a residual) -> dropout;
- one shared ``qk`` projection gives four per-use views by OffsetScale (``qk * gamma_h + beta_h``,
  ``h`` = quadratic query, linear query, quadratic key, linear key), with rotary position
  embeddings (interleaved pairs, on the first ``min(32, query_key_dim)`` features);
- joint attention: quadratic attention inside non-overlapping groups of ``group_size`` tokens
  with ``relu(q k^T / group_size)^2`` weights, plus linear attention over the whole sequence
  ``lin_q (lin_k^T v) / T``; the same weights attend to both ``v`` and ``u``;
- gating: ``out = (att_u * v) * sigmoid(att_v * u)``, projected back by an FFConvM and added to
  the input.

The sequence is zero-padded to a multiple of ``group_size``; padded keys get zero weight.

Options and deviations: ``conv=False`` drops the depthwise convolutions (FLASH's plain
norm -> linear -> SiLU projections); ``residual=False`` leaves out the final ``x +`` so the mixer
can sit in a ``Block`` that adds its own residual; ``to_out`` takes ``expansion_factor * D / 2``
features (the official code hard-codes ``2 * D``, equal at the default ``expansion_factor=4``).
``dropout`` defaults to 0 (MossFormer trains with 0.1). Only the bidirectional form is offered:
the official ``causal=True`` still uses centred convolutions, so it is not a streaming mixer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixerzoo.core.dropout import Dropout
from mixerzoo.core.layers import make_norm, rotary_frequencies, rotate_pairs
from mixerzoo.core.layers.conv import depthwise_conv1d
from mixerzoo.core.layers.sequence import Compaction
from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.validation import check_tensor

__all__ = [
    "GatedAttention",
    "ConvModule",
    "FFConvM",
    "OffsetScale",
    "apply_rotary",
    "token_shift",
    "joint_group_attention",
]


class ConvModule(nn.Module):
    """Depthwise convolution over time with a residual: ``x + dwconv(x)`` on ``[B, T, C]``.

    Centred ("same") padding, no bias, as the MossFormer ``ConvModule``.
    """

    def __init__(self, channels: int, kernel_size: int = 17):
        super().__init__()
        if kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(
                f"ConvModule: kernel_size must be a positive odd int, got {kernel_size}"
            )
        self.conv = nn.Conv1d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, T, C]``; ``valid [B, T]`` (real tokens first in each row) makes the convolution
        read zeros past each row's last real token, as for the row alone."""
        k = self.conv.kernel_size[0]
        return x + depthwise_conv1d(
            zero_padding(x, valid), self.conv.weight.squeeze(1), padding=k // 2
        )


class FFConvM(nn.Module):
    """MossFormer's projection: norm -> Linear -> SiLU -> ConvModule (optional) -> Dropout.

    Args:
        dim_in: input width.
        dim_out: output width.
        norm: ``"scalenorm"`` or ``"layernorm"``.
        dropout: dropout at the end.
        conv: include the depthwise ``ConvModule`` (False gives FLASH's plain projection).
        kernel_size: kernel of the depthwise convolution.
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        norm: str = "layernorm",
        dropout: float = 0.0,
        conv: bool = True,
        kernel_size: int = 17,
    ):
        super().__init__()
        if norm not in ("scalenorm", "layernorm"):
            raise ValueError(f"unknown norm {norm!r}; choose 'scalenorm' or 'layernorm'")
        self.norm = make_norm(norm, dim_in)
        self.linear = nn.Linear(dim_in, dim_out)
        self.conv = ConvModule(dim_out, kernel_size) if conv else nn.Identity()
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        h = F.silu(self.linear(self.norm(x)))
        if isinstance(self.conv, ConvModule):
            h = self.conv(h, valid)
        return self.dropout(h)


class OffsetScale(nn.Module):
    """Per-use affine views of one shared projection: ``x * gamma_h + beta_h`` for each head ``h``.

    ``gamma`` starts from N(0, 0.02) and ``beta`` from zero, as in FLASH.
    """

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(heads, dim).normal_(std=0.02))
        self.beta = nn.Parameter(torch.zeros(heads, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = x.unsqueeze(-2) * self.gamma + self.beta  # [..., heads, dim]
        return out.unbind(dim=-2)


def apply_rotary(x: torch.Tensor, rot_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding on the first ``rot_dim`` features of ``x [B, T, E]``.

    Interleaved pairs ``(x_{2i}, x_{2i+1})`` at position ``t`` are rotated by
    ``t * theta^(-2i / rot_dim)`` (the convention of the ``rotary-embedding-torch`` package that
    MossFormer uses); the remaining features pass unchanged.
    """
    freqs = rotary_frequencies(rot_dim, theta, spacing="rope", device=x.device)
    return rotate_pairs(x, torch.arange(x.shape[-2], device=x.device), freqs)


def zero_padding(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``x [B, T, C]`` with the positions where ``valid [B, T]`` is false set to zero."""
    return x if valid is None else x * valid.unsqueeze(-1).to(x.dtype)


def token_shift(x: torch.Tensor) -> torch.Tensor:
    """Delay the first half of the channels of ``x [B, T, D]`` by one step (zeros at ``t = 0``)."""
    half = (x.shape[-1] + 1) // 2  # torch.chunk puts the larger half first
    shifted = F.pad(x[..., :half], (0, 0, 1, -1))
    return torch.cat((shifted, x[..., half:]), dim=-1)


def joint_group_attention(
    quad_q: torch.Tensor,
    lin_q: torch.Tensor,
    quad_k: torch.Tensor,
    lin_k: torch.Tensor,
    v: torch.Tensor,
    u: torch.Tensor,
    group_size: int,
    attn_dropout: nn.Module | None = None,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FLASH's shared quadratic (within groups) + linear (global) attention.

    Args:
        quad_q, lin_q, quad_k, lin_k: ``[B, T, E]`` views of the shared query/key projection.
        v, u: ``[B, T, F]`` the two branches attended with the same weights.
        group_size: tokens per group ``g``; ``T`` is zero-padded to a multiple of it.
        attn_dropout: optional dropout on the quadratic weights.
        valid: ``[B, T]`` bool, true at each row's real tokens, which come first (a compacted
            padded batch): keys past a row's real tokens get no weight and the linear part is
            normalised by the row's own length, as for the row alone.

    Returns:
        ``(att_v, att_u)``, each ``[B, T, F]``: for token ``i`` in group ``G``,
        ``sum_{j in G} relu(q_i k_j / g)^2 v_j + lin_q_i (sum_j lin_k_j^T v_j) / T``.
    """
    where = "joint_group_attention"
    check_tensor("quad_q", quad_q, ("B", "T", "E"), where=where)
    b, n, e = quad_q.shape
    for name, value in (("lin_q", lin_q), ("quad_k", quad_k), ("lin_k", lin_k)):
        check_tensor(name, value, (b, n, e), where=where)
    check_tensor("v", v, (b, n, "F"), where=where)
    check_tensor("u", u, (b, n, v.shape[-1]), where=where)
    g = group_size
    pad = -n % g
    if valid is None:
        valid = torch.ones(b, n, dtype=torch.bool, device=v.device)
    lengths = valid.sum(1).clamp(min=1).to(v.dtype).view(b, 1, 1)
    # Zero every padded position (so padded keys carry no weight and add nothing).
    quad_q, lin_q, quad_k, lin_k, v, u = (
        zero_padding(t, valid) for t in (quad_q, lin_q, quad_k, lin_k, v, u)
    )
    if pad:
        quad_q, lin_q, quad_k, lin_k, v, u = (
            F.pad(t, (0, 0, 0, pad)) for t in (quad_q, lin_q, quad_k, lin_k, v, u)
        )
        valid = F.pad(valid, (0, pad))
    quad_q, lin_q, quad_k, lin_k, v, u = (
        t.reshape(b, -1, g, t.shape[-1]) for t in (quad_q, lin_q, quad_k, lin_k, v, u)
    )
    sim = torch.einsum("bgie,bgje->bgij", quad_q, quad_k) / g
    attn = F.relu(sim).square()
    if attn_dropout is not None:
        attn = attn_dropout(attn)
    # Padded keys are zeros (so their weight is already 0); the mask states it explicitly.
    attn = attn.masked_fill(~valid.view(b, -1, 1, g), 0.0)
    quad_v = torch.einsum("bgij,bgjf->bgif", attn, v)
    quad_u = torch.einsum("bgij,bgjf->bgif", attn, u)
    # Global linear attention, normalised by the true length (padding rows are zero).
    lin_kv = torch.einsum("bgne,bgnf->bef", lin_k, v) / lengths
    lin_ku = torch.einsum("bgne,bgnf->bef", lin_k, u) / lengths
    lin_v = torch.einsum("bgne,bef->bgnf", lin_q, lin_kv)
    lin_u = torch.einsum("bgne,bef->bgnf", lin_q, lin_ku)
    att_v = (quad_v + lin_v).reshape(b, -1, v.shape[-1])[:, :n]
    att_u = (quad_u + lin_u).reshape(b, -1, u.shape[-1])[:, :n]
    return att_v, att_u


@register_mixer("gated_attention")
class GatedAttention(Mixer):
    """MossFormer's gated single-head attention layer (``FLASH_ShareA_FFConvM``).

    Args:
        d_model: model width ``D``.
        group_size: tokens per quadratic-attention group (256).
        query_key_dim: width of the shared query/key projection (128).
        expansion_factor: width of ``to_hidden`` relative to ``D`` (4); split in ``v`` and ``u``.
        shift_tokens: delay half of the channels by one step first.
        rotary: rotary position embeddings on ``min(32, query_key_dim)`` query/key features.
        norm: norm inside the FFConvM projections, ``"scalenorm"`` (MossFormer) or ``"layernorm"``.
        conv: include the depthwise convolutions of FFConvM.
        conv_kernel: their kernel size (17).
        dropout: dropout in the projections and on the quadratic weights (MossFormer: 0.1).
        residual: add the input to the output, as the official layer does; set False inside a
            ``Block`` that adds its own residual.

    Shapes:
        ``forward(x [B, T, D]) -> (y [B, T, D], None)``; bidirectional, no ``step``.
    """

    causal = False

    def __init__(
        self,
        d_model: int,
        group_size: int = 256,
        query_key_dim: int = 128,
        expansion_factor: float = 4.0,
        shift_tokens: bool = True,
        rotary: bool = True,
        norm: str = "scalenorm",
        conv: bool = True,
        conv_kernel: int = 17,
        dropout: float = 0.0,
        residual: bool = True,
    ):
        super().__init__(d_model)
        hidden = int(d_model * expansion_factor)
        if hidden <= 0 or hidden % 2:
            raise ValueError(
                f"GatedAttention: int(d_model * expansion_factor) = {hidden} must be a positive "
                f"even number (it is split into the v and u branches)"
            )
        if group_size <= 0 or query_key_dim <= 0:
            raise ValueError(
                f"GatedAttention: group_size ({group_size}) and query_key_dim ({query_key_dim}) "
                f"must be positive"
            )
        self.group_size = group_size
        self.query_key_dim = query_key_dim
        self.expansion_factor = expansion_factor
        self.shift_tokens = shift_tokens
        # rotary-embedding-torch rotates whole pairs; MossFormer uses min(32, query_key_dim).
        self.rotary_dim = (min(32, query_key_dim) // 2) * 2 if rotary else 0
        self.residual = residual
        ff = {"norm": norm, "dropout": dropout, "conv": conv, "kernel_size": conv_kernel}
        self.to_hidden = FFConvM(d_model, hidden, **ff)
        self.to_qk = FFConvM(d_model, query_key_dim, **ff)
        self.qk_offset_scale = OffsetScale(query_key_dim, heads=4)
        self.to_out = FFConvM(hidden // 2, d_model, **ff)
        self.attn_dropout = Dropout(dropout)

    def forward(
        self, x: Tensor, state: None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, None]:
        _, mask = self.check_args(x, reset, mask)
        if state is not None:
            raise ValueError("GatedAttention is bidirectional and takes no state; pass state=None")
        # With padding: each row's real tokens first, mixed as the row alone would be.
        compaction = Compaction(mask) if mask is not None else None
        valid = compaction.valid if compaction is not None else None
        if compaction is not None:
            x = compaction.compact(x)
        h = token_shift(x) if self.shift_tokens else x
        v, u = self.to_hidden(h, valid).chunk(2, dim=-1)
        quad_q, lin_q, quad_k, lin_k = self.qk_offset_scale(self.to_qk(h, valid))
        if self.rotary_dim:
            quad_q, lin_q, quad_k, lin_k = (
                apply_rotary(t, self.rotary_dim) for t in (quad_q, lin_q, quad_k, lin_k)
            )
        att_v, att_u = joint_group_attention(
            quad_q, lin_q, quad_k, lin_k, v, u, self.group_size, self.attn_dropout, valid
        )
        out = self.to_out((att_u * v) * torch.sigmoid(att_v * u), valid)
        out = x + out if self.residual else out
        return (out if compaction is None else compaction.expand(out)), None

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, group_size={self.group_size}, "
            f"query_key_dim={self.query_key_dim}, expansion_factor={self.expansion_factor}, "
            f"residual={self.residual}"
        )
