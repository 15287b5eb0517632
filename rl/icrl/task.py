"""``PPOTask``: PPO over environment streams as a LightningModule (manual optimisation).

The data source is the environment: every training "batch" is one PPO update — collect a rollout
of ``num_steps`` steps in ``num_envs`` environments with the current policy, compute advantages,
then ``update_epochs`` passes of ``num_minibatches`` minibatches of whole streams (see
:mod:`mixerzoo.rl.icrl.ppo`). The mean return of the episodes that ended during the rollout is
logged per update (``episode_return``, on the progress bar), with the losses, entropy, approximate
KL and the number of environment steps so far.

Defaults are popjaxrl's ``run_popgym.py`` settings ("Structured State Space Models for In-Context
Reinforcement Learning", Lu et al., 2023, arXiv 2303.03982): 64 environments x 1024 steps,
30 epochs of 8 minibatches, gamma 0.99, GAE lambda 1.0, clip 0.2, entropy 0, value coefficient
1.0, gradient norm 0.5, Adam (lr 5e-5, eps 1e-5 in the configs), S5 of width 256 with state 256
and 4 layers. The CPU configs in ``configs/rl/`` change some of them and say which and why.

Resuming from a checkpoint restores the weights, optimiser and random generators but not the
environments' internal states: a resumed run starts new episodes (environments cannot be saved).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch.utils.data import DataLoader, Dataset

from mixerzoo.core.task import BaseTask
from mixerzoo.rl.icrl.agent import ActorCritic
from mixerzoo.rl.icrl.envs import (
    PreviousActionObservation,
    make_env,
    make_vector_env,
    max_episode_steps_of,
)
from mixerzoo.rl.icrl.ppo import RolloutCollector, compute_gae, ppo_loss
from mixerzoo.rl.spaces import action_spec

__all__ = ["PPOTask", "RolloutDataModule"]


class _UpdateTicks(Dataset):
    """``n`` placeholder items: one per PPO update (the rollouts are the data) or evaluation."""

    def __init__(self, n: int):
        self.n = n

    def __getitem__(self, index: int) -> int:
        return index

    def __len__(self) -> int:
        return self.n


class RolloutDataModule(pl.LightningDataModule):
    """The data of a PPO run: rollouts to train on, fresh episodes to test on.

    PPO's training data are rollouts of the current policy, so the training "batches" are one
    placeholder per PPO update (``PPOTask.updates_per_epoch`` of them per epoch) and
    :class:`PPOTask` collects each rollout in its ``training_step``. ``test``: after ``fit``, the
    ``mixerzoo`` command evaluates the trained policy on ``eval_episodes`` new episodes (new
    environments seeded ``eval_seed, eval_seed + 1, ...``, never used in training) and prints
    ``test/episode_return``.

    Args:
        eval_episodes: test episodes to average over.
        eval_seed: seed of the first test environment.
        deterministic: act greedily in the test instead of sampling the policy.
    """

    def __init__(
        self, eval_episodes: int = 64, eval_seed: int = 10_000, deterministic: bool = False
    ):
        super().__init__()
        if eval_episodes < 1:
            raise ValueError(f"RolloutDataModule: eval_episodes must be >= 1, got {eval_episodes}")
        self.eval_episodes = eval_episodes
        self.eval_seed = eval_seed
        self.deterministic = deterministic

    def train_dataloader(self) -> DataLoader:
        task = self.trainer.lightning_module
        return DataLoader(_UpdateTicks(task.updates_per_epoch), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_UpdateTicks(1), batch_size=None)


class PPOTask(BaseTask):
    """PPO with a resettable sequence backbone over vectorised gymnasium environments.

    Args:
        env: environment id: a popgym name (``"RepeatPreviousEasy"``), ``"MetaCartPole"`` or any
            gymnasium id (see :func:`mixerzoo.rl.icrl.envs.make_env`).
        env_kwargs: constructor arguments of the environment.
        max_episode_steps: add a time limit (truncation).
        num_envs: parallel environments (streams).
        num_steps: steps per rollout (the length of the training sequences).
        update_epochs: passes over each rollout.
        num_minibatches: minibatches per pass (``num_envs`` must divide into them).
        gamma: discount.
        gae_lambda: GAE lambda.
        clip_eps: PPO ratio (and value) clipping.
        ent_coef: entropy bonus.
        vf_coef: value loss coefficient.
        max_grad_norm: global gradient-norm clip.
        updates_per_epoch: PPO updates per Lightning epoch (``max_epochs`` x this = updates).
        env_seed: seed of the first environment (environment ``i`` gets ``env_seed + i``).
        mixer, d_model, n_layers, mixer_kwargs, encoder_hidden, head_hidden, norm, d_ff,
        context_len: the :class:`~mixerzoo.rl.icrl.agent.ActorCritic` (``mixer="none"``: the
            memoryless MLP policy; S5 defaults to ``{"d_state": 256, "activation":
            "full_glu"}``; attention is made causal and its ``context_len`` defaults to the
            environment's longest episode).
        optimizer, lr_scheduler, lr_scheduler_interval: see
            :class:`~mixerzoo.core.task.BaseTask`; a scheduler is stepped once per update when
            the interval is ``"step"``, once per epoch otherwise.

    Raises:
        UnsupportedSpaceError: the environment's spaces cannot be encoded (names the space).
        ContextTooLongError: the environment's episodes can be longer than ``context_len``.
    """

    def __init__(
        self,
        env: str = "RepeatPreviousEasy",
        env_kwargs: dict[str, Any] | None = None,
        max_episode_steps: int | None = None,
        num_envs: int = 64,
        num_steps: int = 1024,
        update_epochs: int = 30,
        num_minibatches: int = 8,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        clip_eps: float = 0.2,
        ent_coef: float = 0.0,
        vf_coef: float = 1.0,
        max_grad_norm: float = 0.5,
        updates_per_epoch: int = 10,
        env_seed: int = 0,
        mixer: str = "s5",
        d_model: int = 256,
        n_layers: int = 4,
        mixer_kwargs: dict[str, Any] | None = None,
        encoder_hidden: int = 128,
        head_hidden: int = 128,
        norm: str = "none",
        d_ff: int = 0,
        context_len: int | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "step",
    ):
        if num_envs < 1 or num_minibatches < 1 or num_envs % num_minibatches:
            raise ValueError(
                f"PPOTask: num_envs ({num_envs}) must be a positive multiple of num_minibatches "
                f"({num_minibatches}): minibatches are sets of whole environment streams"
            )
        for name, value in (
            ("num_steps", num_steps),
            ("update_epochs", update_epochs),
            ("updates_per_epoch", updates_per_epoch),
        ):
            if value < 1:
                raise ValueError(f"PPOTask: {name} must be >= 1, got {value}")
        env_kwargs = dict(env_kwargs or {})
        if mixer == "s5" and mixer_kwargs is None:
            mixer_kwargs = {"d_state": 256, "activation": "full_glu"}
        if mixer == "attention":
            mixer_kwargs = {"causal": True, **(mixer_kwargs or {})}
            if context_len is None:
                # The carried KV cache needs a bound; the longest episode is the exact one.
                context_len = max_episode_steps_of(env, max_episode_steps, **env_kwargs)
                if context_len is None:
                    raise ValueError(
                        f"PPOTask: an attention backbone needs context_len (the KV cache it "
                        f"carries), and the longest episode of {env!r} is unknown; set "
                        f"context_len or max_episode_steps"
                    )
        # One probe environment gives the encoded observation width and the action space.
        probe = PreviousActionObservation(make_env(env, max_episode_steps, **env_kwargs))
        obs_size = probe.observation_space.shape[0]
        spec = action_spec(probe.env.action_space)
        probe.close()
        agent = ActorCritic(
            obs_size,
            spec,
            mixer=mixer,
            d_model=d_model,
            n_layers=n_layers,
            mixer_kwargs=mixer_kwargs,
            encoder_hidden=encoder_hidden,
            head_hidden=head_hidden,
            norm=norm,
            d_ff=d_ff,
            context_len=context_len,
        )
        if context_len is not None:
            longest = max_episode_steps_of(env, max_episode_steps, **env_kwargs)
            if longest is None:
                raise ValueError(
                    f"PPOTask: context_len={context_len} is set but the longest episode of {env!r} "
                    f"is unknown; give max_episode_steps so that every episode fits the context"
                )
            agent.backbone.check_episode_length(longest, "PPOTask")
        super().__init__(agent, optimizer, lr_scheduler, lr_scheduler_interval)
        self.automatic_optimization = False
        self.env_id = env
        self.env_kwargs = env_kwargs
        self.max_episode_steps = max_episode_steps
        self.num_envs = num_envs
        self.num_steps = num_steps
        self.update_epochs = update_epochs
        self.num_minibatches = num_minibatches
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.clip_eps = clip_eps
        self.ent_coef = ent_coef
        self.vf_coef = vf_coef
        self.max_grad_norm = max_grad_norm
        self.updates_per_epoch = updates_per_epoch
        self.env_seed = env_seed
        self.collector: RolloutCollector | None = None
        self.env_steps = 0
        #: One dict per update: ``env_steps``, ``seconds`` since the fit started, mean
        #: ``episode_return`` of the episodes that ended in the rollout (NaN if none) and their
        #: number ``episodes``.
        self.history: list[dict[str, float]] = []
        self._fit_started = time.perf_counter()

    @property
    def agent(self) -> ActorCritic:
        return self.model

    # --- data: the environments ----------------------------------------------------------
    def make_collector(self, seed: int | None = None, deterministic: bool = False):
        """A fresh :class:`~mixerzoo.rl.icrl.ppo.RolloutCollector` over new environments."""
        envs = make_vector_env(
            self.env_id,
            self.num_envs,
            seed=self.env_seed if seed is None else seed,
            max_episode_steps=self.max_episode_steps,
            **self.env_kwargs,
        )
        return RolloutCollector(envs, self.agent, self.num_steps, self.gamma, deterministic)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_UpdateTicks(self.updates_per_epoch), batch_size=None)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.collector is None:
            self.collector = self.make_collector()
        self._fit_started = time.perf_counter() - (
            self.history[-1]["seconds"] if self.history else 0
        )

    def on_fit_end(self) -> None:
        if self.collector is not None:
            self.collector.envs.close()
            self.collector = None

    # --- one PPO update ------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        start = time.perf_counter()
        rollout = self.collector.collect()
        collect_s = time.perf_counter() - start
        rollout.advantages, rollout.returns = compute_gae(
            rollout.rewards,
            rollout.values,
            rollout.dones,
            rollout.last_value,
            self.gamma,
            self.gae_lambda,
        )
        optimizer = self.optimizers()
        stats: dict[str, list[torch.Tensor]] = {}
        for _ in range(self.update_epochs):
            order = torch.randperm(self.num_envs, device=self.device)
            for index in order.chunk(self.num_minibatches):
                loss, parts = ppo_loss(
                    self.agent,
                    rollout.minibatch(index),
                    self.clip_eps,
                    self.vf_coef,
                    self.ent_coef,
                )
                optimizer.zero_grad()
                self.manual_backward(loss)
                self.clip_gradients(
                    optimizer,
                    gradient_clip_val=self.max_grad_norm,
                    gradient_clip_algorithm="norm",
                )
                optimizer.step()
                for key, value in {"loss": loss.detach(), **parts}.items():
                    stats.setdefault(key, []).append(value)
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.lr_scheduler_interval == "step":
            scheduler.step()
        self.env_steps += self.num_envs * self.num_steps
        returns = rollout.episode_returns
        self.history.append(
            {
                "env_steps": float(self.env_steps),
                "seconds": time.perf_counter() - self._fit_started,
                "episode_return": float(np.mean(returns)) if returns else float("nan"),
                "episodes": float(len(returns)),
            }
        )
        log = {f"train/{k}": torch.stack(v).mean() for k, v in stats.items()}
        log["train/collect_seconds"] = collect_s
        log["train/update_seconds"] = time.perf_counter() - start
        log["env_steps"] = float(self.env_steps)
        self.log_dict(log, on_step=True, on_epoch=False)
        if rollout.episode_returns:
            self.log(
                "episode_return",
                float(np.mean(rollout.episode_returns)),
                on_step=True,
                on_epoch=False,
                prog_bar=True,
            )
            self.log(
                "episode_length",
                float(np.mean(rollout.episode_lengths)),
                on_step=True,
                on_epoch=False,
            )

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.lr_scheduler_interval == "epoch":
            scheduler.step()

    # --- evaluation ----------------------------------------------------------------------
    def test_step(self, batch: Any, batch_idx: int) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        result = self.evaluate(
            num_episodes=getattr(dm, "eval_episodes", 64),
            seed=getattr(dm, "eval_seed", 10_000),
            deterministic=getattr(dm, "deterministic", False),
        )
        self.log("test/episode_return", result["return_mean"], batch_size=1)
        self.log("test/episode_return_std", result["return_std"], batch_size=1)

    @torch.no_grad()
    def evaluate(
        self, num_episodes: int = 64, seed: int = 10_000, deterministic: bool = False
    ) -> dict[str, float]:
        """Mean undiscounted return over ``num_episodes`` fresh episodes (new environments,
        seeds ``seed, seed + 1, ...``; the policy samples unless ``deterministic``)."""
        was_training = self.agent.training
        self.agent.eval()
        collector = self.make_collector(seed=seed, deterministic=deterministic)
        returns: list[float] = []
        try:
            while len(returns) < num_episodes:
                returns += collector.collect().episode_returns
        finally:
            collector.envs.close()
            self.agent.train(was_training)
        returns = returns[:num_episodes]
        return {
            "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            "episodes": float(len(returns)),
        }
