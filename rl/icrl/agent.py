"""The in-context RL actor-critic: dense encoder, a stack of core mixers, policy and value heads.

Network shape of "Structured State Space Models for In-Context Reinforcement Learning" (Lu et al.,
2023, arXiv 2303.03982) as in its official JAX code (popjaxrl, ``ActorCriticS5``):

- encoder: ``Dense(128) -> leaky_relu -> Dense(d_model = 256) -> leaky_relu`` (orthogonal init,
  gain ``sqrt(2)``, zero bias);
- backbone: ``n_layers = 4`` S5 layers of width 256 with a state of 256 (128 stored modes, conjugate
  symmetry), ``full_glu`` output and a residual, no norms (popjaxrl's run script sets
  ``S5_DO_NORM = False``): here a :class:`~mixerzoo.rl.backbone.MixerStack` of core ``Block``\\ s with
  ``norm="none"`` and no MLP. The stream's episode starts reset the state (``reset``);
- actor: ``Dense(128) -> leaky_relu -> Dense(128) -> leaky_relu -> Dense(n_actions)`` (gains 2, 2,
  0.01), categorical; critic: the same shape to one value (gains 2, 2, 1). Continuous actions: a
  Gaussian with a state-independent learned log standard deviation (initialised at 0).

Any causal mixer replaces S5 by name (``"gru"`` — the paper's baseline, ``"lstm"``,
``"attention"``); ``mixer="none"`` is the memoryless MLP baseline (encoder and heads only).

Deviations: popjaxrl's GRU baseline is one bare GRU cell; here every backbone sits in a residual
block (``x + mixer(x)``), so that the config switch changes only the mixer. The core S5 draws ``C``
from a truncated normal and clips ``Re(Lambda) <= -1e-4`` (the S5 paper's choices); popjaxrl
uses LeCun-normal ``C`` and no clipping.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Categorical, Normal

from mixerzoo.rl.backbone import MixerStack
from mixerzoo.rl.spaces import ActionSpec

__all__ = ["ActorCritic", "PolicyOutput", "orthogonal_linear"]


def orthogonal_linear(d_in: int, d_out: int, gain: float) -> nn.Linear:
    """``nn.Linear`` with orthogonal weights of the given gain and zero bias (popjaxrl's init)."""
    layer = nn.Linear(d_in, d_out)
    nn.init.orthogonal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


class PolicyOutput:
    """The policy distribution and value estimate for a batch of steps.

    Attributes:
        value: ``[...]`` state values.
        spec: the action spec.
    """

    def __init__(self, head: torch.Tensor, value: torch.Tensor, spec: ActionSpec, log_std=None):
        self.head = head
        self.value = value
        self.spec = spec
        self.log_std = log_std

    def _dists(self) -> list[Categorical] | Normal:
        if self.spec.kind == "continuous":
            return Normal(self.head, self.log_std.exp().expand_as(self.head))
        return [Categorical(logits=chunk) for chunk in self.head.split(list(self.spec.sizes), -1)]

    def sample(self) -> torch.Tensor:
        """Actions ``[..., n_components]`` (int64 for discrete spaces, float for ``Box``)."""
        dists = self._dists()
        if isinstance(dists, Normal):
            return dists.sample()
        return torch.stack([d.sample() for d in dists], dim=-1)

    def mode(self) -> torch.Tensor:
        """The most likely action (greedy evaluation)."""
        if self.spec.kind == "continuous":
            return self.head
        chunks = self.head.split(list(self.spec.sizes), -1)
        return torch.stack([c.argmax(-1) for c in chunks], dim=-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """Joint log-probability ``[...]`` of ``action [..., n_components]``."""
        dists = self._dists()
        if isinstance(dists, Normal):
            return dists.log_prob(action).sum(-1)
        return sum(d.log_prob(action[..., i]) for i, d in enumerate(dists))

    def entropy(self) -> torch.Tensor:
        """Joint entropy ``[...]`` (the components are independent)."""
        dists = self._dists()
        if isinstance(dists, Normal):
            return dists.entropy().sum(-1)
        return sum(d.entropy() for d in dists)


class ActorCritic(nn.Module):
    """Actor-critic over a stream of observations with a resettable sequence backbone.

    Args:
        obs_size: width of the (already encoded) observation vector.
        action: the :class:`~mixerzoo.rl.spaces.ActionSpec` of the environment.
        mixer: backbone mixer name (``"s5"``, ``"gru"``, ``"lstm"``, ``"attention"``, ``"none"``).
        d_model: backbone width (popjaxrl: 256).
        n_layers: backbone blocks (popjaxrl: 4 for S5; 1 GRU).
        mixer_kwargs: mixer arguments (popjaxrl's S5: ``{"d_state": 256, "activation":
            "full_glu"}``; attention needs ``{"causal": True}``).
        encoder_hidden: first encoder width (128).
        head_hidden: actor/critic hidden width (128).
        norm: block norm (popjaxrl: none).
        d_ff: MLP width inside each block (popjaxrl: none, 0).
        context_len: attention cache length (see :class:`~mixerzoo.rl.backbone.MixerStack`).

    Shapes:
        ``forward(obs [B, T, F], state, reset [B, T]) -> (PolicyOutput over [B, T], state)``;
        ``step(obs_t [B, F], state, reset_t [B]) -> (PolicyOutput over [B], state)``.
    """

    def __init__(
        self,
        obs_size: int,
        action: ActionSpec,
        mixer: str = "s5",
        d_model: int = 256,
        n_layers: int = 4,
        mixer_kwargs: dict[str, Any] | None = None,
        encoder_hidden: int = 128,
        head_hidden: int = 128,
        norm: str = "none",
        d_ff: int = 0,
        context_len: int | None = None,
    ):
        super().__init__()
        self.obs_size = obs_size
        self.action = action
        self.encoder = nn.Sequential(
            orthogonal_linear(obs_size, encoder_hidden, math.sqrt(2)),
            nn.LeakyReLU(0.01),
            orthogonal_linear(encoder_hidden, d_model, math.sqrt(2)),
            nn.LeakyReLU(0.01),
        )
        self.backbone = MixerStack(
            d_model, mixer, n_layers, mixer_kwargs, d_ff=d_ff, norm=norm, context_len=context_len
        )
        self.actor = nn.Sequential(
            orthogonal_linear(d_model, head_hidden, 2.0),
            nn.LeakyReLU(0.01),
            orthogonal_linear(head_hidden, head_hidden, 2.0),
            nn.LeakyReLU(0.01),
            orthogonal_linear(head_hidden, action.n_outputs, 0.01),
        )
        self.critic = nn.Sequential(
            orthogonal_linear(d_model, head_hidden, 2.0),
            nn.LeakyReLU(0.01),
            orthogonal_linear(head_hidden, head_hidden, 2.0),
            nn.LeakyReLU(0.01),
            orthogonal_linear(head_hidden, 1, 1.0),
        )
        self.log_std = (
            nn.Parameter(torch.zeros(action.dim)) if action.kind == "continuous" else None
        )

    def init_state(self, batch_size: int, device=None) -> Any:
        return self.backbone.init_state(batch_size, device=device)

    def _heads(self, h: torch.Tensor) -> PolicyOutput:
        return PolicyOutput(self.actor(h), self.critic(h).squeeze(-1), self.action, self.log_std)

    def _check_obs(self, obs: torch.Tensor, dims: int, where: str) -> None:
        if obs.dim() != dims or obs.shape[-1] != self.obs_size:
            shape = "[B, T, F]" if dims == 3 else "[B, F]"
            raise ValueError(
                f"ActorCritic.{where}: obs must have shape {shape} with F = {self.obs_size}, got "
                f"{tuple(obs.shape)}"
            )

    def forward(
        self, obs: torch.Tensor, state: Any = None, reset: torch.Tensor | None = None
    ) -> tuple[PolicyOutput, Any]:
        """The whole stream at once (training): ``reset [B, T]`` bool marks episode starts."""
        self._check_obs(obs, 3, "forward")
        h, state = self.backbone(self.encoder(obs), state, reset=reset)
        return self._heads(h), state

    def step(
        self, obs_t: torch.Tensor, state: Any, reset_t: torch.Tensor | None = None
    ) -> tuple[PolicyOutput, Any]:
        """One step (acting): rows with ``reset_t [B]`` true start a new episode."""
        self._check_obs(obs_t, 2, "step")
        h, state = self.backbone.step(self.encoder(obs_t), state, reset_t)
        return self._heads(h), state
