"""The ``reset`` and ``mask`` arguments of the mixer contract: checks and shared helpers.

- ``reset [B, T]`` (bool): where true, the state is dropped *before* step ``t``, so the episodes
  (or utterances) packed into one row never see each other. :func:`segment_ids` numbers them:
  segment 0 continues the state given to ``forward``; every reset starts the next segment.
- ``mask [B, T]`` (bool, true = real token): padded positions are skipped. They neither read nor
  write the state and change no output at a real position; their own outputs are unspecified
  (finite). A reset flagged at a padded position still drops the state. :class:`Compaction` moves
  the real tokens of each row to the front (in order) and back, for layers (convolutions,
  normalisations over time) whose natural form is "the same row without its padding".
"""

from __future__ import annotations

import torch

__all__ = ["check_reset", "check_mask", "segment_ids", "Compaction"]


def _check_flags(name: str, value: object, x_shape: tuple[int, ...], where: str) -> torch.Tensor:
    want = tuple(x_shape[:2])
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{where}: {name} must be a torch.bool tensor of shape [B, T] = {list(want)}, "
            f"got {type(value).__name__}"
        )
    if value.dtype != torch.bool:
        raise TypeError(
            f"{where}: {name} must be a torch.bool tensor of shape [B, T] = {list(want)}, got "
            f"dtype {value.dtype}; convert it with .bool()"
        )
    if tuple(value.shape) != want:
        raise ValueError(
            f"{where}: {name} must have shape [B, T] = {list(want)} like x's first two dims, got "
            f"{tuple(value.shape)}"
        )
    return value


def check_reset(reset: object, x: torch.Tensor, where: str) -> torch.Tensor | None:
    """Validate ``reset`` against ``x [B, T, ...]``; ``None`` passes through.

    Returns ``None`` too when no position is flagged, so callers can take their fast path.
    """
    if reset is None:
        return None
    reset = _check_flags("reset", reset, tuple(x.shape), where)
    return reset if bool(reset.any()) else None


def check_mask(mask: object, x: torch.Tensor, where: str) -> torch.Tensor | None:
    """Validate ``mask`` against ``x [B, T, ...]``; ``None`` (and an all-true mask) give ``None``."""
    if mask is None:
        return None
    mask = _check_flags("mask", mask, tuple(x.shape), where)
    return None if bool(mask.all()) else mask


def segment_ids(reset: torch.Tensor | None, shape: tuple[int, int], device=None) -> torch.Tensor:
    """``[B, T]`` int64 segment number of every position: ``cumsum(reset)`` (zeros without resets).

    Two positions ``s <= t`` of a row may interact iff their ids are equal (no reset in
    ``(s, t]``); a carried state reaches position ``t`` iff its id is 0.
    """
    if reset is None:
        return torch.zeros(shape, dtype=torch.long, device=device)
    return reset.long().cumsum(1)


class Compaction:
    """Move the real tokens of every row of a padded batch to the front, in order, and back.

    Args:
        mask: ``[B, T]`` bool, true = real token.

    Attributes:
        lengths: ``[B]`` number of real tokens per row.
        order: ``[B, T]`` source position of every compacted position (real tokens first).
        is_prefix: the mask is already "real tokens first" (gathers are skipped).
    """

    def __init__(self, mask: torch.Tensor):
        self.mask = mask
        self.lengths = mask.sum(1)
        t = mask.shape[1]
        ar = torch.arange(t, device=mask.device)
        self.is_prefix = bool((mask == (ar < self.lengths.unsqueeze(1))).all())
        if self.is_prefix:
            self.order = self.inverse = None
        else:
            # A stable sort of "is padding" keeps the real tokens in order, then the padding.
            self.order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
            self.inverse = torch.argsort(self.order, dim=1)

    @property
    def valid(self) -> torch.Tensor:
        """``[B, T]`` bool: true at the compacted positions that hold real tokens."""
        t = self.mask.shape[1]
        return torch.arange(t, device=self.mask.device) < self.lengths.unsqueeze(1)

    @staticmethod
    def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
        return torch.gather(x, 1, index)

    def compact(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T, ...]`` with the real tokens of each row first (the rest: padding values)."""
        return x if self.is_prefix else self._take(x, self.order)

    def expand(self, y: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Inverse of :meth:`compact`; padded positions get ``fill``."""
        if not self.is_prefix:
            y = self._take(y, self.inverse)
        keep = self.mask.view(*self.mask.shape, *([1] * (y.dim() - 2)))
        return torch.where(keep, y, torch.full((), fill, dtype=y.dtype, device=y.device))

    def last(self, x: torch.Tensor, count: int) -> torch.Tensor:
        """The ``count`` positions before each row's end of real tokens in a compacted sequence
        that was prefixed by ``count`` earlier positions: ``x [B, count + T, ...]`` ->
        ``[B, count, ...]`` (used for the carried history of a convolution)."""
        start = self.lengths.view(-1, 1) + torch.arange(count, device=x.device)
        return self._take(x, start)
