"""A stack of core residual blocks, the sequence backbone of the RL agents and world models.

Both RL papers here make one comparison: the same agent or world model with an SSM, an RNN or a
Transformer inside. :class:`MixerStack` makes that a config line: ``mixer`` is any causal mixer of
the core registry (``"s5"``, ``"s4d"``, ``"gru"``, ``"lstm"``, ``"attention"``, ...), wrapped in
:class:`mixerzoo.core.Block` (norm, optional MLP, residual), and the stack keeps the mixer
contract: ``forward(x, state, reset=..., mask=...)`` for training on whole streams (the resettable
parallel scan for S5), ``step`` for acting or imagining one step at a time, ``init_state``.

``mixer="none"`` gives an empty stack (identity, no state): the memoryless baseline.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mixerzoo.core import Block, create_mixer
from mixerzoo.core.state import reset_state

__all__ = ["MixerStack", "ContextTooLongError"]


class ContextTooLongError(ValueError):
    """An episode is longer than the context the backbone was configured for."""


class MixerStack(nn.Module):
    """``n_layers`` residual blocks of one causal mixer.

    Args:
        d_model: width ``D``.
        mixer: registered causal mixer name, or ``"none"`` for no backbone (identity).
        n_layers: number of blocks.
        mixer_kwargs: keyword arguments of the mixer (e.g. ``{"d_state": 256}`` for S5).
        d_ff: MLP width inside each block (``0``: no MLP, as popjaxrl's S5 layers).
        norm: block norm (``"layernorm"``, ``"rmsnorm"``, ``"none"``).
        prenorm: pre-norm (True) or post-norm blocks.
        dropout: block dropout.
        context_len: for attention backbones, how many past keys the carried cache keeps when
            acting step by step (the KV cache grows with the stream otherwise). Every episode must
            fit in it: with resets, a key of an earlier episode is never attended to, so trimming
            the cache to ``context_len`` keys changes nothing exactly when no episode is longer
            (:meth:`check_episode_length` raises otherwise). ``None``: no limit.

    Shapes:
        ``forward(x [B, T, D], state=None, *, reset=None, mask=None) -> (y [B, T, D], state)``;
        ``step(x_t [B, D], state, reset_t=None) -> (y_t [B, D], state)``; ``state`` is a list with
        one mixer state per block (``None`` for the empty stack).
    """

    def __init__(
        self,
        d_model: int,
        mixer: str = "s5",
        n_layers: int = 1,
        mixer_kwargs: dict[str, Any] | None = None,
        d_ff: int = 0,
        norm: str = "none",
        prenorm: bool = True,
        dropout: float = 0.0,
        context_len: int | None = None,
    ):
        super().__init__()
        self.d_model = d_model
        self.mixer_name = mixer
        self.context_len = context_len
        if context_len is not None and context_len < 1:
            raise ValueError(f"MixerStack: context_len must be >= 1 or None, got {context_len}")
        if mixer == "none":
            self.blocks = nn.ModuleList()
            return
        if n_layers < 1:
            raise ValueError(f"MixerStack: n_layers must be >= 1 (or mixer='none'), got {n_layers}")
        blocks = []
        for _ in range(n_layers):
            module = create_mixer(mixer, d_model, **(mixer_kwargs or {}))
            if not module.causal:
                raise ValueError(
                    f"MixerStack: mixer {mixer!r} is not causal with {mixer_kwargs or {}}; an agent "
                    f"or world model must not see the future (for attention pass "
                    f"mixer_kwargs={{'causal': True}})"
                )
            blocks.append(
                Block(d_model, module, d_ff=d_ff, norm=norm, prenorm=prenorm, dropout=dropout)
            )
        self.blocks = nn.ModuleList(blocks)

    @property
    def stateful(self) -> bool:
        return len(self.blocks) > 0

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> list[Any] | None:
        """The state before the first step (all zeros); ``None`` for the empty stack."""
        if not self.stateful:
            return None
        return [b.init_state(batch_size, device=device, dtype=dtype) for b in self.blocks]

    def forward(
        self,
        x: torch.Tensor,
        state: list[Any] | None = None,
        *,
        reset: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[Any] | None]:
        if not self.stateful:
            return x, None
        if state is None:
            state = [None] * len(self.blocks)
        new_state = []
        for block, s in zip(self.blocks, state):
            x, s = block(x, s, reset=reset, mask=mask)
            new_state.append(self._trim(s))
        return x, new_state

    def step(
        self, x_t: torch.Tensor, state: list[Any] | None, reset_t: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[Any] | None]:
        """One step for every row; rows with ``reset_t [B]`` true start from ``init_state``."""
        if not self.stateful:
            return x_t, None
        if state is None:
            state = self.init_state(x_t.shape[0], x_t.device, x_t.dtype)
        if reset_t is not None:
            state = reset_state(state, reset_t)
        new_state = []
        for block, s in zip(self.blocks, state):
            x_t, s = block.step(x_t, s)
            new_state.append(self._trim(s))
        return x_t, new_state

    def _trim(self, state: Any) -> Any:
        """Keep the last ``context_len`` keys of an attention cache (see the class docstring)."""
        if self.context_len is None or not isinstance(state, dict) or "k" not in state:
            return state
        if set(state) != {"k", "v", "valid"}:
            raise TypeError(
                f"MixerStack: context_len expects the attention cache {{'k', 'v', 'valid'}}, got "
                f"keys {sorted(state)}"
            )
        if state["valid"].shape[1] <= self.context_len:
            return state
        keep = self.context_len
        return {
            "k": state["k"][:, :, -keep:],
            "v": state["v"][:, :, -keep:],
            "valid": state["valid"][:, -keep:],
        }

    def check_episode_length(self, length: int, where: str) -> None:
        """Raise :class:`ContextTooLongError` if an episode of ``length`` steps exceeds
        ``context_len``."""
        if self.context_len is not None and length > self.context_len:
            raise ContextTooLongError(
                f"{where}: an episode of {length} steps is longer than the configured context "
                f"({self.context_len} steps) of the {self.mixer_name} backbone, which would "
                f"silently forget its start; raise context_len to at least {length} or limit the "
                f"episodes (max_episode_steps)"
            )
