"""The mixer contract every sequence mixer in mixerzoo keeps.

A mixer maps ``x [B, T, D] -> y [B, T, D]`` and carries a state so that it can run over a long
sequence in pieces or one token at a time:

- ``forward(x, state=None, *, reset=None, mask=None) -> (y, new_state)``: the parallel (training)
  form. A causal mixer that receives the state returned for the previous piece continues exactly
  where it left off.

  - ``reset [B, T]`` (bool, causal mixers): the state is dropped before the flagged steps, so the
    episodes or utterances packed into one row never see each other: a stream with resets gives
    the outputs (and input gradients) of its pieces run separately, each from ``init_state``.
    (RL streams; fla's ``cu_seqlens``, mamba's ``seq_idx``.)
  - ``mask [B, T]`` (bool, true = real token): padded positions are skipped; they change no output
    at a real position and do not enter the state (the state returned is the one after each row's
    last real token). Outputs at padded positions are unspecified. A reset flagged at a padded
    position still drops the state. Causal and bidirectional mixers alike take it; only operators
    defined on a whole fixed window (``supports_mask = False``: auto-correlation, ProbSparse
    attention) refuse it with a clear error.

- ``step(x_t, state) -> (y_t, new_state)``: one token ``x_t [B, D]`` (causal mixers only).
- ``init_state(batch_size, device=None, dtype=None)``: the state before the first token.
- ``causal``: whether output ``t`` depends only on inputs ``<= t``. Bidirectional and 2-D mixers set
  it to False and have no ``step``.
- ``forward_2d(x [B, H, W, D], state=None) -> (y [B, H, W, D], state)``: the one interface for grids
  (images, time x variate). Mixers with a native 2-D form (``gated_cnn`` with ``conv_dims=2``,
  ``ssm2d``) override it; for any other mixer it runs ``forward`` over the raster (row-major) order
  of the grid. Other traversals (VMamba's cross scan, EfficientVMamba's atrous scan) are in
  :mod:`mixerzoo.core.scans`.

**State.** A state is ``None``, a tensor, or a tuple / dict of tensors whose every leaf has the
batch first, and ``init_state`` is all zeros (``False`` for bool leaves). So one set of helpers
(:mod:`mixerzoo.core.state`: ``reset_state``, ``select_state``, ``state_to``) can zero the rows of
any mixer's state where an episode ends (which equals starting them from ``init_state``), take the
rows of a subset of environments, or move it between devices.

Every mixer's constructor takes ``d_model`` first and has sensible defaults for everything else,
so ``create_mixer(name, d_model=64)`` builds any of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mixerzoo.core.layers.sequence import check_mask, check_reset
from mixerzoo.core.validation import check_tensor

__all__ = ["Mixer"]


#: The optional ``[B, T]`` bool flags of ``forward``'s ``reset=`` and ``mask=``.
Flags = torch.Tensor | None


class Mixer(nn.Module):
    """Base class of all sequence mixers (see the module docstring for the contract).

    Args:
        d_model: width ``D`` of the input and output features.
    """

    causal: bool = True
    #: False for operators defined on a whole fixed window, which refuse ``mask``.
    supports_mask: bool = True

    def __init__(self, d_model: int):
        super().__init__()
        if not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(
                f"{type(self).__name__}: d_model must be a positive int, got {d_model!r}"
            )
        self.d_model = d_model

    def forward(
        self, x: torch.Tensor, state: Any = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Advance one token: ``x_t [B, D] -> y_t [B, D]``. Default: forward on a length-1 piece."""
        if not self.causal:
            raise NotImplementedError(
                f"{type(self).__name__} is not causal (it looks at future tokens), so it has no "
                f"step(); run forward() on the whole sequence instead"
            )
        self.check_step_input(x_t)
        y, state = self.forward(x_t.unsqueeze(1), state)
        return y.squeeze(1), state

    def forward_2d(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Mix a grid ``x [B, H, W, D]`` (default: ``forward`` over the row-major order)."""
        check_tensor(
            "x", x, ("B", "H", "W", self.d_model), where=f"{type(self).__name__}.forward_2d"
        )
        b, h, w, d = x.shape
        y, state = self.forward(x.reshape(b, h * w, d), state)
        return y.view(b, h, w, d), state

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        """The state before the first token (``None`` for stateless mixers)."""
        return None

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a sequence input ``x [B, T, d_model]`` with a clear error."""
        where = f"{type(self).__name__}.forward"
        check_tensor("x", x, ("B", "T", self.d_model), where=where)
        weight = next((p for p in self.parameters() if p.is_floating_point()), None)
        # Under autocast the ops choose the dtype themselves; otherwise a mismatch fails deep
        # inside a matmul with a message that names neither the mixer nor the fix.
        if (
            weight is not None
            and x.dtype != weight.dtype
            and not torch.is_autocast_enabled(x.device.type)
        ):
            raise TypeError(
                f"{where}: x is {x.dtype} but the mixer's weights are {weight.dtype}; cast the "
                f"input (x.to({weight.dtype})) or the model (model.to({x.dtype}), e.g. "
                f".double() for float64)"
            )
        return x

    def check_args(self, x: torch.Tensor, reset: Any, mask: Any) -> tuple[Flags, Flags]:
        """``check_input``, ``check_reset`` and ``check_mask`` at once (the start of ``forward``);
        returns the normalised ``(reset, mask)``."""
        self.check_input(x)
        return self.check_reset(reset, x), self.check_mask(mask, x)

    def check_step_input(self, x_t: torch.Tensor) -> torch.Tensor:
        """Validate a single-token input ``x_t [B, d_model]`` with a clear error."""
        return check_tensor("x_t", x_t, ("B", self.d_model), where=f"{type(self).__name__}.step")

    def check_reset(self, reset: Any, x: torch.Tensor) -> torch.Tensor | None:
        """Validate ``reset [B, T]`` for ``x``; ``None`` when absent or nothing is flagged.

        Bidirectional mixers see the whole sequence at once and have no state to drop: they
        refuse a reset (pack separate sequences as separate rows, or pad them with ``mask``).
        """
        where = f"{type(self).__name__}.forward"
        if reset is not None and not self.causal:
            raise ValueError(
                f"{where}: reset is for causal mixers (it drops the carried state); "
                f"{type(self).__name__} sees the whole sequence — run separate sequences as "
                f"separate rows, padded with mask="
            )
        return check_reset(reset, x, where)

    def check_mask(self, mask: Any, x: torch.Tensor) -> torch.Tensor | None:
        """Validate ``mask [B, T]`` for ``x``; ``None`` when absent or all true."""
        where = f"{type(self).__name__}.forward"
        if mask is not None and not self.supports_mask:
            raise ValueError(
                f"{where}: {type(self).__name__} is defined on a whole fixed window and takes no "
                f"padding mask; give it equal-length sequences (crop or window the data instead)"
            )
        return check_mask(mask, x, where)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, causal={self.causal}"
