"""S-Mamba: bidirectional Mamba over variate tokens.

Wang et al., "Is Mamba Effective for Time Series Forecasting?", 2024, arXiv 2403.11144. The
architecture is iTransformer's (variate tokens, per-window normalisation, linear head) with each
encoder layer's attention replaced by two Mamba blocks, one over the variate tokens and one over
them reversed, summed (``bimamba`` mixer). As in the official ``Mamba_EncDec.EncoderLayer``, the
mixer output is added to the residual without dropout, followed by LayerNorm, the 1x1-conv FFN
with dropout, and LayerNorm; the Mamba blocks use ``d_conv=2, expand=1``.

Like every domain model, it takes another mixer by name (``mixer="retention"``, ...): the layer
around it stays S-Mamba's (no dropout on the mixer branch).
"""

from __future__ import annotations

from typing import Any

from mixerzoo.core.registry import register_model
from mixerzoo.timeseries.models.itransformer import ITransformer

__all__ = ["SMamba"]


@register_model("s_mamba", domain="timeseries")
class SMamba(ITransformer):
    """S-Mamba forecaster (official ETTh1 script: d_model = d_ff = 256, d_state 2, e_layers 2).

    Args:
        seq_len: lookback ``L``.
        pred_len: horizon ``H``.
        d_model: token width.
        d_state: SSM state size of each Mamba block.
        d_conv: Mamba's causal convolution width (official: 2).
        expand: Mamba's inner expansion (official: 1).
        e_layers: encoder layers.
        d_ff: feed-forward width.
        dropout: dropout on the embedding and the feed-forward branch.
        activation: feed-forward activation.
        use_norm: per-window normalisation of each variate.
        use_marks: time-feature channels as extra tokens (official behaviour).
        mixer: registered mixer over the variate tokens (default the paper's ``bimamba``; a
            bidirectional one, as for iTransformer). ``d_state``, ``d_conv`` and ``expand`` are
            passed to ``bimamba`` and ``mamba`` only.
        mixer_kwargs: further mixer arguments (e.g. ``backend``).

    Shapes:
        ``forward(x [B, L, C], x_mark [B, L, F] | None, ...) -> [B, H, C]``.
    """

    def __init__(
        self,
        seq_len: int = 96,
        pred_len: int = 96,
        d_model: int = 512,
        d_state: int = 32,
        d_conv: int = 2,
        expand: int = 1,
        e_layers: int = 2,
        d_ff: int = 2048,
        dropout: float = 0.1,
        activation: str = "gelu",
        use_norm: bool = True,
        use_marks: bool = True,
        mixer: str = "bimamba",
        mixer_kwargs: dict[str, Any] | None = None,
    ):
        kwargs = dict(mixer_kwargs or {})
        if mixer.lower() in ("bimamba", "mamba"):
            kwargs = {"d_state": d_state, "d_conv": d_conv, "expand": expand, **kwargs}
        super().__init__(
            seq_len=seq_len,
            pred_len=pred_len,
            d_model=d_model,
            e_layers=e_layers,
            d_ff=d_ff,
            dropout=dropout,
            activation=activation,
            use_norm=use_norm,
            use_marks=use_marks,
            mixer=mixer,
            mixer_kwargs=kwargs,
            mixer_dropout=0.0,
        )
