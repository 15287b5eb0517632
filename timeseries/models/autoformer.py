"""Autoformer: decomposition Transformer with Auto-Correlation.

Wu et al., "Autoformer: Decomposition Transformers with Auto-Correlation for Long-Term Series
Forecasting", NeurIPS 2021, arXiv 2106.13008. The network, as in the official code
(thuml/Autoformer) and Time-Series-Library's ``models/Autoformer.py`` (which produced the
published ETTh1 lookback-96 results, e.g. horizon 96: MSE 0.449, MAE 0.459):

- **Series decomposition** (``SeriesDecomp``): trend = moving average of width ``moving_avg``
  (25) over time, with the series padded at both ends by ``(k - 1) // 2`` copies of its first and
  last values (replicate padding); seasonal = input - trend.
- **Decoder initialisation**: the lookback is decomposed; the seasonal input is its last
  ``label_len`` seasonal steps followed by ``pred_len`` zeros, the trend input its last
  ``label_len`` trend steps followed by the lookback mean repeated ``pred_len`` times.
- **Embedding**: token convolution + time-stamp embedding, no position code (``DataEmbedding``
  with ``positional=False``, i.e. the reference ``DataEmbedding_wo_pos``).
- **Encoder**: ``e_layers`` layers of ``x = seasonal(x + drop(AutoCorrelation(x)))``,
  ``x = seasonal(x + drop(FFN(x)))`` (the trends are dropped), with a bias-free kernel-1 FFN; then
  the seasonal layer norm (``SeasonalLayerNorm``, the reference ``my_Layernorm``: LayerNorm minus
  its mean over time).
- **Decoder**: ``d_layers`` layers of self Auto-Correlation, cross Auto-Correlation with the
  encoder output and FFN, each followed by a decomposition; the three extracted trends are summed,
  projected to ``C`` channels by a circular ``Conv1d(d_model, C, 3)`` without bias and accumulated
  onto the trend input (progressive trend accumulation). The seasonal stream ends with the
  seasonal layer norm and ``Linear(d_model, C)``; forecast = trend + seasonal, last ``pred_len``
  steps.

Auto-Correlation is the core ``autocorrelation`` mixer (batch-shared delays in training,
per-sample delays in eval, ``top_k = int(factor * ln L)``). Deviations: ``moving_avg`` must be
odd (an even width changes the length in the reference and fails there); ``mixer`` can replace
the encoder's Auto-Correlation by any registered bidirectional mixer. ``x_dec`` is accepted for
the common interface but, as in the reference, the decoder input is derived from ``x``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mixerzoo.core.blocks import get_activation
from mixerzoo.core.dropout import Dropout
from mixerzoo.core.mixers.autocorrelation import AutoCorrelation
from mixerzoo.core.mixers.base import Mixer
from mixerzoo.core.registry import create_mixer, register_model
from mixerzoo.core.validation import check_tensor
from mixerzoo.timeseries.models.embed import DataEmbedding

__all__ = [
    "Autoformer",
    "SeriesDecomp",
    "SeasonalLayerNorm",
    "AutoformerEncoderLayer",
    "AutoformerDecoderLayer",
    "moving_average",
]


def moving_average(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Centred moving average over time with replicate padding (Autoformer's ``moving_avg``).

    Args:
        x: ``[B, L, C]``.
        kernel_size: odd window width ``k``.

    Returns:
        ``[B, L, C]``: the mean of ``x`` over ``[t - (k-1)/2, t + (k-1)/2]``, with the series
        extended by copies of its first and last steps.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"moving_average: kernel_size must be a positive odd int, got {kernel_size}"
        )
    half = (kernel_size - 1) // 2
    padded = torch.cat([x[:, :1].expand(-1, half, -1), x, x[:, -1:].expand(-1, half, -1)], dim=1)
    return F.avg_pool1d(padded.transpose(1, 2), kernel_size, stride=1).transpose(1, 2)


class SeriesDecomp(nn.Module):
    """Series decomposition block: ``trend = moving_average(x)``, ``seasonal = x - trend``.

    Shapes:
        ``forward(x [B, L, C]) -> (seasonal [B, L, C], trend [B, L, C])``.
    """

    def __init__(self, kernel_size: int = 25):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"SeriesDecomp: kernel_size must be a positive odd int, got {kernel_size}"
            )
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = moving_average(x, self.kernel_size)
        return x - trend, trend


class SeasonalLayerNorm(nn.Module):
    """LayerNorm over channels minus its mean over time (the reference ``my_Layernorm``).

    Shapes:
        ``[B, L, D] -> [B, L, D]``, zero-mean over ``L`` for every channel.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = self.norm(x)
        return x_hat - x_hat.mean(dim=1, keepdim=True)


