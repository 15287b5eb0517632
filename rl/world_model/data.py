"""Episodes for world models: collection with an exploration policy, an on-disk replay set, and
the sequence batches a world model trains on.

- :func:`collect_episodes` runs an environment with its scripted explorer (or a uniformly random
  policy) and writes one ``episode_NNNNNN.npz`` per episode into a folder with a
  ``manifest.json`` that records what was collected (environment, its arguments, policy, seeds).
- :class:`EpisodeReplay` is that folder: it lists, loads and extends the episodes; a folder whose
  manifest does not match the request is refused, not silently mixed.
- :class:`SequenceDataset` cuts windows of ``seq_len`` steps out of the episodes, aligned as the
  world model reads them: frame ``x_t``, the action ``a_{t-1}`` that led to it (zeros at an
  episode's first frame), the reward ``r_t`` received on arriving, and whether ``x_t`` starts
  the episode.
- :class:`WorldModelDataModule` ties them together for Lightning (collects on first use).

Episode file: ``obs`` ``uint8 [T + 1, H, W, C]`` (the first frame and one per step), ``action``
``int64 [T]``, ``reward`` ``float32 [T]``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mixerzoo.rl.world_model.envs import make_world_model_env

__all__ = [
    "collect_episodes",
    "EpisodeReplay",
    "SequenceDataset",
    "WorldModelDataModule",
    "ReplayMismatchError",
]


class ReplayMismatchError(ValueError):
    """A replay folder holds episodes of another environment, policy or seed."""


def _policy_action(env, policy: str, rng: np.random.Generator) -> int:
    if policy == "scripted":
        scripted = getattr(env.unwrapped, "scripted_action", None)
        if scripted is None:
            raise ValueError(
                f"{type(env.unwrapped).__name__} has no scripted_action(); use policy='random'"
            )
        return int(scripted())
    return int(rng.integers(env.action_space.n))


def collect_episode(
    env, policy: str, seed: int, max_steps: int | None = None
) -> dict[str, np.ndarray]:
    """Run one episode (reset with ``seed``) and return its arrays (see the module docstring)."""
    if policy not in ("scripted", "random"):
        raise ValueError(f"policy must be 'scripted' or 'random', got {policy!r}")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames, actions, rewards = [obs], [], []
    while True:
        action = _policy_action(env, policy, rng)
        obs, reward, terminated, truncated, _ = env.step(action)
        if not np.isfinite(reward):
            raise ValueError(
                f"collect_episode: the environment returned a non-finite reward ({reward!r}) at "
                f"step {len(actions) + 1}"
            )
        frames.append(obs)
        actions.append(action)
        rewards.append(reward)
        if terminated or truncated or (max_steps is not None and len(actions) >= max_steps):
            break
    return {
        "obs": np.stack(frames).astype(np.uint8),
        "action": np.asarray(actions, dtype=np.int64),
        "reward": np.asarray(rewards, dtype=np.float32),
    }


class EpisodeReplay:
    """An on-disk set of episodes (``episode_NNNNNN.npz`` + ``manifest.json``).

    Args:
        root: the folder.
        manifest: what the episodes must be (environment, arguments, policy, seed); compared
            with the folder's manifest when it exists, written when it does not.

    Raises:
        ReplayMismatchError: the folder's manifest differs from ``manifest``.
    """

    def __init__(self, root: str | Path, manifest: dict[str, Any]):
        self.root = Path(root)
        self.manifest = json.loads(json.dumps(manifest))  # plain JSON values only
        path = self.root / "manifest.json"
        if path.exists():
            found = json.loads(path.read_text())
            if found != self.manifest:
                raise ReplayMismatchError(
                    f"replay folder {self.root} holds other episodes: its manifest is {found}, "
                    f"the request is {self.manifest}; use another root or delete the folder"
                )
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.manifest, indent=1, sort_keys=True))

    def files(self) -> list[Path]:
        return sorted(self.root.glob("episode_*.npz"))

    def __len__(self) -> int:
        return len(self.files())

    def add(self, episode: dict[str, np.ndarray], index: int) -> Path:
        path = self.root / f"episode_{index:06d}.npz"
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **episode)
        tmp.replace(path)  # a half-written episode never looks complete
        return path

    def load(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self.root / f"episode_{index:06d}.npz") as data:
            return {key: data[key] for key in data.files}


def collect_episodes(
    env: str,
    n_episodes: int,
    root: str | Path,
    policy: str = "scripted",
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> EpisodeReplay:
    """Collect episodes ``0 .. n_episodes - 1`` (environment seeds ``seed + i``) into ``root``,
    skipping those already there.

    Returns:
        The :class:`EpisodeReplay` of ``root``.
    """
    env_kwargs = dict(env_kwargs or {})
    manifest = {"env": env, "env_kwargs": env_kwargs, "policy": policy, "seed": seed}
    replay = EpisodeReplay(root, manifest)
    instance = None
    for i in range(n_episodes):
        if (replay.root / f"episode_{i:06d}.npz").exists():
            continue
        if instance is None:
            instance = make_world_model_env(env, **env_kwargs)
        replay.add(collect_episode(instance, policy, seed + i), i)
    if instance is not None:
        instance.close()
    return replay


def _n_actions(replay: EpisodeReplay) -> int:
    env = make_world_model_env(replay.manifest["env"], **replay.manifest["env_kwargs"])
    space = env.action_space
    env.close()
    if not hasattr(space, "n"):
        raise TypeError(
            f"world models here take Discrete action spaces; {replay.manifest['env']} has {space!r}"
        )
    return int(space.n)


def default_replay_root() -> Path:
    """``$MIXERZOO_DATA/rl/world_model``, or ``~/.cache/mixerzoo/rl/world_model``."""
    base = os.environ.get("MIXERZOO_DATA")
    if base:
        return Path(base) / "rl" / "world_model"
    return Path.home() / ".cache" / "mixerzoo" / "rl" / "world_model"


class SequenceDataset(Dataset):
    """Windows of ``seq_len`` steps from a list of episodes.

    Args:
        episodes: episode dicts (see the module docstring).
        seq_len: window length (frames).
        n_actions: size of the one-hot action encoding.
        windows: number of items; ``None``: one window per episode starting at its first frame
            (evaluation). Otherwise items draw a random episode and offset from torch's RNG.

    Items: ``obs`` ``float32 [L, C, H, W]`` in ``[0, 1]``, ``action`` ``float32 [L, A]`` (one-hot of
    the previous action, zeros at an episode start), ``reward`` ``float32 [L]``, ``start`` ``bool
    [L]``.

    Raises:
        ValueError: an episode is shorter than ``seq_len``.
    """

    def __init__(
        self,
        episodes: list[dict[str, np.ndarray]],
        seq_len: int,
        n_actions: int,
        windows: int | None = None,
    ):
        if not episodes:
            raise ValueError("SequenceDataset: no episodes")
        shortest = min(len(ep["obs"]) for ep in episodes)
        if seq_len < 1 or seq_len > shortest:
            raise ValueError(
                f"SequenceDataset: seq_len {seq_len} must be in [1, {shortest}] (the shortest "
                f"episode has {shortest} frames); lower seq_len or collect longer episodes"
            )
        self.episodes = episodes
        self.seq_len = seq_len
        self.n_actions = n_actions
        self.windows = windows

    def __len__(self) -> int:
        return len(self.episodes) if self.windows is None else self.windows

    def window(self, episode: int, start: int) -> dict[str, torch.Tensor]:
        """The window of episode ``episode`` that starts at frame ``start``."""
        ep = self.episodes[episode]
        end = start + self.seq_len
        obs = torch.from_numpy(ep["obs"][start:end]).permute(0, 3, 1, 2).float() / 255.0
        prev = np.zeros((self.seq_len, self.n_actions), dtype=np.float32)
        reward = np.zeros(self.seq_len, dtype=np.float32)
        for k in range(self.seq_len):
            t = start + k
            if t > 0:
                prev[k, ep["action"][t - 1]] = 1.0
                reward[k] = ep["reward"][t - 1]
        begin = torch.zeros(self.seq_len, dtype=torch.bool)
        begin[0] = start == 0
        return {
            "obs": obs,
            "action": torch.from_numpy(prev),
            "reward": torch.from_numpy(reward),
            "start": begin,
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.windows is None:
            return self.window(index, 0)
        episode = int(torch.randint(len(self.episodes), ()).item())
        last = len(self.episodes[episode]["obs"]) - self.seq_len
        return self.window(episode, int(torch.randint(last + 1, ()).item()))


class WorldModelDataModule(pl.LightningDataModule):
    """Episodes of a memory environment as training and validation sequences.

    Training, validation and test episodes are separate collections (seeds ``seed + i``,
    ``seed + 1_000_000 + i`` and ``seed + 2_000_000 + i``) under
    ``root/<env>-<policy>-seed<seed>-<hash of env_kwargs>/{train,val,test}``; they are collected
    by ``prepare_data``
    when missing and reused otherwise. Validation and test windows start at each episode's first
    frame.

    Args:
        env: environment name (see :func:`~mixerzoo.rl.world_model.envs.make_world_model_env`).
        env_kwargs: its arguments.
        root: replay folder; default ``$MIXERZOO_DATA/rl/world_model`` when ``MIXERZOO_DATA``
            is set, else ``~/.cache/mixerzoo/rl/world_model`` (collected episodes are generated
            data: a cache, not a download).
        train_episodes: episodes to train on.
        val_episodes: episodes to validate on.
        test_episodes: episodes to test on.
        policy: ``"scripted"`` (the environment's explorer) or ``"random"``.
        seq_len: training window length.
        val_seq_len: validation and test window length (default: ``seq_len``).
        batch_size: windows per batch.
        windows_per_epoch: training windows per epoch.
        num_workers: DataLoader workers.
        seed: collection seed.
    """

    def __init__(
        self,
        env: str = "FourRooms",
        env_kwargs: dict[str, Any] | None = None,
        root: str | None = None,
        train_episodes: int = 200,
        val_episodes: int = 16,
        test_episodes: int = 16,
        policy: str = "scripted",
        seq_len: int = 200,
        val_seq_len: int | None = None,
        batch_size: int = 16,
        windows_per_epoch: int = 1600,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.env = env
        self.env_kwargs = dict(env_kwargs or {})
        # Environment arguments are part of the folder name (a short hash), so that episodes of
        # differently configured environments never share a folder.
        digest = hashlib.sha1(json.dumps(self.env_kwargs, sort_keys=True).encode()).hexdigest()
        self.root = default_replay_root() if root is None else Path(root)
        self.root = self.root / f"{env}-{policy}-seed{seed}-{digest[:8]}"
        self.train_episodes, self.val_episodes = train_episodes, val_episodes
        self.test_episodes = test_episodes
        self.policy, self.seed = policy, seed
        self.seq_len = seq_len
        self.val_seq_len = val_seq_len or seq_len
        self.batch_size = batch_size
        self.windows_per_epoch = windows_per_epoch
        self.num_workers = num_workers
        self.train_set: SequenceDataset | None = None
        self.val_set: SequenceDataset | None = None
        self.test_set: SequenceDataset | None = None

    def _collect(self, split: str) -> EpisodeReplay:
        n = {"train": self.train_episodes, "val": self.val_episodes, "test": self.test_episodes}
        offset = {"train": 0, "val": 1_000_000, "test": 2_000_000}[split]
        return collect_episodes(
            self.env,
            n[split],
            self.root / split,
            policy=self.policy,
            seed=self.seed + offset,
            env_kwargs=self.env_kwargs,
        )

    def prepare_data(self) -> None:
        for split in ("train", "val", "test"):
            self._collect(split)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val, test = (self._collect(split) for split in ("train", "val", "test"))
        train_eps = [train.load(i) for i in range(self.train_episodes)]
        val_eps = [val.load(i) for i in range(self.val_episodes)]
        test_eps = [test.load(i) for i in range(self.test_episodes)]
        self.n_actions = _n_actions(train)
        self.obs_shape = tuple(train_eps[0]["obs"].shape[1:])
        self.train_set = SequenceDataset(
            train_eps, self.seq_len, self.n_actions, windows=self.windows_per_epoch
        )
        self.val_set = SequenceDataset(val_eps, self.val_seq_len, self.n_actions)
        self.test_set = SequenceDataset(test_eps, self.val_seq_len, self.n_actions)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
