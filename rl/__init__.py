"""mixerzoo.rl: world models and in-context RL agents with swappable sequence backbones.

Two papers, one mixer contract: the same stack of core mixers (S4D, S5, attention, GRU, LSTM)
behind

- :mod:`mixerzoo.rl.world_model` — S4WM ("Facing Off World Model Backbones: RNNs, Transformers,
  and S4", arXiv 2307.02064) on small top-down memory environments;
- :mod:`mixerzoo.rl.icrl` — in-context RL with PPO over environment streams and resettable
  backbones ("Structured State Space Models for In-Context Reinforcement Learning", arXiv
  2303.03982) on popgym and the random-projection meta-CartPole.

Public API::

    from mixerzoo.rl import PPOTask, WorldModelTask, WorldModelDataModule, S4WM, MixerStack

The domain plugs into core with the entry point ``rl = "mixerzoo.rl"`` (group
``mixerzoo.domains``); its third-party packages are the extra ``mixerzoo[rl]``.
"""

from mixerzoo.core.plugins import require

for _module in ("gymnasium", "popgym", "matplotlib"):
    require(_module, extra="rl")

from mixerzoo.rl.backbone import ContextTooLongError, MixerStack  # noqa: E402
from mixerzoo.rl.icrl import (  # noqa: E402
    ActorCritic,
    MetaCartPole,
    PPOTask,
    RolloutDataModule,
    make_vector_env,
)
from mixerzoo.rl.spaces import UnsupportedSpaceError  # noqa: E402
from mixerzoo.rl.world_model import (  # noqa: E402
    S4WM,
    ImaginationWriter,
    WorldModelDataModule,
    WorldModelTask,
    make_world_model_env,
)

__all__ = [
    "ContextTooLongError",
    "MixerStack",
    "UnsupportedSpaceError",
    "ActorCritic",
    "RolloutDataModule",
    "MetaCartPole",
    "PPOTask",
    "make_vector_env",
    "S4WM",
    "ImaginationWriter",
    "WorldModelDataModule",
    "WorldModelTask",
    "make_world_model_env",
]