class _FeedForward(nn.Module):
    """``Linear(D, d_ff, no bias) -> act -> dropout -> Linear(d_ff, D, no bias) -> dropout`` (the
    reference's two bias-free kernel-1 convolutions)."""

    def __init__(self, d_model: int, d_ff: int, activation: str, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff, bias=False)
        self.act = get_activation(activation)
        self.fc2 = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))


class AutoformerEncoderLayer(nn.Module):
    """``x = seasonal(x + drop(mixer(x)))``; ``x = seasonal(x + FFN(x))``.

    Args:
        d_model: width.
        mixer: the self-mixer (Auto-Correlation in the paper).
        d_ff: feed-forward width.
        moving_avg: decomposition window.
        dropout: dropout on the mixer output and inside/after the feed-forward.
        activation: feed-forward activation.

    Shapes:
        ``[B, L, D] -> [B, L, D]``.
    """

    def __init__(
        self,
        d_model: int,
        mixer: Mixer,
        d_ff: int,
        moving_avg: int = 25,
        dropout: float = 0.1,
        activation: str = "gelu",
    ):
        super().__init__()
        self.mixer = mixer
        self.ffn = _FeedForward(d_model, d_ff, activation, dropout)
        self.decomp1, self.decomp2 = SeriesDecomp(moving_avg), SeriesDecomp(moving_avg)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.decomp1(x + self.dropout(self.mixer(x)[0]))
        x, _ = self.decomp2(x + self.ffn(x))
        return x


class AutoformerDecoderLayer(nn.Module):
    """Decoder layer with progressive decomposition.

    ``x, t1 = decomp(x + drop(self_corr(x)))``; ``x, t2 = decomp(x + drop(cross_corr(x, memory)))``;
    ``x, t3 = decomp(x + FFN(x))``; residual trend ``= Conv1d_circular(t1 + t2 + t3)``.

    Args:
        d_model: width.
        c_out: channels of the residual trend (the number of variables).
        self_correlation: Auto-Correlation over the decoder input.
        cross_correlation: Auto-Correlation with keys/values from the encoder (``attend``).
        d_ff: feed-forward width.
        moving_avg: decomposition window.
        dropout: dropout on each branch and inside the feed-forward.
        activation: feed-forward activation.

    Shapes:
        ``forward(x [B, L, D], memory [B, S, D]) -> (seasonal [B, L, D], trend [B, L, c_out])``.
    """

    def __init__(
        self,
        d_model: int,
        c_out: int,
        self_correlation: AutoCorrelation,
        cross_correlation: AutoCorrelation,
        d_ff: int,
        moving_avg: int = 25,
        dropout: float = 0.1,
        activation: str = "gelu",
    ):
        super().__init__()
        self.self_correlation, self.cross_correlation = self_correlation, cross_correlation
        self.ffn = _FeedForward(d_model, d_ff, activation, dropout)
        self.decomp1, self.decomp2, self.decomp3 = (SeriesDecomp(moving_avg) for _ in range(3))
        self.dropout = Dropout(dropout)
        self.trend_projection = nn.Conv1d(
            d_model, c_out, kernel_size=3, padding=1, padding_mode="circular", bias=False
        )

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, trend1 = self.decomp1(x + self.dropout(self.self_correlation(x)[0]))
        x, trend2 = self.decomp2(x + self.dropout(self.cross_correlation.attend(x, memory, memory)))
        x, trend3 = self.decomp3(x + self.ffn(x))
        trend = (trend1 + trend2 + trend3).transpose(1, 2)
        return x, self.trend_projection(trend).transpose(1, 2)


