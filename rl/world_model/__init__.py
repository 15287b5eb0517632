"""S4WM world models on memory environments.

"Facing Off World Model Backbones: RNNs, Transformers, and S4" (Deng, Park and Ahn, 2023, arXiv
2307.02064): a world model with a per-frame posterior and a parallel backbone — any stack of
core mixers (S4D by default; S5, attention, GRU by one argument) — trained on episodes of small
top-down memory environments, and evaluated by the generation MSE of imagined frames.

Public API::

    from mixerzoo.rl.world_model import S4WM, WorldModelTask, WorldModelDataModule
    from mixerzoo.rl.world_model import make_world_model_env, imagination_mse
"""

from mixerzoo.rl.world_model.data import (
    EpisodeReplay,
    ReplayMismatchError,
    SequenceDataset,
    WorldModelDataModule,
    collect_episode,
    collect_episodes,
)
from mixerzoo.rl.world_model.envs import (
    WORLD_MODEL_ENVS,
    DistractingMemory,
    GridMemoryEnv,
    MultiDoorsKeys,
    MultiRoom,
    Teleport,
    make_world_model_env,
)
from mixerzoo.rl.world_model.evaluate import imagination_mse, mse_table, plot_mse, save_strip
from mixerzoo.rl.world_model.model import S4WM, kl_balanced
from mixerzoo.rl.world_model.task import ImaginationWriter, WorldModelTask

__all__ = [
    "EpisodeReplay",
    "ReplayMismatchError",
    "SequenceDataset",
    "WorldModelDataModule",
    "collect_episode",
    "collect_episodes",
    "WORLD_MODEL_ENVS",
    "DistractingMemory",
    "GridMemoryEnv",
    "MultiDoorsKeys",
    "MultiRoom",
    "Teleport",
    "make_world_model_env",
    "imagination_mse",
    "mse_table",
    "plot_mse",
    "save_strip",
    "S4WM",
    "kl_balanced",
    "ImaginationWriter",
    "WorldModelTask",
]
