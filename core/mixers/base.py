"""The mixer contract every sequence mixer in mixerzoo keeps.

A mixer maps ``x [B, T, D] -> y [B, T, D]`` and carries a state so that it can run over a long
sequence in pieces or one token at a time:

- ``forward(x, state=None) -> (y, new_state)``: the parallel (training) form. A causal mixer that
  receives the state returned for the previous piece continues exactly where it left off.
- ``step(x_t, state) -> (y_t, new_state)``: one token ``x_t [B, D]`` (causal mixers only).
- ``init_state(batch_size, device=None, dtype=None)``: the state before the first token.
- ``causal``: whether output ``t`` depends only on inputs ``<= t``. Bidirectional and 2-D mixers set
  it to False and have no ``step``.

Every mixer's constructor takes ``d_model`` first and has sensible defaults for everything else,
so ``create_mixer(name, d_model=64)`` builds any of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mixerzoo.core.validation import check_tensor

__all__ = ["Mixer"]


class Mixer(nn.Module):
    """Base class of all sequence mixers (see the module docstring for the contract).

    Args:
        d_model: width ``D`` of the input and output features.
    """

    causal: bool = True

    def __init__(self, d_model: int):
        super().__init__()
        if not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(
                f"{type(self).__name__}: d_model must be a positive int, got {d_model!r}"
            )
        self.d_model = d_model

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
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

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        """The state before the first token (``None`` for stateless mixers)."""
        return None

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a sequence input ``x [B, T, d_model]`` with a clear error."""
        return check_tensor(
            "x", x, ("B", "T", self.d_model), where=f"{type(self).__name__}.forward"
        )

    def check_step_input(self, x_t: torch.Tensor) -> torch.Tensor:
        """Validate a single-token input ``x_t [B, d_model]`` with a clear error."""
        return check_tensor("x_t", x_t, ("B", self.d_model), where=f"{type(self).__name__}.step")

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, causal={self.causal}"
