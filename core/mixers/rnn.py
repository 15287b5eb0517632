"""LSTM and GRU as mixers: ``torch.nn.LSTM`` / ``torch.nn.GRU`` behind the mixer contract.

LSTM: "Long Short-Term Memory" (Hochreiter & Schmidhuber, 1997) with the forget gate of Gers et
al. (2000); GRU: "Learning Phrase Representations using RNN Encoder-Decoder for Statistical
Machine Translation" (Cho et al., 2014, arXiv 1406.1078). Both use PyTorch's cells (fused cuDNN
kernels on GPUs). The hidden size is ``d_model`` by default and there is no output projection
unless the recurrent output width differs from ``d_model`` (a larger/smaller ``hidden_size`` or
``bidirectional=True``) or one is asked for.

Unidirectional mixers are causal: the state is the final hidden state (``(h, c)`` for the LSTM,
``h`` for the GRU, each ``[num_layers, B, hidden_size]``), so ``forward`` over pieces and ``step``
token by token continue exactly. ``bidirectional=True`` gives a non-causal mixer without state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mixerzoo.core.mixers.base import Mixer
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.validation import check_tensor

__all__ = ["LSTM", "GRU"]


class _RecurrentMixer(Mixer):
    """Shared wrapper of a ``torch.nn`` recurrent layer (see ``LSTM`` and ``GRU``)."""

    _rnn_cls: type[nn.RNNBase]

    def __init__(
        self,
        d_model: int,
        hidden_size: int | None = None,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        out_proj: bool | None = None,
        bias: bool = True,
    ):
        super().__init__(d_model)
        name = type(self).__name__
        hidden = hidden_size or d_model
        if num_layers < 1:
            raise ValueError(f"{name}: num_layers must be >= 1, got {num_layers}")
        if dropout and num_layers == 1:
            raise ValueError(
                f"{name}: dropout acts between stacked layers; it needs num_layers > 1"
            )
        self.hidden_size = hidden
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.causal = not bidirectional
        self.rnn = self._rnn_cls(
            d_model,
            hidden,
            num_layers=num_layers,
            bias=bias,
            batch_first=True,
            dropout=dropout,
            bidirectional=bidirectional,
        )
        out_width = hidden * (2 if bidirectional else 1)
        if out_proj is None:
            out_proj = out_width != d_model
        if not out_proj and out_width != d_model:
            raise ValueError(
                f"{name}: the recurrent output has {out_width} features but d_model is {d_model}; "
                f"use out_proj=True (or None) to project it back"
            )
        self.out_proj = nn.Linear(out_width, d_model, bias=bias) if out_proj else None

    def _check_state(self, state: Any, batch_size: int) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        self.check_input(x)
        if state is not None:
            if not self.causal:
                raise ValueError(
                    f"{type(self).__name__}(bidirectional=True) takes no state; pass state=None"
                )
            self._check_state(state, x.shape[0])
        y, new_state = self.rnn(x, state)
        if self.out_proj is not None:
            y = self.out_proj(y)
        return y, (new_state if self.causal else None)

    def _zeros(self, batch_size: int, device, dtype) -> torch.Tensor:
        return torch.zeros(
            self.num_layers, batch_size, self.hidden_size, device=device, dtype=dtype
        )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}"
        )


@register_mixer("lstm")
class LSTM(_RecurrentMixer):
    """LSTM mixer.

    Args:
        d_model: model width ``D``.
        hidden_size: LSTM hidden size (default ``D``).
        num_layers: stacked LSTM layers.
        dropout: dropout between stacked layers (needs ``num_layers > 1``).
        bidirectional: run both directions (non-causal; output projected back to ``D``).
        out_proj: linear output projection; ``None`` adds one only when the widths differ.
        bias: biases in the cells and the projection.

    Shapes:
        ``forward(x [B, T, D], state=(h, c)) -> (y [B, T, D], (h, c))`` with ``h``, ``c``
        ``[num_layers, B, hidden_size]``.
    """

    _rnn_cls = nn.LSTM

    def _check_state(self, state: Any, batch_size: int) -> None:
        if not (isinstance(state, tuple) and len(state) == 2):
            raise TypeError("LSTM.forward: state must be a tuple (h, c)")
        shape = (self.num_layers, batch_size, self.hidden_size)
        for name, value in zip(("h", "c"), state):
            check_tensor(f"state {name}", value, shape, where="LSTM.forward")

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.causal:
            return None
        return self._zeros(batch_size, device, dtype), self._zeros(batch_size, device, dtype)


@register_mixer("gru")
class GRU(_RecurrentMixer):
    """GRU mixer.

    Args:
        d_model: model width ``D``.
        hidden_size: GRU hidden size (default ``D``).
        num_layers: stacked GRU layers.
        dropout: dropout between stacked layers (needs ``num_layers > 1``).
        bidirectional: run both directions (non-causal; output projected back to ``D``).
        out_proj: linear output projection; ``None`` adds one only when the widths differ.
        bias: biases in the cells and the projection.

    Shapes:
        ``forward(x [B, T, D], state=h) -> (y [B, T, D], h)`` with ``h [num_layers, B, hidden_size]``.
    """

    _rnn_cls = nn.GRU

    def _check_state(self, state: Any, batch_size: int) -> None:
        shape = (self.num_layers, batch_size, self.hidden_size)
        check_tensor("state", state, shape, where="GRU.forward")

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor | None:
        if not self.causal:
            return None
        return self._zeros(batch_size, device, dtype)
