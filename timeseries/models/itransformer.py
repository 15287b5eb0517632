"""iTransformer: attention over variate tokens.

Liu et al., "iTransformer: Inverted Transformers Are Effective for Time Series Forecasting",
ICLR 2024, arXiv 2310.06625. Each variate's whole lookback window is embedded as one token
(``Linear(L, d_model)``); the Transformer mixes the ``C`` variate tokens (plus one token per
time-feature channel, as in the official ``DataEmbedding_inverted``), and a linear head maps each
token to the ``H`` future values. Optional per-window normalisation (``use_norm``, non-stationary
style) subtracts each variate's lookback mean and divides by its std, and undoes it at the output.

The encoder layers are post-norm, as in the official code (``EncoderLayer``: attention + residual
+ LayerNorm, 1x1-conv FFN + residual + LayerNorm, then a final LayerNorm). They are
``mixerzoo.core.Block(prenorm=False)``; any registered mixer can replace attention over the variate
tokens (``mixer="mamba"``, ...), attention being the paper's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mixerzoo.core.blocks import Block
from mixerzoo.core.dropout import Dropout
from mixerzoo.core.registry import register_model
from mixerzoo.core.validation import check_tensor
from mixerzoo.timeseries.models.window_norm import denormalize_window, normalize_window

__all__ = ["ITransformer"]


@register_model("itransformer", domain="timeseries")
class ITransformer(nn.Module):
    """iTransformer forecaster (official defaults; the ETTh1 script uses d_model = d_ff = 256).

    Args:
        seq_len: lookback length ``L``.
        pred_len: horizon ``H``.
        d_model: token width.
        n_heads: attention heads (used when ``mixer="attention"``).
        e_layers: number of encoder blocks.
        d_ff: feed-forward width.
        dropout: dropout on the embedding, attention weights and residual branches.
        activation: feed-forward activation.
        use_norm: per-window normalisation of each variate.
        use_marks: add the time-feature channels as extra tokens (official behaviour).
        mixer: registered mixer over variate tokens (must be able to see all tokens: a bidirectional
            mixer; a causal one would impose an arbitrary variate order).
        mixer_kwargs: extra mixer arguments (defaults for attention: ``n_heads``, ``dropout``).
        mixer_dropout: dropout on the mixer's residual branch (default: ``dropout``).

    Shapes:
        ``forward(x [B, L, C], x_mark [B, L, F] | None, ...) -> [B, H, C]``.
    """

    def __init__(
        self,
        seq_len: int = 96,
        pred_len: int = 96,
        d_model: int = 512,
        n_heads: int = 8,
        e_layers: int = 2,
        d_ff: int = 2048,
        dropout: float = 0.1,
        activation: str = "gelu",
        use_norm: bool = True,
        use_marks: bool = True,
        mixer: str = "attention",
        mixer_kwargs: dict[str, Any] | None = None,
        mixer_dropout: float | None = None,
    ):
        super().__init__()
        self.seq_len, self.pred_len, self.use_norm, self.use_marks = (
            seq_len,
            pred_len,
            use_norm,
            use_marks,
        )
        kwargs = dict(mixer_kwargs or {})
        if mixer == "attention":
            kwargs = {"n_heads": n_heads, "dropout": dropout, **kwargs}
        self.embedding = nn.Linear(seq_len, d_model)
        self.embed_dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(
                d_model,
                mixer,
                kwargs,
                d_ff=d_ff,
                activation=activation,
                dropout=dropout,
                prenorm=False,
                mixer_dropout=mixer_dropout,
            )
            for _ in range(e_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.projector = nn.Linear(d_model, pred_len)

    def forward(
        self,
        x: torch.Tensor,
        x_mark: torch.Tensor | None = None,
        x_dec: torch.Tensor | None = None,
        x_mark_dec: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_tensor("x", x, ("B", self.seq_len, "C"), where="ITransformer")
        n_vars = x.shape[-1]
        if self.use_norm:
            x, stats = normalize_window(x)
        tokens = x.transpose(1, 2)  # [B, C, L]
        if self.use_marks and x_mark is not None:
            check_tensor("x_mark", x_mark, (x.shape[0], self.seq_len, "F"), where="ITransformer")
            tokens = torch.cat([tokens, x_mark.transpose(1, 2)], dim=1)
        h = self.embed_dropout(self.embedding(tokens))
        for block in self.blocks:
            h, _ = block(h)
        out = self.projector(self.norm(h)).transpose(1, 2)[:, :, :n_vars]  # [B, H, C]
        if self.use_norm:
            out = denormalize_window(out, stats)
        return out
