"""Observation/action encodings, the previous-action wrapper, popgym ids and meta-CartPole."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from mixerzoo.rl.icrl.envs import (
    MetaCartPole,
    PreviousActionObservation,
    make_env,
    make_vector_env,
    max_episode_steps_of,
)
from mixerzoo.rl.spaces import (
    UnsupportedSpaceError,
    action_spec,
    encode_action,
    encode_observation,
    observation_size,
)


def test_observation_encodings_by_hand():
    assert encode_observation(spaces.Discrete(3, start=1), 2).tolist() == [0, 1, 0]
    multi = spaces.MultiDiscrete([2, 3])
    assert encode_observation(multi, [1, 2]).tolist() == [0, 1, 0, 0, 1]
    box = spaces.Box(-1, 1, (2, 2))
    assert encode_observation(box, [[0.5, -0.5], [1, 0]]).tolist() == [0.5, -0.5, 1, 0]
    tup = spaces.Tuple((spaces.Discrete(2), spaces.MultiBinary(2)))
    assert encode_observation(tup, (1, [1, 0])).tolist() == [0, 1, 1, 0]
    assert observation_size(tup) == 4
    d = spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Box(0, 1, (1,))})
    assert encode_observation(d, {"b": [0.25], "a": 0}).tolist() == [1, 0, 0.25]


def test_action_encodings_by_hand():
    assert encode_action(spaces.Discrete(4), 2).tolist() == [0, 0, 1, 0]
    assert encode_action(spaces.MultiDiscrete([2, 3]), [1, 0]).tolist() == [0, 1, 1, 0, 0]
    assert encode_action(spaces.Box(-2, 2, (2,)), [0.5, -1]).tolist() == [0.5, -1]
    spec = action_spec(spaces.MultiDiscrete([8, 8]))
    assert (spec.kind, spec.sizes, spec.n_outputs) == ("discrete", (8, 8), 16)


@pytest.mark.parametrize(
    "space, role",
    [
        (spaces.Text(5), "observation"),
        (spaces.MultiDiscrete([[2, 2], [2, 2]]), "observation"),
        (spaces.Graph(spaces.Box(0, 1, (1,)), None), "observation"),
        (spaces.Text(5), "action"),
        (spaces.Box(0, 1, (2, 2)), "action"),
        (spaces.MultiBinary(3), "action"),
    ],
)
def test_unsupported_spaces_name_the_space(space, role):
    with pytest.raises(UnsupportedSpaceError, match=type(space).__name__) as err:
        observation_size(space) if role == "observation" else action_spec(space)
    assert role in str(err.value)


def test_previous_action_wrapper_on_popgym():
    env = PreviousActionObservation(make_env("RepeatPreviousEasy"))
    raw = make_env("popgym-RepeatPreviousEasy-v0")
    obs, _ = env.reset(seed=3)
    raw_obs, _ = raw.reset(seed=3)
    assert obs.shape == (4 + 4 + 1,)
    assert obs[:4].tolist() == np.eye(4)[raw_obs].tolist()
    assert obs[4:].tolist() == [0, 0, 0, 0, 1]  # no previous action, episode start
    obs, reward, *_ = env.step(2)
    raw_obs, raw_reward, *_ = raw.step(2)
    assert obs[:4].tolist() == np.eye(4)[raw_obs].tolist()
    assert obs[4:].tolist() == [0, 0, 1, 0, 0]
    assert reward == raw_reward


class _NaNReward(gym.Env):
    observation_space = spaces.Box(-1, 1, (2,))
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), float("nan"), False, False, {}


def test_nan_reward_is_a_clear_error():
    env = PreviousActionObservation(_NaNReward())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="non-finite reward.*step 1"):
        env.step(0)


def test_make_env_names():
    assert make_env("CountRecallEasy").spec.id == "popgym-CountRecallEasy-v0"
    with pytest.raises(ValueError, match="unknown environment 'NoSuchEnv'"):
        make_env("NoSuchEnv")
    assert max_episode_steps_of("RepeatPreviousEasy") == 51
    assert max_episode_steps_of("PositionOnlyCartPoleEasy") == 200
    assert max_episode_steps_of("MetaCartPole", n_trials=3, trial_steps=7) == 21
    assert max_episode_steps_of("RepeatPreviousEasy", max_episode_steps=20) == 20


def test_meta_cartpole_follows_the_cartpole_dynamics():
    """The inner dynamics are gymnasium's CartPole (the same Euler equations), an independent
    implementation: states agree step by step until the pole falls."""
    env = MetaCartPole(n_trials=1, trial_steps=500)
    env.reset(seed=5)
    reference = CartPoleEnv()
    reference.reset(seed=0)
    reference.state = env._state.copy()
    rng = np.random.default_rng(0)
    for _ in range(200):
        action = int(rng.integers(2))
        _, _, terminated, _, info = env.step(action)
        ref_state, _, ref_done, _, _ = reference.step(action)
        if ref_done:
            assert info["trial_failed"]
            break
        np.testing.assert_allclose(env._state, ref_state, rtol=1e-5, atol=1e-6)
    else:
        pytest.fail("a random policy should drop the pole within 200 steps")


def test_meta_cartpole_trials_and_projection():
    env = MetaCartPole(n_trials=3, trial_steps=5)
    obs, _ = env.reset(seed=1)
    projection = env._projection.copy()
    # An orthogonal [4, 2] map with gain sqrt(2): W^T W = 2 I.
    np.testing.assert_allclose(projection.T @ projection, 2 * np.eye(2), atol=1e-12)
    x, _, theta, _ = env._initial
    np.testing.assert_allclose(obs[:4], projection @ [x, theta], rtol=1e-6)
    assert obs[4] == 0
    total, steps, flags = 0.0, 0, []
    while True:
        obs, reward, terminated, truncated, info = env.step(1)
        total, steps = total + reward, steps + 1
        flags.append(obs[4])
        assert not truncated
        if terminated:
            break
        np.testing.assert_array_equal(env._projection, projection)  # fixed across trials
    assert steps == 15 and total == pytest.approx(3.0)  # 3 trials of 5 steps, 1/5 per step
    assert flags == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    env.reset(seed=2)
    assert not np.allclose(env._projection, projection)  # a new map per episode
    redraw = MetaCartPole(n_trials=2, trial_steps=2, redraw_per_trial=True)
    redraw.reset(seed=1)
    first = redraw._projection.copy()
    redraw.step(0)
    redraw.step(0)
    assert not np.allclose(redraw._projection, first)


def test_vector_env_is_seeded():
    a = make_vector_env("MetaCartPole", 2, seed=7, n_trials=2, trial_steps=5)
    b = make_vector_env("MetaCartPole", 2, seed=7, n_trials=2, trial_steps=5)
    np.testing.assert_array_equal(a.first_obs, b.first_obs)
    assert not np.allclose(a.first_obs[0], a.first_obs[1])
    for _ in range(12):
        oa = a.step(np.array([0, 1]))[0]
        ob = b.step(np.array([0, 1]))[0]
        np.testing.assert_array_equal(oa, ob)
