"""Gymnasium spaces as flat float vectors, and the action spaces an agent can act in.

Sequence backbones read one feature vector per step, so every observation is encoded as a flat
``float32`` vector:

- ``Discrete(n, start)`` -> one-hot of length ``n``;
- ``MultiDiscrete(nvec)`` (1-D) -> the one-hots of every entry, concatenated;
- ``MultiBinary(n)`` -> the bits as floats;
- ``Box`` (finite or not, any shape) -> the values, flattened;
- ``Tuple`` / ``Dict`` of supported spaces -> the encodings of the parts, concatenated (``Dict``
  in key order, as gymnasium keeps it).

Anything else (``Text``, ``Graph``, ``Sequence``, ``OneOf``, a ``MultiDiscrete`` of rank > 1) is
refused with an error that names the space. Actions: ``Discrete`` (a categorical policy),
``MultiDiscrete`` (1-D; one categorical per entry) and ``Box`` (1-D; a diagonal Gaussian).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

__all__ = [
    "UnsupportedSpaceError",
    "observation_size",
    "encode_observation",
    "action_spec",
    "ActionSpec",
    "encode_action",
]


class UnsupportedSpaceError(TypeError):
    """An environment's observation or action space that the RL package cannot encode."""


def _unsupported(space: spaces.Space, role: str, why: str) -> UnsupportedSpaceError:
    return UnsupportedSpaceError(
        f"unsupported {role} space {space!r} ({type(space).__name__}): {why}. Supported "
        + (
            "observation spaces: Discrete, MultiDiscrete (1-D), MultiBinary, Box, and Tuple/Dict "
            "of these; wrap the environment to give one of them"
            if role == "observation"
            else "action spaces: Discrete, MultiDiscrete (1-D) and Box (1-D)"
        )
    )


def observation_size(space: spaces.Space) -> int:
    """Length of the flat encoding of an observation of ``space`` (see the module docstring)."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise _unsupported(space, "observation", "only 1-D MultiDiscrete spaces are encoded")
        return int(space.nvec.sum())
    if isinstance(space, spaces.MultiBinary):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Tuple):
        return sum(observation_size(s) for s in space.spaces)
    if isinstance(space, spaces.Dict):
        return sum(observation_size(s) for s in space.spaces.values())
    raise _unsupported(space, "observation", "no flat vector encoding is defined for it")


def encode_observation(space: spaces.Space, obs) -> np.ndarray:
    """The flat ``float32`` encoding ``[observation_size(space)]`` of one observation."""
    if isinstance(space, spaces.Discrete):
        out = np.zeros(int(space.n), dtype=np.float32)
        out[int(obs) - int(space.start)] = 1.0
        return out
    if isinstance(space, spaces.MultiDiscrete):
        observation_size(space)  # rank check
        values = np.asarray(obs, dtype=np.int64) - space.start
        out = np.zeros(int(space.nvec.sum()), dtype=np.float32)
        offsets = np.concatenate([[0], np.cumsum(space.nvec)[:-1]])
        out[offsets + values] = 1.0
        return out
    if isinstance(space, (spaces.MultiBinary, spaces.Box)):
        return np.asarray(obs, dtype=np.float32).reshape(-1)
    if isinstance(space, spaces.Tuple):
        return np.concatenate([encode_observation(s, o) for s, o in zip(space.spaces, obs)])
    if isinstance(space, spaces.Dict):
        return np.concatenate([encode_observation(s, obs[k]) for k, s in space.spaces.items()])
    raise _unsupported(space, "observation", "no flat vector encoding is defined for it")


class ActionSpec:
    """What a policy head must produce for an action space.

    Attributes:
        kind: ``"discrete"`` (one or more categoricals) or ``"continuous"`` (diagonal Gaussian).
        sizes: number of choices of each categorical (``kind == "discrete"``).
        dim: number of continuous dimensions (``kind == "continuous"``).
        low, high: bounds of a ``Box`` (actions are clipped to them when sent to the env).
    """

    def __init__(self, kind: str, sizes: tuple[int, ...] = (), dim: int = 0, low=None, high=None):
        self.kind = kind
        self.sizes = sizes
        self.dim = dim
        self.low = low
        self.high = high

    @property
    def n_outputs(self) -> int:
        """Width of the policy head: the logits of every categorical, or the Gaussian means."""
        return sum(self.sizes) if self.kind == "discrete" else self.dim

    @property
    def encoded_size(self) -> int:
        """Width of the previous-action encoding added to the observation."""
        return sum(self.sizes) if self.kind == "discrete" else self.dim

    @property
    def n_components(self) -> int:
        """Entries of one stored action (1 for ``Discrete``)."""
        return len(self.sizes) if self.kind == "discrete" else self.dim


def action_spec(space: spaces.Space) -> ActionSpec:
    """The :class:`ActionSpec` of ``space``; raises :class:`UnsupportedSpaceError` otherwise."""
    if isinstance(space, spaces.Discrete):
        return ActionSpec("discrete", sizes=(int(space.n),))
    if isinstance(space, spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise _unsupported(space, "action", "only 1-D MultiDiscrete action spaces are used")
        return ActionSpec("discrete", sizes=tuple(int(n) for n in space.nvec))
    if isinstance(space, spaces.Box):
        if len(space.shape) != 1:
            raise _unsupported(space, "action", "only 1-D Box action spaces are used")
        return ActionSpec(
            "continuous",
            dim=int(space.shape[0]),
            low=space.low.astype(np.float32),
            high=space.high.astype(np.float32),
        )
    raise _unsupported(space, "action", "no policy distribution is defined for it")


def encode_action(space: spaces.Space, action) -> np.ndarray:
    """Flat ``float32`` encoding of an action (one-hots for discrete spaces, values for ``Box``)."""
    spec = action_spec(space)
    if spec.kind == "continuous":
        return np.asarray(action, dtype=np.float32).reshape(-1)
    values = np.atleast_1d(np.asarray(action, dtype=np.int64))
    if isinstance(space, spaces.Discrete):
        values = values - int(space.start)
    else:
        values = values - space.start
    out = np.zeros(spec.encoded_size, dtype=np.float32)
    offsets = np.concatenate([[0], np.cumsum(spec.sizes)[:-1]]).astype(np.int64)
    out[offsets + values] = 1.0
    return out
