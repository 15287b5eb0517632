"""mixerzoo.core: the sequence mixers, their kernels, the residual block and the registry.

Public API::

    from mixerzoo.core import create_mixer, list_mixers, Block
"""

from mixerzoo.core import mixers as _mixers  # noqa: F401  (registers the mixers)
from mixerzoo.core.blocks import Block
from mixerzoo.core.dropout import Dropout
from mixerzoo.core.layers import GLU, MLP, DropPath, ScaleNorm, get_activation, make_norm
from mixerzoo.core.mixers.base import Mixer
from mixerzoo.core.registry import (
    UnknownNameError,
    create_mixer,
    create_model,
    get_mixer_class,
    get_model_class,
    list_mixers,
    list_models,
    register_mixer,
    register_model,
)
from mixerzoo.core.state import reset_state, select_state, state_to

__all__ = [
    "Mixer",
    "Block",
    "MLP",
    "GLU",
    "ScaleNorm",
    "reset_state",
    "select_state",
    "state_to",
    "DropPath",
    "Dropout",
    "get_activation",
    "make_norm",
    "create_mixer",
    "list_mixers",
    "get_mixer_class",
    "register_mixer",
    "create_model",
    "list_models",
    "get_model_class",
    "register_model",
    "UnknownNameError",
]
