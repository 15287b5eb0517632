"""The memory environments: rendering, seeding, and what each family must be remembered for."""

import numpy as np
import pytest

from mixerzoo.rl.world_model.envs import (
    AGENT_RGB,
    PALETTE,
    WALL_RGB,
    WORLD_MODEL_ENVS,
    DistractingMemory,
    MultiDoorsKeys,
    MultiRoom,
    Teleport,
    make_world_model_env,
)


def _run(env, seed, steps=None):
    obs, _ = env.reset(seed=seed)
    frames, rewards, infos = [obs], [], []
    for _ in range(steps or env.max_steps):
        obs, reward, terminated, truncated, info = env.step(env.scripted_action())
        frames.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            break
    return np.stack(frames), np.array(rewards), infos


@pytest.mark.parametrize("name", sorted(WORLD_MODEL_ENVS))
def test_seeded_fixed_length_uint8_views(name):
    env = make_world_model_env(name, max_steps=60, context_steps=30)
    a, ra, infos = _run(env, seed=4)
    b, rb, _ = _run(make_world_model_env(name, max_steps=60, context_steps=30), seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ra, rb)
    assert a.shape == (61, 28, 28, 3) and a.dtype == np.uint8
    assert infos[28]["phase"] == "context" and infos[29]["phase"] == "query"
    c, _, _ = _run(env, seed=5)
    assert not np.array_equal(a, c)
    # The agent is drawn in the centre cell (pixels 12..15), its inner 2 x 2 pixels white.
    assert (a[:, 13:15, 13:15] == AGENT_RGB).all()


def test_view_is_the_grid_around_the_agent():
    env = MultiRoom(n_rooms=2, room_size=4, view=5, cell_px=1, max_steps=10, context_steps=5)
    obs, _ = env.reset(seed=0)
    r, c = env.agent
    for dr in range(-2, 3):
        for dc in range(-2, 3):
            if dr == dc == 0:
                continue
            rr, cc = r + dr, c + dc
            inside = 0 <= rr < env.walls.shape[0] and 0 <= cc < env.walls.shape[1]
            expected = env.colors[rr, cc] if inside else WALL_RGB
            np.testing.assert_array_equal(obs[2 + dr, 2 + dc], expected)


def test_multiroom_tour_visits_every_room_in_the_context():
    for n_rooms in (2, 4, 10):
        env = MultiRoom(n_rooms=n_rooms, max_steps=300, context_steps=n_rooms * 20)
        env.reset(seed=n_rooms)
        seen = set()
        for _ in range(env.context_steps):
            env.step(env.scripted_action())
            for k in range(n_rooms):
                (r0, r1), (c0, c1) = env._room_box(k)
                if r0 <= env.agent[0] < r1 and c0 <= env.agent[1] < c1:
                    seen.add(k)
        assert seen == set(range(n_rooms)), n_rooms
        assert len(set(env.room_colors.tolist())) == n_rooms  # distinct colours


def test_teleport_returns_to_the_start_view():
    env = Teleport(max_steps=120, context_steps=60)
    frames, _, _ = _run(env, seed=1)
    start = env.start
    np.testing.assert_array_equal(frames[61], frames[0])  # teleported at step 60
    assert start == env.start


def test_multi_doors_keys_rewards_only_doors_of_held_keys():
    env = MultiDoorsKeys(max_steps=200, context_steps=100)
    paid = 0.0
    for seed in range(6):
        env.reset(seed=seed)
        doors = {pos: color for pos, (color, _) in env.doors.items()}
        keys = dict(env.keys)
        total, picked, expected = 0.0, set(), 0.0
        opened = set()
        for _ in range(env.max_steps):
            _, reward, _, truncated, _ = env.step(env.scripted_action())
            pos = tuple(env.agent)
            if pos in keys:
                picked.add(keys.pop(pos))
            if pos in doors and doors[pos] in picked and pos not in opened:
                opened.add(pos)
                expected += 1.0
            total += reward
            if truncated:
                break
        assert total == expected
        paid += total
    assert paid > 0  # the explorer does open doors


def test_distracting_memory_goal_colour_is_the_sum_of_the_cues():
    env = DistractingMemory(n_colors=4, max_steps=80, context_steps=40)
    for seed in range(5):
        env.reset(seed=seed)
        a, b = env.cues
        g0 = env.corridor[1]
        np.testing.assert_array_equal(env.colors[1, g0], PALETTE[(a + b) % 4])
        before = env.colors[env.row, env.corridor[0] : env.corridor[1]].copy()
        env.step(3)
        after = env.colors[env.row, env.corridor[0] : env.corridor[1]]
        assert not np.array_equal(before, after)  # the distractors flicker every step


def test_bad_arguments_and_names():
    with pytest.raises(ValueError, match="view must be an odd int"):
        MultiRoom(view=4)
    with pytest.raises(ValueError, match="context_steps"):
        MultiRoom(max_steps=10, context_steps=20)
    with pytest.raises(ValueError, match="unknown world-model environment"):
        make_world_model_env("NoRooms")
    env = MultiRoom()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be in"):
        env.step(7)


def test_minigrid_ids_give_image_views():
    env = make_world_model_env("MiniGrid-Empty-5x5-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (28, 28, 3) and obs.dtype == np.uint8
