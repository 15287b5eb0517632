"""PPO over whole environment streams: rollouts, advantages and the clipped objective.

As in the official code of "Structured State Space Models for In-Context Reinforcement Learning"
(Lu et al., 2023, arXiv 2303.03982; popjaxrl's ``ppo_s5.py``, itself PureJaxRL's recurrent PPO):

- Acting: ``num_envs`` environments advance together; the agent steps its backbone one observation
  at a time (``step``), and an environment's state is reset where its observation starts an
  episode. The backbone state is carried from one rollout to the next.
- Training: the whole rollout ``[num_envs, num_steps]`` of each environment is one sequence that
  crosses episode boundaries; the backbone runs over it in parallel from the state the rollout
  started from, with ``reset`` at the episode starts (the resettable scan for S5). Minibatches are
  sets of environments (whole streams), ``update_epochs`` passes each.
- Losses: clipped surrogate, clipped value loss ``0.5 max((v - R)^2, (v_clip - R)^2)``,
  advantages normalised per minibatch, entropy bonus; GAE.

Truncation vs termination (popjaxrl treats both as terminal): an episode that *terminates* has no
future, so its last TD target is the reward alone; one that is *truncated* (a time limit) would
have gone on, so its last target is ``r + gamma V(s_final)`` with the value of the observation it
stopped at (gymnasium's ``final_obs``, evaluated with the backbone state of that episode). The
collector folds that term into the stored reward and marks the step done, so GAE never looks
across the boundary into the next episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mixerzoo.core.state import map_state, select_state
from mixerzoo.rl.icrl.agent import ActorCritic

__all__ = ["Rollout", "RolloutCollector", "compute_gae", "ppo_loss"]


@dataclass
class Rollout:
    """One rollout of ``N`` environments for ``T`` steps (all tensors batch-first ``[N, T, ...]``).

    Attributes:
        obs: ``[N, T, F]`` observations the agent acted on.
        starts: ``[N, T]`` bool, true where the observation starts an episode.
        actions: ``[N, T, C]`` actions taken (int64 or float).
        log_probs: ``[N, T]`` their log-probabilities under the acting policy.
        values: ``[N, T]`` value estimates when acting.
        rewards: ``[N, T]`` rewards, plus ``gamma V(final_obs)`` at truncations.
        dones: ``[N, T]`` bool, true where the episode ended after this step.
        last_value: ``[N]`` value of the observation after the last step.
        init_state: backbone state before step 0.
        advantages, returns: ``[N, T]``, filled by :func:`compute_gae`.
        episode_returns: undiscounted returns of the episodes that ended in this rollout.
        episode_lengths: their lengths.
    """

    obs: torch.Tensor
    starts: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    last_value: torch.Tensor
    init_state: Any
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)

    @property
    def num_envs(self) -> int:
        return self.obs.shape[0]

    def minibatch(self, index: torch.Tensor) -> dict[str, Any]:
        """The streams ``index`` (environments) as a dict of tensors and their initial state."""
        batch = {
            name: getattr(self, name)[index]
            for name in (
                "obs",
                "starts",
                "actions",
                "log_probs",
                "values",
                "advantages",
                "returns",
            )
        }
        batch["init_state"] = select_state(self.init_state, index)
        return batch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016, arXiv 1506.02438) over streams.

    ``delta_t = r_t + gamma V_{t+1} (1 - done_t) - V_t`` and
    ``A_t = delta_t + gamma lam (1 - done_t) A_{t+1}``, where ``V_{t+1}`` is the next stored value
    (``last_value`` after the last step). A done step never bootstraps from the next observation,
    which belongs to the next episode (truncations were bootstrapped into ``r_t`` already).

    Args:
        rewards, values: ``[N, T]``.
        dones: ``[N, T]`` bool.
        last_value: ``[N]``.

    Returns:
        ``(advantages [N, T], returns = advantages + values)``.
    """
    n, t = rewards.shape
    not_done = (~dones).to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(n, dtype=rewards.dtype, device=rewards.device)
    next_value = last_value
    for i in range(t - 1, -1, -1):
        delta = rewards[:, i] + gamma * next_value * not_done[:, i] - values[:, i]
        running = delta + gamma * lam * not_done[:, i] * running
        advantages[:, i] = running
        next_value = values[:, i]
    return advantages, advantages + values


