"""The residual block shared by every domain.

``Block`` wraps any registered mixer with a norm, a position-wise MLP and residual connections,
in the pre-norm form (GPT-2, ViT, Mamba) or the post-norm form of the original Transformer
(used by iTransformer/Informer/Autoformer, which follow it), so domain models never rebuild this. The small layers it is made of (``MLP``, ``DropPath``,
norms, activations) live in :mod:`mixerzoo.core.layers` and are re-exported here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mixerzoo.core.dropout import Dropout
from mixerzoo.core.layers import MLP, DropPath, get_activation, make_norm
from mixerzoo.core.mixers.base import Mixer
from mixerzoo.core.registry import create_mixer

__all__ = ["Block", "MLP", "DropPath", "make_norm", "get_activation"]


class Block(nn.Module):
    """Residual block: token mixer + position-wise MLP, each with a norm and a residual.

    Pre-norm (``prenorm=True``)::

        x = x + drop_path(dropout(mixer(norm1(x))))
        x = x + drop_path(dropout(mlp(norm2(x))))

    Post-norm (``prenorm=False``, Vaswani et al. 2017 and the Transformer forecasters)::

        x = norm1(x + dropout(mixer(x)))
        x = norm2(x + dropout(mlp(x)))

    Args:
        d_model: width ``D``.
        mixer: a registered mixer name or a ready ``Mixer`` module.
        mixer_kwargs: keyword arguments for ``create_mixer`` when ``mixer`` is a name.
        d_ff: MLP hidden width (default ``4 * d_model``); ``0`` drops the MLP (Mamba-style block).
        activation: MLP activation.
        dropout: dropout on each residual branch and inside the MLP.
        norm: ``"layernorm"``, ``"rmsnorm"`` or ``"none"``.
        prenorm: pre-norm (True) or post-norm (False).
        drop_path: stochastic-depth rate of both branches.
        mixer_dropout: dropout on the mixer branch only (default: ``dropout``); S-Mamba uses 0.

    Shapes:
        ``forward(x [B, T, D], state=None, *, reset=None, mask=None) -> (y [B, T, D], state)``
        (``reset``/``mask`` as in the mixer contract, passed to the mixer; the MLP is
        position-wise, so padding never reaches a real token through it); ``step(x_t [B, D],
        state)`` for causal mixers. The state is the mixer's state.
    """

    def __init__(
        self,
        d_model: int,
        mixer: str | nn.Module = "attention",
        mixer_kwargs: dict[str, Any] | None = None,
        d_ff: int | None = None,
        activation: str = "gelu",
        dropout: float = 0.0,
        norm: str = "layernorm",
        prenorm: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
        mixer_dropout: float | None = None,
    ):
        super().__init__()
        if isinstance(mixer, str):
            mixer = create_mixer(mixer, d_model, **(mixer_kwargs or {}))
        elif mixer_kwargs:
            raise ValueError("Block: mixer_kwargs is only used when mixer is given by name")
        if not isinstance(mixer, Mixer):
            raise TypeError(
                f"Block: mixer must be a registered name or a Mixer, got {type(mixer).__name__}"
            )
        if mixer.d_model != d_model:
            raise ValueError(f"Block: mixer width {mixer.d_model} differs from d_model {d_model}")
        self.d_model = d_model
        self.prenorm = prenorm
        self.mixer = mixer
        self.norm1 = make_norm(norm, d_model, norm_eps)
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.mlp = MLP(d_model, d_ff, activation, dropout) if d_ff > 0 else None
        self.norm2 = make_norm(norm, d_model, norm_eps) if self.mlp is not None else None
        self.dropout = Dropout(dropout)
        self.mixer_dropout = Dropout(dropout if mixer_dropout is None else mixer_dropout)
        self.drop_path = DropPath(drop_path)

    @property
    def causal(self) -> bool:
        return self.mixer.causal

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            return x
        if self.prenorm:
            return x + self.drop_path(self.dropout(self.mlp(self.norm2(x))))
        return self.norm2(x + self.drop_path(self.dropout(self.mlp(x))))

    def forward(
        self,
        x: torch.Tensor,
        state: Any = None,
        *,
        reset: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        if self.prenorm:
            y, state = self.mixer(self.norm1(x), state, reset=reset, mask=mask)
            x = x + self.drop_path(self.mixer_dropout(y))
        else:
            y, state = self.mixer(x, state, reset=reset, mask=mask)
            x = self.norm1(x + self.drop_path(self.mixer_dropout(y)))
        return self._mlp(x), state

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        if self.prenorm:
            y, state = self.mixer.step(self.norm1(x_t), state)
            x_t = x_t + self.mixer_dropout(y)
        else:
            y, state = self.mixer.step(x_t, state)
            x_t = self.norm1(x_t + self.mixer_dropout(y))
        return self._mlp(x_t), state

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        return self.mixer.init_state(batch_size, device=device, dtype=dtype)
