"""PPO pieces: GAE against a direct sum, truncation vs termination bootstrapping, rollouts that
the parallel forward reproduces, and the clipped objective at the acting policy."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from mixerzoo.core.testing import assert_close
from mixerzoo.rl.backbone import ContextTooLongError
from mixerzoo.rl.icrl.agent import ActorCritic
from mixerzoo.rl.icrl.envs import PreviousActionObservation
from mixerzoo.rl.icrl.ppo import RolloutCollector, compute_gae, ppo_loss
from mixerzoo.rl.spaces import action_spec


def _gae_by_sums(rewards, values, dones, last_value, gamma, lam):
    """A_t = sum_k (gamma lam)^k delta_{t+k}, stopping after the first done step."""
    n, t = rewards.shape
    nxt = torch.cat([values[:, 1:], last_value[:, None]], 1)
    delta = rewards + gamma * nxt * (~dones) - values
    adv = torch.zeros_like(rewards)
    for b in range(n):
        for i in range(t):
            total, weight = 0.0, 1.0
            for k in range(i, t):
                total += weight * delta[b, k]
                if dones[b, k]:
                    break
                weight *= gamma * lam
            adv[b, i] = total
    return adv


def test_gae_matches_the_direct_sum():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 9, dtype=torch.float64), torch.randn(3, 9, dtype=torch.float64)
    dones = torch.rand(3, 9) < 0.3
    last = torch.randn(3, dtype=torch.float64)
    adv, ret = compute_gae(rewards, values, dones, last, 0.9, 0.8)
    assert_close(adv, _gae_by_sums(rewards, values, dones, last, 0.9, 0.8))
    assert_close(ret, adv + values)
    # lambda = 1 and no done: the discounted return bootstrapped from the last value.
    adv, ret = compute_gae(
        rewards[:1], values[:1], torch.zeros(1, 9, dtype=torch.bool), last[:1], 0.9, 1.0
    )
    expected = sum(0.9**k * rewards[0, k] for k in range(9)) + 0.9**9 * last[0]
    assert ret[0, 0].item() == pytest.approx(expected.item())


class _Chain(gym.Env):
    """Reward 1 per step; terminates at ``terminate_at`` steps (when given)."""

    observation_space = spaces.Box(-5, 5, (2,))
    action_space = spaces.Discrete(2)

    def __init__(self, terminate_at=None):
        self.terminate_at = terminate_at

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.standard_normal(2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.standard_normal(2).astype(np.float32)
        done = self.terminate_at is not None and self.t >= self.terminate_at
        return obs, 1.0, done, False, {}


def _collector(env_fn, n_envs, steps, mixer="gru", gamma=0.9):
    envs = gym.vector.SyncVectorEnv(
        [lambda: PreviousActionObservation(env_fn()) for _ in range(n_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    envs.first_obs, _ = envs.reset(seed=list(range(n_envs)))
    torch.manual_seed(0)
    agent = ActorCritic(
        envs.single_observation_space.shape[0],
        action_spec(envs.single_action_space),
        mixer=mixer,
        d_model=8,
        n_layers=1,
        mixer_kwargs={"d_state": 8} if mixer == "s5" else None,
        encoder_hidden=8,
        head_hidden=8,
    )
    return RolloutCollector(envs, agent, steps, gamma), agent


def test_truncation_bootstraps_from_the_final_observation_termination_does_not():
    gamma = 0.9
    collector, agent = _collector(
        lambda: gym.wrappers.TimeLimit(_Chain(), max_episode_steps=4), 2, 10, gamma=gamma
    )
    envs = collector.envs
    # Record the final observations the vector env reports, to recompute the values by hand.
    finals, step = [], envs.step

    def recording_step(actions):
        out = step(actions)
        finals.append(out[-1].get("final_obs"))
        return out

    envs.step = recording_step
    rollout = collector.collect()
    assert rollout.dones.sum() == 2 * 2  # episodes end at steps 4 and 8 in both streams
    for row in range(2):
        ends = rollout.dones[row].nonzero().flatten().tolist()
        for end in ends:
            start = end - 3
            episode = rollout.obs[row : row + 1, start : end + 1]
            final = torch.as_tensor(finals[end][row], dtype=torch.float32).view(1, 1, -1)
            # Independent value: the parallel forward over the episode and its final observation.
            with torch.no_grad():
                out, _ = agent(torch.cat([episode, final], 1))
            bootstrap = rollout.rewards[row, end] - 1.0
            assert bootstrap.item() == pytest.approx(gamma * out.value[0, -1].item(), abs=1e-5)
        others = [i for i in range(10) if i not in ends]
        assert torch.all(rollout.rewards[row, others] == 1.0)
    assert rollout.episode_returns == [4.0] * 4  # the logged returns are the environment's

    terminating, _ = _collector(lambda: _Chain(terminate_at=3), 2, 7)
    rollout = terminating.collect()
    assert torch.all(rollout.rewards == 1.0)  # nothing added at terminations
    assert rollout.dones[:, [2, 5]].all()


@pytest.mark.parametrize("mixer", ["s5", "gru"])
def test_rollout_is_reproduced_by_the_parallel_forward(mixer):
    """What the agent computed while acting (values, log-probabilities) is what training
    recomputes over the whole stream from the rollout's initial state with its resets; and the
    next rollout starts from the state the previous one ended in."""
    collector, agent = _collector(lambda: _Chain(terminate_at=5), 3, 12, mixer=mixer)
    first = collector.collect()
    second = collector.collect()
    for rollout in (first, second):
        with torch.no_grad():
            out, _ = agent(rollout.obs, rollout.init_state, reset=rollout.starts)
        assert_close(out.value, rollout.values)
        assert_close(out.log_prob(rollout.actions), rollout.log_probs)
    with torch.no_grad():
        _, end_state = agent(first.obs, first.init_state, reset=first.starts)
    assert_close(second.init_state[0], end_state[0])
    assert second.starts[:, 0].tolist() == first.dones[:, -1].tolist()


def test_ppo_loss_at_the_acting_policy():
    collector, agent = _collector(lambda: _Chain(terminate_at=5), 4, 8)
    rollout = collector.collect()
    rollout.advantages, rollout.returns = compute_gae(
        rollout.rewards, rollout.values, rollout.dones, rollout.last_value, 0.9, 0.95
    )
    index = torch.tensor([1, 3])
    batch = rollout.minibatch(index)
    assert_close(batch["values"], rollout.values[index])
    loss, stats = ppo_loss(agent, batch, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01)
    # Ratios are 1: no clipping, zero KL, and the normalised advantages average to zero.
    assert stats["clip_fraction"].item() == 0.0
    assert abs(stats["approx_kl"].item()) < 1e-6
    assert abs(stats["actor_loss"].item()) < 1e-5
    value_loss = 0.5 * (rollout.values[index] - rollout.returns[index]).square().mean()
    assert stats["value_loss"].item() == pytest.approx(value_loss.item(), rel=1e-5)
    assert loss.item() == pytest.approx(
        (0.5 * value_loss - 0.01 * stats["entropy"]).item(), abs=1e-5
    )


def test_nan_rewards_stop_the_collector():
    class _Bad(_Chain):
        def step(self, action):
            obs, _, term, trunc, info = super().step(action)
            return obs, float("nan") if self.t == 2 else 0.0, term, trunc, info

    collector, _ = _collector(_Bad, 2, 5)
    with pytest.raises(ValueError, match="non-finite reward"):
        collector.collect()


def test_episode_longer_than_the_attention_context_is_an_error():
    collector, agent = _collector(_Chain, 2, 12, mixer="gru")
    agent.backbone.context_len = 6  # as an attention backbone configured for 6 steps
    with pytest.raises(ContextTooLongError, match="longer than the configured context"):
        collector.collect()