def ppo_loss(
    agent: ActorCritic,
    batch: dict[str, Any],
    clip_eps: float,
    vf_coef: float,
    ent_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped objective on a minibatch of whole streams (popjaxrl's ``_loss_fn``).

    Returns:
        ``(loss, stats)`` with the actor, value and entropy terms, the approximate KL and the
        fraction of clipped ratios.
    """
    out, _ = agent(batch["obs"], batch["init_state"], reset=batch["starts"])
    log_prob = out.log_prob(batch["actions"])
    old_values = batch["values"]
    value = out.value
    value_clipped = old_values + (value - old_values).clamp(-clip_eps, clip_eps)
    value_loss = (
        0.5
        * torch.maximum(
            (value - batch["returns"]).square(), (value_clipped - batch["returns"]).square()
        ).mean()
    )
    log_ratio = log_prob - batch["log_probs"]
    ratio = log_ratio.exp()
    adv = batch["advantages"]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    actor_loss = -torch.minimum(
        ratio * adv, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    ).mean()
    entropy = out.entropy().mean()
    loss = actor_loss + vf_coef * value_loss - ent_coef * entropy
    with torch.no_grad():
        stats = {
            "actor_loss": actor_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy.detach(),
            "approx_kl": ((ratio - 1) - log_ratio).mean(),
            "clip_fraction": ((ratio - 1).abs() > clip_eps).float().mean(),
        }
    return loss, stats


class RolloutCollector:
    """Steps a vector env with the agent and records :class:`Rollout`\\ s, carrying the backbone
    state and the current observations from one rollout to the next.

    Args:
        envs: a vector env from :func:`mixerzoo.rl.icrl.envs.make_vector_env` (same-step
            autoreset, observations already encoded).
        agent: the actor-critic.
        num_steps: steps per rollout (``T``).
        gamma: discount (for the truncation bootstrap).
        deterministic: act greedily (evaluation) instead of sampling.
    """

    def __init__(
        self,
        envs,
        agent: ActorCritic,
        num_steps: int,
        gamma: float,
        deterministic: bool = False,
    ):
        if num_steps < 1:
            raise ValueError(f"RolloutCollector: num_steps must be >= 1, got {num_steps}")
        self.envs = envs
        self.agent = agent
        self.num_steps = num_steps
        self.gamma = gamma
        self.deterministic = deterministic
        self.action_space = envs.single_action_space
        n = envs.num_envs
        self.obs = torch.as_tensor(np.asarray(envs.first_obs), dtype=torch.float32)
        self.start = torch.ones(n, dtype=torch.bool)
        self.state = None  # the backbone starts from init_state on the agent's device
        self._running_return = np.zeros(n)
        self._running_length = np.zeros(n, dtype=np.int64)

    def _to_env(self, action: torch.Tensor) -> np.ndarray:
        spec = self.agent.action
        act = action.cpu().numpy()
        if spec.kind == "continuous":
            return np.clip(act, spec.low, spec.high)
        if len(spec.sizes) == 1:
            return act[:, 0] + int(getattr(self.action_space, "start", 0))
        return act + getattr(self.action_space, "start", 0)

    @torch.no_grad()
    def collect(self) -> Rollout:
        """Run ``num_steps`` steps in every environment and return the rollout (tensors on the
        agent's device)."""
        agent = self.agent
        device = next(agent.parameters()).device
        t_max = self.num_steps
        init_state = map_state(lambda leaf: leaf.detach().clone(), self.state)
        obs_buf, start_buf, act_buf, logp_buf, val_buf, rew_buf, done_buf = ([] for _ in range(7))
        finished_returns: list[float] = []
        finished_lengths: list[int] = []
        for _ in range(t_max):
            out, state = agent.step(self.obs.to(device), self.state, self.start.to(device))
            action = out.mode() if self.deterministic else out.sample()
            next_obs, reward, terminated, truncated, info = self.envs.step(self._to_env(action))
            reward = np.asarray(reward, dtype=np.float64)
            if not np.isfinite(reward).all():
                bad = np.flatnonzero(~np.isfinite(reward)).tolist()
                raise ValueError(
                    f"RolloutCollector: environments {bad} returned non-finite rewards "
                    f"{reward[bad].tolist()}; PPO needs finite rewards"
                )
            done = np.logical_or(terminated, truncated)
            self._running_return += reward
            self._running_length += 1
            if agent.backbone.context_len is not None and not done.all():
                # An episode still running past the backbone's context would silently lose its
                # start (attention cache); say so as soon as its next step would.
                longest = int(self._running_length[~done].max()) + 1
                agent.backbone.check_episode_length(longest, "RolloutCollector")
            stored_reward = torch.as_tensor(reward, dtype=torch.float32, device=device)
            cut = np.flatnonzero(np.logical_and(truncated, ~np.asarray(terminated)))
            if cut.size:
                final = torch.as_tensor(
                    np.stack([info["final_obs"][i] for i in cut]), dtype=torch.float32
                ).to(device)
                rows = torch.as_tensor(cut, device=device)
                tail, _ = agent.step(final, select_state(state, rows), None)
                stored_reward[rows] += self.gamma * tail.value
            for i in np.flatnonzero(done):
                finished_returns.append(float(self._running_return[i]))
                finished_lengths.append(int(self._running_length[i]))
                self._running_return[i] = 0.0
                self._running_length[i] = 0
            obs_buf.append(self.obs.to(device))
            start_buf.append(self.start.to(device))
            act_buf.append(action)
            logp_buf.append(out.log_prob(action))
            val_buf.append(out.value)
            rew_buf.append(stored_reward)
            done_buf.append(torch.as_tensor(done, device=device))
            self.obs = torch.as_tensor(np.asarray(next_obs), dtype=torch.float32)
            self.start = torch.as_tensor(done)
            self.state = state
        last, _ = agent.step(self.obs.to(device), self.state, self.start.to(device))
        return Rollout(
            obs=torch.stack(obs_buf, 1),
            starts=torch.stack(start_buf, 1),
            actions=torch.stack(act_buf, 1),
            log_probs=torch.stack(logp_buf, 1),
            values=torch.stack(val_buf, 1),
            rewards=torch.stack(rew_buf, 1),
            dones=torch.stack(done_buf, 1),
            last_value=last.value,
            init_state=init_state,
            episode_returns=finished_returns,
            episode_lengths=finished_lengths,
        )
