"""In-context RL: PPO over environment streams with resettable sequence backbones.

"Structured State Space Models for In-Context Reinforcement Learning" (Lu et al., 2023, arXiv
2303.03982), after its official JAX code (popjaxrl): an actor-critic whose backbone (S5 by
default; GRU, LSTM, attention or none by one argument) runs over whole streams of episodes, its
state reset at episode boundaries, trained with PPO on popgym's memory suite and the
random-projection meta-CartPole.

Public API::

    from mixerzoo.rl.icrl import PPOTask, ActorCritic, make_vector_env, MetaCartPole
"""

from mixerzoo.rl.icrl.agent import ActorCritic, PolicyOutput
from mixerzoo.rl.icrl.envs import (
    POPGYM_MEMORY_SUITE,
    MetaCartPole,
    PreviousActionObservation,
    make_env,
    make_vector_env,
)
from mixerzoo.rl.icrl.ppo import Rollout, RolloutCollector, compute_gae, ppo_loss
from mixerzoo.rl.icrl.task import PPOTask, RolloutDataModule

__all__ = [
    "ActorCritic",
    "PolicyOutput",
    "POPGYM_MEMORY_SUITE",
    "MetaCartPole",
    "PreviousActionObservation",
    "make_env",
    "make_vector_env",
    "Rollout",
    "RolloutCollector",
    "compute_gae",
    "ppo_loss",
    "PPOTask",
    "RolloutDataModule",
]
