"""Position-wise feed-forward layers."""

from __future__ import annotations

import torch
from torch import nn

from mixerzoo.core.dropout import Dropout
from mixerzoo.core.layers.activations import get_activation

__all__ = ["MLP", "GLU"]


class MLP(nn.Module):
    """Position-wise feed-forward ``Linear(D, d_ff) -> act -> dropout -> Linear(d_ff, D_out)``.

    Args:
        d_model: input width ``D``.
        d_ff: hidden width.
        activation: activation name (see :func:`get_activation`).
        dropout: dropout after the activation.
        d_out: output width (default ``D``).
        bias: biases in both linear layers.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "gelu",
        dropout: float = 0.0,
        d_out: int | None = None,
        bias: bool = True,
    ):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.act = get_activation(activation)
        self.drop = Dropout(dropout)
        self.fc2 = nn.Linear(d_ff, d_out or d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class GLU(nn.Module):
    """Gated feed-forward (Shazeer, 2020, "GLU Variants Improve Transformer", arXiv 2002.05202):
    ``Linear(act(x W_g) * (x W_v))`` — SwiGLU with ``activation="silu"``, GEGLU with ``"gelu"``.

    Args:
        d_model: input width ``D``.
        d_ff: hidden width (of each of the gate and value branches).
        activation: activation of the gate branch.
        dropout: dropout on the gated hidden features.
        d_out: output width (default ``D``).
        bias: biases in the linear layers.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "silu",
        dropout: float = 0.0,
        d_out: int | None = None,
        bias: bool = True,
    ):
        super().__init__()
        self.fc1 = nn.Linear(d_model, 2 * d_ff, bias=bias)
        self.act = get_activation(activation)
        self.drop = Dropout(dropout)
        self.fc2 = nn.Linear(d_ff, d_out or d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(self.drop(self.act(gate) * value))
