"""Informer: ProbSparse self-attention, self-attention distilling and a generative decoder.

Zhou et al., "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting",
AAAI 2021, arXiv 2012.07436. The network, as in Time-Series-Library's ``models/Informer.py`` (the
code behind the published ETTh1 lookback-96 results, e.g. horizon 96: MSE 0.865, MAE 0.713):

- **Embedding** (``DataEmbedding``): value tokens from a circular ``Conv1d(C, d_model, 3)``, plus
  the sinusoidal position code, plus a time-stamp embedding -- ``Linear(F, d_model)`` of the
  "timeF" features (``embed="timeF"``, data ``timeenc=1``) or sums of fixed sinusoidal
  (``"fixed"``) / learned (``"learned"``) tables of the integer month, day, weekday, hour and
  quarter-hour fields (data ``timeenc=0``); then dropout.
- **Encoder**: ``e_layers`` post-norm layers of multi-head ProbSparse self-attention (the core
  ``probsparse_attention`` mixer) + a GELU feed-forward, with a **distilling** layer between two
  attention layers (``distil=True``): circular ``Conv1d(d, d, 3)`` -> ``BatchNorm1d`` -> ELU ->
  ``MaxPool1d(3, stride 2, padding 1)``, which about halves the length; a final LayerNorm.
- **Decoder** (generative inference): its input is the ``label_len`` start token (the end of the
  lookback) followed by ``pred_len`` zeros, embedded like the encoder's; ``d_layers`` post-norm
  layers of masked ProbSparse self-attention, attention over the encoder output and a
  feed-forward; a final LayerNorm and ``Linear(d_model, C)``; the last ``pred_len`` steps are the
  forecast, all produced in one forward pass.

Two reference codes differ in details; ``variant`` picks one:

- ``"tsl"`` (default; Time-Series-Library, which produced the published numbers): the decoder's
  cross-attention is ProbSparse too; every ProbSparse layer reads its ``[B, H, L, d_head]``
  context buffer as ``[B, L, H * d_head]`` (Informer's ``mix`` layout: TSL's ``ProbAttention``
  returns the head-major buffer and its ``AttentionLayer`` views it as is); the distilling
  convolution pads 2 steps circularly on each side, so a length ``L`` becomes ``(L + 1) // 2 + 1``
  (96 -> 49); the token convolution and the timeF linear map have no bias.
- ``"informer2020"`` (the authors' zhouhaoyi/Informer2020 on PyTorch >= 1.5): encoder ProbSparse
  attention with the ordinary head layout, masked decoder self-attention with the ``mix`` layout,
  full (softmax) cross-attention with dropout on its weights; the distilling convolution pads 1, so
  ``L`` becomes ``(L - 1) // 2 + 1`` (96 -> 48); token convolution and timeF map with biases.

Deviations: the fixed sinusoidal time-stamp tables are (unsaved) buffers rather than frozen
parameters (same values, not listed by ``parameters()``); the position code is computed up to the
longest length seen instead of being a fixed 5000-step table. ``mixer`` can replace the encoder's
self-attention by any registered bidirectional mixer (ProbSparse is the paper's). Key sampling in
ProbSparse attention is random (torch's global generator): seed it for reproducible outputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mixerzoo.core.blocks import MLP, Block
from mixerzoo.core.dropout import Dropout
from mixerzoo.core.mixers.attention import Attention
from mixerzoo.core.mixers.base import Mixer
from mixerzoo.core.mixers.probsparse_attention import ProbSparseAttention
from mixerzoo.core.registry import create_mixer, register_model
from mixerzoo.core.validation import check_tensor
from mixerzoo.timeseries.models.embed import DataEmbedding

__all__ = [
    "Informer",
    "DistillingLayer",
    "InformerDecoderLayer",
]

VARIANTS = ("tsl", "informer2020")


class DistillingLayer(nn.Module):
    """Self-attention distilling: ``Conv1d(k=3, circular) -> BatchNorm1d -> ELU -> MaxPool1d(3, 2, 1)``.

    Args:
        d_model: width.
        padding: circular padding of the convolution on each side: 1 keeps the length (output
            ``(L - 1) // 2 + 1``), 2 (Time-Series-Library) adds two steps (``(L + 1) // 2 + 1``).

    Shapes:
        ``[B, L, d_model] -> [B, L', d_model]``.
    """

    def __init__(self, d_model: int, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(
            d_model, d_model, kernel_size=3, padding=padding, padding_mode="circular"
        )
        self.norm = nn.BatchNorm1d(d_model)
        self.act = nn.ELU()
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.act(self.norm(self.conv(x.transpose(1, 2)))))
        return y.transpose(1, 2)


class InformerDecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention, cross-attention over the encoder output, feed-forward.

    ``x = norm1(x + drop(self_attn(x)))``; ``x = norm2(x + drop(cross(x, memory)))``;
    ``x = norm3(x + drop(mlp(x)))``, with ``mlp = Linear -> act -> dropout -> Linear`` (the
    reference's two kernel-1 convolutions).

    Args:
        d_model: width.
        self_attention: masked ProbSparse self-attention mixer.
        cross_attention: a ``ProbSparseAttention`` (uses its ``attend``) or an ``Attention`` (full
            softmax cross-attention through its ``memory`` argument).
        d_ff: feed-forward width.
        activation: feed-forward activation.
        dropout: dropout on each residual branch and inside the feed-forward.

    Shapes:
        ``forward(x [B, L_dec, D], memory [B, L_enc, D]) -> [B, L_dec, D]``.
    """

    def __init__(
        self,
        d_model: int,
        self_attention: Mixer,
        cross_attention: ProbSparseAttention | Attention,
        d_ff: int,
        activation: str = "gelu",
        dropout: float = 0.1,
    ):
        super().__init__()
        self.self_attention, self.cross_attention = self_attention, cross_attention
        self.mlp = MLP(d_model, d_ff, activation, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attention(x)[0]))
        if isinstance(self.cross_attention, ProbSparseAttention):
            cross = self.cross_attention.attend(x, memory, memory)
        else:
            cross, _ = self.cross_attention(x, memory=memory)
        x = self.norm2(x + self.dropout(cross))
        return self.norm3(x + self.dropout(self.mlp(x)))


@register_model("informer", domain="timeseries")
class Informer(nn.Module):
    """Informer forecaster (see the module docstring; defaults: Time-Series-Library's ETTh1 recipe).

    Args:
        seq_len: lookback ``L``.
        pred_len: horizon ``H``.
        label_len: decoder start-token length (the last ``label_len`` lookback steps).
        enc_in: number of variables ``C`` (input and output).
        d_model: model width.
        n_heads: attention heads.
        e_layers: encoder layers.
        d_layers: decoder layers.
        d_ff: feed-forward width.
        factor: ProbSparse sampling factor ``c`` (``c ln L`` sampled keys and active queries;
            TSL's scripts use 3, Informer2020's default is 5).
        dropout: dropout on embeddings, residual branches, feed-forwards (and the full
            cross-attention weights of ``"informer2020"``).
        activation: feed-forward activation.
        distil: distilling layers between encoder layers.
        embed: time-stamp embedding: ``"timeF"`` (data ``timeenc=1``), ``"fixed"`` or ``"learned"``
            (data ``timeenc=0``).
        freq: data frequency (number of time-stamp channels).
        variant: ``"tsl"`` or ``"informer2020"`` (see the module docstring).
        mixer: encoder self-mixer; ``"probsparse_attention"`` is the paper's, any registered
            bidirectional mixer may replace it.
        mixer_kwargs: extra arguments of the encoder mixer.

    Shapes:
        ``forward(x [B, L, C], x_mark [B, L, F] | None, x_dec [B, label_len + H, C] | None,
        x_mark_dec [B, label_len + H, F] | None) -> [B, H, C]``. Without ``x_dec`` the decoder
        input is built from ``x`` (its last ``label_len`` steps, then zeros), which is what the
        data protocol's ``x_dec`` holds.
    """

    def __init__(
        self,
        seq_len: int = 96,
        pred_len: int = 96,
        label_len: int = 48,
        enc_in: int = 7,
        d_model: int = 512,
        n_heads: int = 8,
        e_layers: int = 2,
        d_layers: int = 1,
        d_ff: int = 2048,
        factor: int = 3,
        dropout: float = 0.1,
        activation: str = "gelu",
        distil: bool = True,
        embed: str = "timeF",
        freq: str = "h",
        variant: str = "tsl",
        mixer: str = "probsparse_attention",
        mixer_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"Informer: variant must be one of {VARIANTS}, got {variant!r}")
        if not 0 <= label_len <= seq_len:
            raise ValueError(
                f"Informer: label_len must be in [0, seq_len={seq_len}], got {label_len}"
            )
        if e_layers < 1 or d_layers < 1:
            raise ValueError(
                f"Informer: e_layers and d_layers must be >= 1, got {e_layers}, {d_layers}"
            )
        self.seq_len, self.pred_len, self.label_len, self.enc_in = (
            seq_len,
            pred_len,
            label_len,
            enc_in,
        )
        self.variant = variant
        tsl = variant == "tsl"
        embed_kwargs = dict(
            embed=embed, freq=freq, dropout=dropout, token_bias=not tsl, time_bias=not tsl
        )
        self.enc_embedding = DataEmbedding(enc_in, d_model, **embed_kwargs)
        self.dec_embedding = DataEmbedding(enc_in, d_model, **embed_kwargs)

        kwargs = dict(mixer_kwargs or {})
        if mixer == "probsparse_attention":
            # ProbSparse attention: the references never apply its dropout (dropout=0.0).
            kwargs = {"n_heads": n_heads, "factor": factor, "mix": tsl, **kwargs}
        elif mixer == "attention":
            kwargs = {"n_heads": n_heads, "dropout": dropout, **kwargs}
        self.encoder = nn.ModuleList(
            Block(
                d_model,
                mixer,
                kwargs,
                d_ff=d_ff,
                activation=activation,
                dropout=dropout,
                prenorm=False,
            )
            for _ in range(e_layers)
        )
        self.distilling = nn.ModuleList(
            DistillingLayer(d_model, padding=2 if tsl else 1)
            for _ in range(e_layers - 1 if distil else 0)
        )
        self.encoder_norm = nn.LayerNorm(d_model)

        def cross() -> nn.Module:
            if tsl:
                return ProbSparseAttention(d_model, n_heads, factor=factor, mix=True)
            return Attention(d_model, n_heads, dropout=dropout)

        self.decoder = nn.ModuleList(
            InformerDecoderLayer(
                d_model,
                create_mixer(
                    "probsparse_attention",
                    d_model,
                    n_heads=n_heads,
                    factor=factor,
                    masked=True,
                    mix=True,
                ),
                cross(),
                d_ff,
                activation,
                dropout,
            )
            for _ in range(d_layers)
        )
        self.decoder_norm = nn.LayerNorm(d_model)
        self.projection = nn.Linear(d_model, enc_in)

    def encode(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output ``[B, L', d_model]`` (``L'`` shortened by each distilling layer)."""
        h = self.enc_embedding(x, x_mark)
        for i, block in enumerate(self.encoder):
            h, _ = block(h)
            if i < len(self.distilling):
                h = self.distilling[i](h)
        return self.encoder_norm(h)

    def forward(
        self,
        x: torch.Tensor,
        x_mark: torch.Tensor | None = None,
        x_dec: torch.Tensor | None = None,
        x_mark_dec: torch.Tensor | None = None,
    ) -> torch.Tensor:
        where = "Informer"
        check_tensor("x", x, ("B", self.seq_len, self.enc_in), where=where)
        b, dec_len = x.shape[0], self.label_len + self.pred_len
        if x_mark is not None:
            check_tensor("x_mark", x_mark, (b, self.seq_len, "F"), where=where)
        if x_dec is None:
            start = x[:, self.seq_len - self.label_len :]
            x_dec = torch.cat([start, x.new_zeros(b, self.pred_len, self.enc_in)], dim=1)
        check_tensor("x_dec", x_dec, (b, dec_len, self.enc_in), where=where)
        if x_mark_dec is not None:
            check_tensor("x_mark_dec", x_mark_dec, (b, dec_len, "F"), where=where)
        memory = self.encode(x, x_mark)
        h = self.dec_embedding(x_dec, x_mark_dec)
        for layer in self.decoder:
            h = layer(h, memory)
        return self.projection(self.decoder_norm(h))[:, -self.pred_len :]
