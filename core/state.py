"""One helper set for every mixer's state (the state rule of the mixer contract).

A mixer's state is ``None``, a tensor, or a tuple / list / dict of states, and every tensor leaf
has the batch as its first dimension; the state before the first token (``init_state``) is all
zeros (``False`` for bool leaves). So, whatever the mixer:

- :func:`reset_state` zeros the rows whose episode ended — exactly ``init_state`` for those rows;
- :func:`select_state` takes a subset of rows (e.g. the environments still running);
- :func:`state_to` moves a state between devices (and floating dtypes);
- :func:`map_state` applies any function to every leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["map_state", "reset_state", "select_state", "state_to", "state_batch_size"]


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: Any) -> Any:
    """Apply ``fn`` to every tensor leaf of ``state``, keeping its structure."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {key: map_state(fn, value) for key, value in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(fn, value) for value in state)
    raise TypeError(
        f"a mixer state is None, a tensor, or a tuple/list/dict of them; got {type(state).__name__}"
    )


def _leaves(state: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    map_state(lambda leaf: found.append(leaf) or leaf, state)
    return found


def state_batch_size(state: Any) -> int | None:
    """The batch size shared by every leaf (``None`` for a ``None`` state); raises if they differ."""
    sizes = {leaf.shape[0] if leaf.dim() else None for leaf in _leaves(state)}
    if not sizes:
        return None
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"every leaf of a mixer state must have the batch as its first dimension; got "
            f"leading sizes {sorted(s for s in sizes if s is not None)} (and scalars: {None in sizes})"
        )
    return sizes.pop()


def reset_state(state: Any, done: torch.Tensor) -> Any:
    """Zero the rows of ``state`` where ``done [B]`` (bool) is true, as ``init_state`` would.

    Use it between ``step`` calls when some environments (or streams) start a new episode.
    """
    if state is None:
        return None
    if not isinstance(done, torch.Tensor) or done.dtype != torch.bool or done.dim() != 1:
        raise TypeError(f"reset_state: done must be a 1-D torch.bool tensor [B], got {done!r}")
    batch = state_batch_size(state)
    if done.shape[0] != batch:
        raise ValueError(f"reset_state: done has {done.shape[0]} rows but the state has {batch}")

    def zero(leaf: torch.Tensor) -> torch.Tensor:
        keep = ~done.to(leaf.device).view(-1, *([1] * (leaf.dim() - 1)))
        return torch.where(keep, leaf, torch.zeros((), dtype=leaf.dtype, device=leaf.device))

    return map_state(zero, state)


def select_state(state: Any, index: torch.Tensor | slice | list[int]) -> Any:
    """The rows ``index`` (bool mask, indices or slice) of every leaf."""
    return map_state(lambda leaf: leaf[index], state)


def state_to(
    state: Any, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Any:
    """Move every leaf to ``device``; cast floating (not complex, int or bool) leaves to ``dtype``."""

    def move(leaf: torch.Tensor) -> torch.Tensor:
        if dtype is not None and leaf.is_floating_point():
            return leaf.to(device=device, dtype=dtype)
        return leaf.to(device=device)

    return map_state(move, state)
