"""Environments for in-context RL: popgym's memory suite, meta-CartPole, vectorised streams.

Follows the setup of "Structured State Space Models for In-Context Reinforcement Learning" (Lu,
Schroecker, Gu, Parisotto, Foerster, Singh and Behbahani, 2023, arXiv 2303.03982) and its official
JAX code (popjaxrl):

- Every observation the agent reads is the environment's observation (flat ``float32``, see
  :mod:`mixerzoo.rl.spaces`) followed by the previous action (one-hot for discrete actions, zeros
  at an episode start) and a flag that is 1 on the first observation of an episode
  (:class:`PreviousActionObservation`, popjaxrl's ``AliasPrevActionV2``).
- The popgym memory suite is used through the ``popgym`` package's gymnasium environments (ids
  ``popgym-<Name>-v0``; the JAX port renames some, e.g. its "StatelessCartPole" is popgym's
  ``PositionOnlyCartPole``). :func:`make_env` takes either the full id or the bare name
  (``"RepeatPreviousEasy"``).
- :class:`MetaCartPole`: the paper's random-projection meta-CartPole (below).
- :func:`make_vector_env`: a gymnasium ``SyncVectorEnv`` with same-step autoreset, so the stream of
  each environment goes on across episodes and the observation that ended an episode is in
  ``info["final_obs"]`` (needed to bootstrap truncated episodes).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from mixerzoo.rl.spaces import action_spec, encode_action, encode_observation, observation_size

__all__ = [
    "MetaCartPole",
    "PreviousActionObservation",
    "make_env",
    "make_vector_env",
    "POPGYM_MEMORY_SUITE",
]

#: The popgym memory environments used in the paper's popgym experiments (Easy levels).
POPGYM_MEMORY_SUITE = (
    "RepeatPreviousEasy",
    "RepeatFirstEasy",
    "CountRecallEasy",
    "PositionOnlyCartPoleEasy",
    "NoisyPositionOnlyCartPoleEasy",
    "PositionOnlyPendulumEasy",
    "AutoencodeEasy",
    "BattleshipEasy",
    "ConcentrationEasy",
    "HigherLowerEasy",
    "MineSweeperEasy",
    "MultiarmedBanditEasy",
)


class MetaCartPole(gym.Env):
    """Random-projection meta-CartPole: several CartPole trials per episode, seen through a
    random linear map drawn when the episode starts.

    After popjaxrl's ``NoisyStatelessMetaCartPole``: the inner task is position-only CartPole
    (the agent sees the cart position and pole angle, not the velocities; Euler integration of
    the classic dynamics, failure at ``|x| > 2.4`` or ``|theta| > 12 deg``), the 2-D observation
    goes through ``W [4, 2]`` (orthogonal with gain ``sqrt(2)``, as the official code's
    orthogonally initialised dense layer) drawn at ``reset``, and each episode is ``n_trials``
    trials: when a trial ends (failure or ``trial_steps`` steps) the cart is put back in the same
    initial state and the next trial starts, under the same projection. So the agent can only do
    well by inferring the map within the episode: in-context learning. The reward is
    ``1 / trial_steps`` per step (as the official code, the failing step included), so an episode
    returns at most ``n_trials``. The episode terminates after its last trial (a real end: no
    reward follows, so it is ``terminated``, not ``truncated``).

    Observation: ``[W @ (x, theta) (4 values), trial_ended]`` where ``trial_ended`` is 1 on the
    first observation of every trial after the first (the previous action and the episode-start
    flag are added by :class:`PreviousActionObservation`, as the official wrapper does).

    Args:
        n_trials: trials per episode (official: 16).
        trial_steps: step limit of one trial (official: 200).
        redraw_per_trial: draw a new projection at every trial instead of once per episode (the
            official code draws it once per episode; a new map per trial leaves nothing to learn
            in context and is kept only as an ablation).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    x_threshold, theta_threshold = 2.4, 12 * 2 * math.pi / 360

    def __init__(self, n_trials: int = 16, trial_steps: int = 200, redraw_per_trial: bool = False):
        super().__init__()
        if n_trials < 1 or trial_steps < 1:
            raise ValueError(
                f"MetaCartPole: n_trials and trial_steps must be >= 1, got {n_trials}, {trial_steps}"
            )
        self.n_trials = n_trials
        self.trial_steps = trial_steps
        self.redraw_per_trial = redraw_per_trial
        self.observation_space = spaces.Box(-np.inf, np.inf, (5,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.max_episode_steps = n_trials * trial_steps

    def _draw_projection(self) -> np.ndarray:
        # Orthogonal [4, 2] matrix (QR of a Gaussian, sign-corrected) scaled by sqrt(2).
        q, r = np.linalg.qr(self.np_random.standard_normal((4, 2)))
        return (q * np.sign(np.diag(r))) * math.sqrt(2.0)

    def _observe(self, trial_ended: bool) -> np.ndarray:
        x, _, theta, _ = self._state
        proj = self._projection @ np.array([x, theta])
        return np.concatenate([proj, [float(trial_ended)]]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._projection = self._draw_projection()
        self._initial = self.np_random.uniform(-0.05, 0.05, size=4)
        self._state = self._initial.copy()
        self._trial, self._trial_t = 0, 0
        return self._observe(False), {"trial": 0}

    def _physics(self, action: int) -> None:
        x, x_dot, theta, theta_dot = self._state
        force = self.force_mag if action == 1 else -self.force_mag
        total_mass = self.masscart + self.masspole
        polemass_length = self.masspole * self.length
        cos, sin = math.cos(theta), math.sin(theta)
        temp = (force + polemass_length * theta_dot**2 * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos**2 / total_mass)
        )
        x_acc = temp - polemass_length * theta_acc * cos / total_mass
        self._state = np.array(
            [
                x + self.tau * x_dot,
                x_dot + self.tau * x_acc,
                theta + self.tau * theta_dot,
                theta_dot + self.tau * theta_acc,
            ]
        )

    def step(self, action):
        if not self.action_space.contains(int(action)):
            raise ValueError(f"MetaCartPole: action must be 0 or 1, got {action!r}")
        self._physics(int(action))
        self._trial_t += 1
        x, _, theta, _ = self._state
        failed = abs(x) > self.x_threshold or abs(theta) > self.theta_threshold
        reward = 1.0 / self.trial_steps
        trial_over = failed or self._trial_t >= self.trial_steps
        terminated = False
        if trial_over:
            self._trial += 1
            self._trial_t = 0
            terminated = self._trial >= self.n_trials
            self._state = self._initial.copy()
            if self.redraw_per_trial:
                self._projection = self._draw_projection()
        info = {"trial": self._trial, "trial_failed": failed}
        return self._observe(trial_over and not terminated), reward, terminated, False, info


class PreviousActionObservation(gym.Wrapper):
    """Flat observation + previous action + episode-start flag (popjaxrl's ``AliasPrevActionV2``).

    The observation becomes ``[encode(obs), encode(previous action), start]``: the previous action
    is zeros and ``start`` is 1 on the first observation of an episode. Rewards that are not finite
    raise an error naming the environment and the step (a NaN return would silently poison PPO).

    Raises:
        UnsupportedSpaceError: when the observation or action space cannot be encoded (the error
            names the space).
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._obs_size = observation_size(env.observation_space)
        self._spec = action_spec(env.action_space)
        size = self._obs_size + self._spec.encoded_size + 1
        self.observation_space = spaces.Box(-np.inf, np.inf, (size,), dtype=np.float32)
        self._t = 0

    def _make(self, obs, action_code: np.ndarray, start: bool) -> np.ndarray:
        return np.concatenate(
            [
                encode_observation(self.env.observation_space, obs),
                action_code,
                np.array([1.0 if start else 0.0], dtype=np.float32),
            ]
        )

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._t = 0
        return self._make(obs, np.zeros(self._spec.encoded_size, np.float32), True), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        if not np.isfinite(reward):
            name = self.env.spec.id if self.env.spec is not None else type(self.env).__name__
            raise ValueError(
                f"environment {name} returned a non-finite reward ({reward!r}) at step {self._t} "
                f"of the episode; PPO needs finite rewards (fix the environment or clip the reward "
                f"with a gymnasium wrapper)"
            )
        code = encode_action(self.env.action_space, action)
        return self._make(obs, code, False), float(reward), terminated, truncated, info


_META_IDS = {"MetaCartPole", "mixerzoo/MetaCartPole-v0"}


def make_env(env_id: str, max_episode_steps: int | None = None, **kwargs) -> gym.Env:
    """One environment by id: ``"MetaCartPole"``, a popgym name (``"RepeatPreviousEasy"`` or
    ``"popgym-RepeatPreviousEasy-v0"``) or any registered gymnasium id.

    Args:
        env_id: the environment.
        max_episode_steps: add a ``TimeLimit`` (episodes are then truncated, not terminated).
        **kwargs: passed to the environment's constructor.
    """
    if env_id in _META_IDS:
        env: gym.Env = MetaCartPole(**kwargs)
    else:
        if env_id not in gym.registry:
            import popgym  # noqa: F401  (registers the popgym-* ids)

            candidate = f"popgym-{env_id}-v0"
            if candidate in gym.registry:
                env_id = candidate
        if env_id not in gym.registry:
            raise ValueError(
                f"unknown environment {env_id!r}: give 'MetaCartPole', a popgym name such as "
                f"'RepeatPreviousEasy' (one of {', '.join(POPGYM_MEMORY_SUITE)}, ...) or a "
                f"registered gymnasium id"
            )
        # popgym's environments return the same info dict from consecutive calls, which
        # gymnasium's passive checker warns about at every episode; it is off for them.
        checker = {"disable_env_checker": True} if env_id.startswith("popgym-") else {}
        env = gym.make(env_id, **checker, **kwargs)
    if max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps)
    return env


def make_vector_env(
    env_id: str,
    num_envs: int,
    seed: int | None = None,
    max_episode_steps: int | None = None,
    **kwargs,
) -> SyncVectorEnv:
    """``num_envs`` copies of :func:`make_env` with :class:`PreviousActionObservation`, in a
    same-step autoreset ``SyncVectorEnv``, reset with seeds ``seed, seed + 1, ...``.

    Returns:
        The vector env, already reset; its first observations are in ``envs.first_obs``.
    """
    if num_envs < 1:
        raise ValueError(f"make_vector_env: num_envs must be >= 1, got {num_envs}")

    def factory() -> gym.Env:
        return PreviousActionObservation(make_env(env_id, max_episode_steps, **kwargs))

    envs = SyncVectorEnv([factory for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP)
    seeds = None if seed is None else [seed + i for i in range(num_envs)]
    envs.first_obs, _ = envs.reset(seed=seeds)
    # Action spaces of a single copy (the vector env's are batched).
    envs.single_env_action_space = envs.single_action_space
    return envs


def max_episode_steps_of(env_id: str, max_episode_steps: int | None = None, **kwargs) -> int | None:
    """The longest episode an environment can produce, when it is known (else ``None``).

    Looks at an explicit ``TimeLimit``, then the ``max_episode_length`` attribute popgym
    environments carry and ``MetaCartPole``'s ``max_episode_steps``.
    """
    env = make_env(env_id, max_episode_steps, **kwargs)
    try:
        limits = [max_episode_steps] if max_episode_steps is not None else []
        inner = env.unwrapped
        for attr in ("max_episode_steps", "max_episode_length"):
            value = getattr(inner, attr, None)
            if isinstance(value, (int, np.integer)):
                limits.append(int(value))
        if env.spec is not None and env.spec.max_episode_steps is not None:
            limits.append(env.spec.max_episode_steps)
        return min(limits) if limits else None
    finally:
        env.close()
