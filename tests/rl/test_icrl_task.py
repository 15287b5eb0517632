"""PPOTask through Lightning: every backbone trains, seeds reproduce, bad inputs are refused."""

import gymnasium as gym
import pytest
import pytorch_lightning as pl
import torch
from gymnasium import spaces

from mixerzoo.rl import ContextTooLongError, PPOTask, RolloutDataModule, UnsupportedSpaceError

TINY = dict(
    num_envs=4,
    num_steps=16,
    update_epochs=2,
    num_minibatches=2,
    d_model=16,
    encoder_hidden=8,
    head_hidden=8,
    updates_per_epoch=2,
)


def _fit(task: PPOTask, epochs: int = 1, data=None) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=data)
    return trainer


@pytest.mark.parametrize(
    "mixer, kwargs",
    [
        ("s5", {"mixer_kwargs": {"d_state": 8, "activation": "full_glu"}, "n_layers": 2}),
        ("gru", {"n_layers": 1}),
        ("lstm", {"n_layers": 1}),
        ("attention", {"mixer_kwargs": {"n_heads": 2}, "n_layers": 1}),
        ("none", {}),
    ],
)
def test_every_backbone_trains_and_logs_returns(mixer, kwargs):
    task = PPOTask(env="RepeatPreviousEasy", mixer=mixer, **TINY, **kwargs)
    before = [p.detach().clone() for p in task.parameters()]
    trainer = _fit(task, epochs=2)
    assert task.env_steps == 4 * 16 * 4
    metrics = trainer.logged_metrics
    # RepeatPreviousEasy pays +-1/48 per step from step 5 on: returns lie in [-1, 1].
    assert -1.0 <= float(metrics["episode_return"]) <= 1.0
    assert float(metrics["env_steps"]) == 4 * 16 * 4
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters()))
    if mixer == "attention":
        assert task.agent.backbone.context_len == 51  # the longest RepeatPreviousEasy episode


def test_seeds_reproduce_the_run():
    weights = []
    for _ in range(2):
        pl.seed_everything(3)
        task = PPOTask(env="CountRecallEasy", mixer="gru", n_layers=1, env_seed=5, **TINY)
        _fit(task)
        weights.append([p.detach().clone() for p in task.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_test_split_evaluates_fresh_episodes():
    task = PPOTask(
        env="MetaCartPole",
        env_kwargs={"n_trials": 2, "trial_steps": 5},
        mixer="s5",
        mixer_kwargs={"d_state": 8},
        n_layers=1,
        **TINY,
    )
    data = RolloutDataModule(eval_episodes=3, eval_seed=99)
    trainer = _fit(task, data=data)
    result = trainer.test(task, datamodule=data, verbose=False)[0]
    # Every step of a trial pays 1/5; an episode is 2 trials of at most 5 steps: return <= 2.
    assert 0.2 <= result["test/episode_return"] <= 2.0


def test_continuous_and_multi_discrete_actions():
    pend = PPOTask(env="PositionOnlyPendulumEasy", mixer="gru", n_layers=1, **TINY)
    assert pend.agent.action.kind == "continuous" and pend.agent.log_std is not None
    _fit(pend)
    ship = PPOTask(env="BattleshipEasy", mixer="gru", n_layers=1, **TINY)
    assert ship.agent.action.sizes == (8, 8)
    _fit(ship)


class _TextObs(gym.Env):
    observation_space = spaces.Text(8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return "hello", {}

    def step(self, action):
        return "hello", 0.0, False, False, {}


def test_unsupported_space_names_it():
    gym.register("mixerzoo-test/TextObs-v0", entry_point=_TextObs)
    try:
        with pytest.raises(UnsupportedSpaceError, match=r"Text\("):
            PPOTask(env="mixerzoo-test/TextObs-v0", **TINY)
    finally:
        gym.registry.pop("mixerzoo-test/TextObs-v0")


def test_episodes_longer_than_the_context_are_refused():
    with pytest.raises(ContextTooLongError, match="51 steps is longer than the configured context"):
        PPOTask(env="RepeatPreviousEasy", mixer="attention", context_len=20, **TINY)
    ok = PPOTask(
        env="RepeatPreviousEasy", mixer="attention", context_len=20, max_episode_steps=20, **TINY
    )
    assert ok.agent.backbone.context_len == 20


def test_bad_settings():
    with pytest.raises(ValueError, match="multiple of num_minibatches"):
        PPOTask(**{**TINY, "num_minibatches": 3})
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        PPOTask(**{**TINY, "num_steps": 0})