@register_model("autoformer", domain="timeseries")
class Autoformer(nn.Module):
    """Autoformer forecaster (see the module docstring; defaults: Time-Series-Library's ETTh1 recipe).

    Args:
        seq_len: lookback ``L``.
        pred_len: horizon ``H``.
        label_len: decoder start-token length.
        enc_in: number of variables ``C`` (input and output).
        d_model: model width.
        n_heads: Auto-Correlation heads.
        e_layers: encoder layers.
        d_layers: decoder layers.
        d_ff: feed-forward width.
        moving_avg: decomposition window (odd).
        factor: ``top_k = int(factor * ln L)`` delays (TSL's and the official ETTh1 scripts: 3).
        dropout: dropout on embeddings, branches and feed-forwards (TSL 0.1, official run.py 0.05).
        activation: feed-forward activation.
        embed: time-stamp embedding: ``"timeF"`` (data ``timeenc=1``), ``"fixed"`` or ``"learned"``
            (data ``timeenc=0``).
        freq: data frequency (number of time-stamp channels).
        mixer: encoder self-mixer; ``"autocorrelation"`` is the paper's.
        mixer_kwargs: extra arguments of the encoder mixer.

    Shapes:
        ``forward(x [B, L, C], x_mark [B, L, F] | None, x_dec | None,
        x_mark_dec [B, label_len + H, F] | None) -> [B, H, C]``.
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
        moving_avg: int = 25,
        factor: float = 3.0,
        dropout: float = 0.1,
        activation: str = "gelu",
        embed: str = "timeF",
        freq: str = "h",
        mixer: str = "autocorrelation",
        mixer_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        if not 0 <= label_len <= seq_len:
            raise ValueError(
                f"Autoformer: label_len must be in [0, seq_len={seq_len}], got {label_len}"
            )
        self.seq_len, self.pred_len, self.label_len, self.enc_in = (
            seq_len,
            pred_len,
            label_len,
            enc_in,
        )
        self.decomp = SeriesDecomp(moving_avg)
        embed_kwargs = dict(embed=embed, freq=freq, dropout=dropout, positional=False)
        self.enc_embedding = DataEmbedding(enc_in, d_model, **embed_kwargs)
        self.dec_embedding = DataEmbedding(enc_in, d_model, **embed_kwargs)

        kwargs = dict(mixer_kwargs or {})
        if mixer == "autocorrelation":
            kwargs = {"n_heads": n_heads, "factor": factor, **kwargs}
        elif mixer == "attention":
            kwargs = {"n_heads": n_heads, "dropout": dropout, **kwargs}
        layer_kwargs = dict(
            d_ff=d_ff, moving_avg=moving_avg, dropout=dropout, activation=activation
        )
        self.encoder = nn.ModuleList(
            AutoformerEncoderLayer(d_model, create_mixer(mixer, d_model, **kwargs), **layer_kwargs)
            for _ in range(e_layers)
        )
        self.encoder_norm = SeasonalLayerNorm(d_model)
        self.decoder = nn.ModuleList(
            AutoformerDecoderLayer(
                d_model,
                enc_in,
                AutoCorrelation(d_model, n_heads, factor),
                AutoCorrelation(d_model, n_heads, factor),
                **layer_kwargs,
            )
            for _ in range(d_layers)
        )
        self.decoder_norm = SeasonalLayerNorm(d_model)
        self.projection = nn.Linear(d_model, enc_in)

    def decoder_init(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Seasonal and trend decoder inputs ``[B, label_len + H, C]`` built from the lookback."""
        seasonal, trend = self.decomp(x)
        b, _, c = x.shape
        start = self.seq_len - self.label_len
        mean = x.mean(dim=1, keepdim=True).expand(b, self.pred_len, c)
        seasonal_init = torch.cat([seasonal[:, start:], x.new_zeros(b, self.pred_len, c)], dim=1)
        trend_init = torch.cat([trend[:, start:], mean], dim=1)
        return seasonal_init, trend_init

    def forward(
        self,
        x: torch.Tensor,
        x_mark: torch.Tensor | None = None,
        x_dec: torch.Tensor | None = None,
        x_mark_dec: torch.Tensor | None = None,
    ) -> torch.Tensor:
        where = "Autoformer"
        check_tensor("x", x, ("B", self.seq_len, self.enc_in), where=where)
        b, dec_len = x.shape[0], self.label_len + self.pred_len
        if x_mark is not None:
            check_tensor("x_mark", x_mark, (b, self.seq_len, "F"), where=where)
        if x_dec is not None:
            check_tensor("x_dec", x_dec, (b, dec_len, self.enc_in), where=where)
        if x_mark_dec is not None:
            check_tensor("x_mark_dec", x_mark_dec, (b, dec_len, "F"), where=where)
        seasonal_init, trend = self.decoder_init(x)
        memory = self.enc_embedding(x, x_mark)
        for layer in self.encoder:
            memory = layer(memory)
        memory = self.encoder_norm(memory)
        h = self.dec_embedding(seasonal_init, x_mark_dec)
        for layer in self.decoder:
            h, residual_trend = layer(h, memory)
            trend = trend + residual_trend
        seasonal = self.projection(self.decoder_norm(h))
        return (trend + seasonal)[:, -self.pred_len :]
