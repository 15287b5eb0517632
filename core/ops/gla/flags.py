"""The ``reset`` and ``mask`` flags of the linear-attention ops (GLA, retention, mLSTM).

Both are ``[B, T]`` bool tensors over the batch and time dims of the op's ``q [B, H, T, dk]``:

- ``reset[b, t]``: the state is dropped (set to the zero initial state) *before* step ``t``, so
  the segments of a packed row never see each other. With ``seg = cumsum(reset)`` (segment ids,
  :func:`mixerzoo.core.layers.segment_ids`) positions ``s <= t`` interact iff ``seg_s == seg_t``,
  and the state given to the op reaches position ``t`` iff ``seg_t == 0``.
- ``mask[b, t]`` (true = real token): a masked step is the identity on the state (no decay,
  nothing written); the output there is the query read against the unchanged state (callers
  normally ignore it). A reset flagged at a masked position still drops the state.

The chunked forms use :func:`chunk_segments`: per chunk, a key enters the chunk-end state iff it
lies in the chunk's last segment, the carried state reaches position ``t`` iff ``seg_t`` equals
the segment of the state entering the chunk, and the chunk's decay applies to the carried state
iff no reset lies inside the chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixerzoo.core.layers.sequence import segment_ids

__all__ = ["check_flags", "chunk_segments"]


def _check_one(name: str, value: object, batch: int, length: int, where: str) -> torch.Tensor:
    want = [batch, length]
    if not isinstance(value, torch.Tensor) or value.dtype != torch.bool:
        got = f"dtype {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise TypeError(
            f"{where}: {name} must be a torch.bool tensor of shape [B, T] = {want} (the batch "
            f"and time dims of q), got {got}; convert it with .bool()"
        )
    if list(value.shape) != want:
        raise ValueError(
            f"{where}: {name} must have shape [B, T] = {want} (the batch and time dims of q), "
            f"got {tuple(value.shape)}"
        )
    return value


def check_flags(
    reset: object, mask: object, batch: int, length: int, where: str
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validate ``reset`` and ``mask`` (each ``[B, T]`` bool or ``None``) with clear errors.

    No value is read (that would stall a GPU stream): a given flag takes the flagged code path
    even when nothing is flagged; the mixers drop empty flags before calling the ops.
    """
    if reset is not None:
        reset = _check_one("reset", reset, batch, length, where)
    if mask is not None:
        mask = _check_one("mask", mask, batch, length, where)
    return reset, mask


def chunk_segments(
    reset: torch.Tensor, n_chunks: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment ids of ``reset [B, T]`` cut into ``n_chunks`` chunks of ``size`` positions.

    Positions past ``T`` (the padded tail of the last chunk) continue the last segment.

    Returns:
        ``seg [B, 1, NC, C]`` (the 1 broadcasts over heads) and ``seg_prev [B, 1, NC]``, the
        segment of the state entering each chunk (0 for the first chunk: the initial state).
    """
    b, t = reset.shape
    seg = segment_ids(reset, (b, t))
    pad = n_chunks * size - t
    if pad:
        seg = torch.cat([seg, seg[:, -1:].expand(b, pad)], dim=1)
    seg = seg.view(b, 1, n_chunks, size)
    seg_prev = F.pad(seg[..., :-1, -1], (1, 0))
    return seg, seg_prev
