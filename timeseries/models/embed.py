"""Input embeddings of the Transformer forecasters (Informer, Autoformer), as in
Time-Series-Library's ``layers/Embed.py``: circular-convolution value tokens, the sinusoidal
position code, and time-stamp embeddings ("timeF" linear map of the scaled calendar features, or
"fixed" / "learned" tables of the integer calendar fields). See ``DataEmbedding``."""

from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mixerzoo.core.dropout import Dropout
from mixerzoo.core.validation import check_tensor
from mixerzoo.timeseries.data import time_features

__all__ = ["DataEmbedding", "TokenEmbedding", "TemporalEmbedding", "sinusoid_table", "n_time_marks"]

EMBEDS = ("timeF", "fixed", "learned")


def sinusoid_table(n_positions: int, d_model: int) -> torch.Tensor:
    """Transformer sinusoid code ``[n_positions, d_model]``: ``sin`` on even, ``cos`` on odd columns.

    Column ``2i`` is ``sin(p / 10000^(2i / d_model))`` and column ``2i + 1`` the matching cosine
    (Vaswani et al. 2017), as Informer's ``PositionalEmbedding`` and ``FixedEmbedding``.
    """
    position = torch.arange(n_positions, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
    return table


def n_time_marks(freq: str, timeenc: int) -> int:
    """Number of time-stamp channels ``F`` that ``ForecastDataModule`` makes for ``freq``/``timeenc``.

    Asked of ``time_features`` itself so that model and data cannot disagree (``"h"``: 4 timeF
    features; integer fields: 4, or 5 with the quarter-hour for minute/second data).
    """
    return time_features(pd.DatetimeIndex(["2000-01-01"]), freq, timeenc).shape[1]


class TokenEmbedding(nn.Module):
    """Value embedding: circular ``Conv1d(c_in, d_model, 3)`` over time.

    Kaiming-normal initialisation (fan-in, leaky-ReLU gain) as the reference code.

    Shapes:
        ``[B, L, c_in] -> [B, L, d_model]``.
    """

    def __init__(self, c_in: int, d_model: int, bias: bool = False):
        super().__init__()
        self.conv = nn.Conv1d(
            c_in, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=bias
        )
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class TemporalEmbedding(nn.Module):
    """Time-stamp embedding.

    Args:
        d_model: output width.
        embed: ``"timeF"`` (``Linear(F, d_model)`` of the scaled calendar features, data
            ``timeenc=1``), ``"fixed"`` (sum of frozen sinusoid tables indexed by the integer
            month, day, weekday, hour and quarter-hour fields, data ``timeenc=0``) or ``"learned"``
            (the same with trained tables).
        freq: data frequency, fixing the number of mark channels.
        bias: bias of the timeF linear map.

    Shapes:
        ``[B, L, F] -> [B, L, d_model]``.
    """

    # Table sizes of the integer fields, in the column order of ``time_features(timeenc=0)``.
    FIELDS = (("month", 13), ("day", 32), ("weekday", 7), ("hour", 24), ("minute", 4))

    def __init__(self, d_model: int, embed: str = "timeF", freq: str = "h", bias: bool = False):
        super().__init__()
        if embed not in EMBEDS:
            raise ValueError(f"TemporalEmbedding: embed must be one of {EMBEDS}, got {embed!r}")
        self.embed = embed
        self.n_marks = n_time_marks(freq, 1 if embed == "timeF" else 0)
        if embed == "timeF":
            self.linear = nn.Linear(self.n_marks, d_model, bias=bias)
            return
        fields = self.FIELDS[: self.n_marks]
        if embed == "fixed":
            for name, size in fields:
                self.register_buffer(
                    f"{name}_table", sinusoid_table(size, d_model), persistent=False
                )
        else:
            self.tables = nn.ModuleDict(
                {name: nn.Embedding(size, d_model) for name, size in fields}
            )
        self.fields = fields

    def forward(self, x_mark: torch.Tensor) -> torch.Tensor:
        check_tensor("x_mark", x_mark, ("B", "L", self.n_marks), where="TemporalEmbedding")
        if self.embed == "timeF":
            return self.linear(x_mark)
        if not torch.equal(x_mark, x_mark.round()) or bool((x_mark < 0).any()):
            raise ValueError(
                f"TemporalEmbedding(embed={self.embed!r}) needs the integer calendar fields "
                f"(data timeenc=0), got non-integer marks; use embed='timeF' with timeenc=1"
            )
        index = x_mark.long()
        out = 0.0
        for i, (name, size) in enumerate(self.fields):
            if bool((index[..., i] >= size).any()):
                raise ValueError(f"TemporalEmbedding: {name} field out of range [0, {size})")
            table = (
                getattr(self, f"{name}_table")
                if self.embed == "fixed"
                else self.tables[name].weight
            )
            out = out + F.embedding(index[..., i], table)
        return out


class DataEmbedding(nn.Module):
    """Token + (optional) position + time-stamp embedding, then dropout.

    With ``positional=False`` it is Autoformer's ``DataEmbedding_wo_pos``. When ``x_mark`` is
    ``None`` the time-stamp term is left out, as in the reference code.

    Args:
        c_in: input variables ``C``.
        d_model: output width.
        embed: ``"timeF"``, ``"fixed"`` or ``"learned"`` (see ``TemporalEmbedding``).
        freq: data frequency.
        dropout: dropout on the sum.
        positional: add the sinusoidal position code.
        token_bias: bias of the token convolution.
        time_bias: bias of the timeF linear map.

    Shapes:
        ``forward(x [B, L, C], x_mark [B, L, F] | None) -> [B, L, d_model]``.
    """

    def __init__(
        self,
        c_in: int,
        d_model: int,
        embed: str = "timeF",
        freq: str = "h",
        dropout: float = 0.1,
        positional: bool = True,
        token_bias: bool = False,
        time_bias: bool = False,
    ):
        super().__init__()
        self.d_model, self.positional = d_model, positional
        self.value_embedding = TokenEmbedding(c_in, d_model, bias=token_bias)
        self.temporal_embedding = TemporalEmbedding(d_model, embed, freq, bias=time_bias)
        self.dropout = Dropout(dropout)
        # Position code cache, grown on demand (a buffer so that it follows the module's device).
        self.register_buffer("position_code", torch.zeros(0, d_model), persistent=False)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        out = self.value_embedding(x)
        if self.positional:
            if self.position_code.shape[0] < x.shape[1]:
                self.position_code = sinusoid_table(x.shape[1], self.d_model).to(out.device)
            out = out + self.position_code[: x.shape[1]].to(out.dtype)
        if x_mark is not None:
            out = out + self.temporal_embedding(x_mark)
        return self.dropout(out)
