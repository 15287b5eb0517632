"""LSTM and GRU as mixers: ``torch.nn.LSTM`` / ``torch.nn.GRU`` behind the mixer contract.

LSTM: "Long Short-Term Memory" (Hochreiter & Schmidhuber, 1997) with the forget gate of Gers et
al. (2000); GRU: "Learning Phrase Representations using RNN Encoder-Decoder for Statistical
Machine Translation" (Cho et al., 2014, arXiv 1406.1078). Both use PyTorch's cells (fused cuDNN
kernels on GPUs). The hidden size is ``d_model`` by default and there is no output projection
unless the recurrent output width differs from ``d_model`` (a larger/smaller ``hidden_size`` or
``bidirectional=True``) or one is asked for.

Unidirectional mixers are causal: the state is the final hidden state (``(h, c)`` for the LSTM,
``h`` for the GRU, each ``[B, num_layers, hidden_size]``, batch first as the mixer contract wants;
PyTorch's own layout is ``[num_layers, B, hidden_size]``), so ``forward`` over pieces and ``step``
token by token continue exactly. ``bidirectional=True`` gives a non-causal mixer without state.

Resets and padding masks use PyTorch's packed sequences: every run of real tokens between resets
becomes one sequence of a packed batch (the first run of a row starts from the row's carried state,
the others from zeros), so one call of the fused recurrent kernel processes all episodes at once
and returns each one's final state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mixerzoo.core.layers.sequence import Compaction, segment_ids
from mixerzoo.core.mixers.base import Flags, Mixer
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

    def forward(
        self, x: Tensor, state: Any = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, Any]:
        reset, mask = self.check_args(x, reset, mask)
        if state is not None:
            if not self.causal:
                raise ValueError(
                    f"{type(self).__name__}(bidirectional=True) takes no state; pass state=None"
                )
            self._check_state(state, x.shape[0])
        if reset is None and mask is None:
            y, new_state = self.rnn(x, _layers_first(state))
            new_state = _batch_first(new_state)
        else:
            y, new_state = self._packed(x, state, reset, mask)
        if self.out_proj is not None:
            y = self.out_proj(y)
        return y, (new_state if self.causal else None)

    def _packed(self, x, state, reset, mask):
        """The recurrence over every run of real tokens between resets, as one packed batch."""
        b, t, _ = x.shape
        seg = segment_ids(reset, (b, t), x.device)
        compaction = Compaction(mask) if mask is not None else None
        if compaction is not None:
            x, seg = compaction.compact(x), compaction.compact(seg)
            valid = compaction.valid
        else:
            valid = torch.ones(b, t, dtype=torch.bool, device=x.device)
        rows, steps = valid.nonzero(as_tuple=True)  # real positions, row-major
        row_seg = seg[rows, steps]
        starts = torch.ones_like(rows, dtype=torch.bool)
        starts[1:] = (rows[1:] != rows[:-1]) | (row_seg[1:] != row_seg[:-1])
        run = starts.long().cumsum(0) - 1  # run index of every real position
        first = starts.nonzero().flatten()
        lengths = torch.bincount(run)
        offset = torch.arange(len(rows), device=x.device) - first[run]
        runs = x.new_zeros(len(first), int(lengths.max()), x.shape[-1])
        runs[run, offset] = x[rows, steps]
        run_row, run_seg = rows[first], row_seg[first]
        # Runs in segment 0 continue the carried state; the others start from zeros.
        carried = self.init_state(b, x.device, x.dtype) if state is None else state
        init = _map(lambda h: h[run_row] * (run_seg == 0).view(-1, 1, 1).to(h.dtype), carried)
        packed = nn.utils.rnn.pack_padded_sequence(
            runs, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, final = self.rnn(packed, _layers_first(init) if self.causal else None)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=runs.shape[1])
        y = x.new_zeros(b, t, out.shape[-1])
        y[rows, steps] = out[run, offset]
        if compaction is not None:
            y = compaction.expand(y)
        if not self.causal:
            return y, None
        # A row's state: its last run's final state if that run is in the row's last segment
        # (a reset flagged after it, at padding, drops it); a row without real tokens keeps its
        # carried state unless reset.
        last_seg = seg.new_zeros(b) if reset is None else reset.long().sum(1)
        final = _batch_first(final)
        is_last = torch.ones_like(run_row, dtype=torch.bool)
        is_last[:-1] = run_row[1:] != run_row[:-1]
        keep = is_last & (run_seg == last_seg[run_row])

        def row_state(carry: torch.Tensor, run_final: torch.Tensor) -> torch.Tensor:
            out_state = carry * (last_seg == 0).view(-1, 1, 1).to(carry.dtype)
            out_state = out_state.clone()
            out_state[run_row[keep]] = run_final[keep].to(out_state.dtype)
            return out_state

        if isinstance(carried, tuple):
            return y, tuple(row_state(c, f) for c, f in zip(carried, final))
        return y, row_state(carried, final)

    def _zeros(self, batch_size: int, device, dtype) -> torch.Tensor:
        return torch.zeros(
            batch_size, self.num_layers, self.hidden_size, device=device, dtype=dtype
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
        ``[B, num_layers, hidden_size]``.
    """

    _rnn_cls = nn.LSTM

    def _check_state(self, state: Any, batch_size: int) -> None:
        if not (isinstance(state, tuple) and len(state) == 2):
            raise TypeError("LSTM.forward: state must be a tuple (h, c)")
        shape = (batch_size, self.num_layers, self.hidden_size)
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
        ``forward(x [B, T, D], state=h) -> (y [B, T, D], h)`` with ``h [B, num_layers, hidden_size]``.
    """

    _rnn_cls = nn.GRU

    def _check_state(self, state: Any, batch_size: int) -> None:
        shape = (batch_size, self.num_layers, self.hidden_size)
        check_tensor("state", state, shape, where="GRU.forward")

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor | None:
        if not self.causal:
            return None
        return self._zeros(batch_size, device, dtype)


def _map(fn, state):
    if state is None:
        return None
    return tuple(fn(h) for h in state) if isinstance(state, tuple) else fn(state)


def _layers_first(state):
    """Batch-first mixer state -> PyTorch's ``[num_layers, B, H]`` (contiguous for cuDNN)."""
    return _map(lambda h: h.transpose(0, 1).contiguous(), state)


def _batch_first(state):
    return _map(lambda h: h.transpose(0, 1), state)
