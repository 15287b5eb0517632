"""2-D scan orders that turn an image of tokens into 1-D sequences for a causal/1-D mixer.

Vision models run a 1-D mixer from ``core.mixers`` over several traversals of the token grid and
merge the results; the traversals live here, once, so every vision model shares them.

- ``cross_scan`` / ``cross_merge``: VMamba's Cross-Scan Module (Liu et al. 2024, "VMamba: Visual
  State Space Model", arXiv 2401.10166): four full traversals -- row-major, column-major, and both
  reversed; merging maps each back to row-major and sums them.
- ``atrous_scan`` / ``atrous_merge``: EfficientVMamba's efficient 2-D scanning with skip sampling
  (Pei et al. 2024, "EfficientVMamba: Atrous Selective Scan for Light Weight Visual Mamba",
  arXiv 2403.09977): the grid is split into the ``step x step`` interleaved sub-grids; with
  ``step=2`` the four traversals are sub-grid (even rows, even cols) row-major, (odd rows, even
  cols) column-major, (even rows, odd cols) row-major and (odd rows, odd cols) column-major, as in
  the official ``EfficientScan``. Each token is visited once, so merging places every output
  back where its token came from (no sum). Grids with odd sides are zero-padded at the bottom and
  right, and the padding is cropped by the merge.

Layout is channel-last throughout: images ``[B, H, W, C]``, sequences ``[B, K, L, C]`` with ``K``
traversals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixerzoo.core.validation import check_tensor

__all__ = ["cross_scan", "cross_merge", "atrous_scan", "atrous_merge"]


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """Four traversals of ``x [B, H, W, C]`` -> ``[B, 4, H*W, C]`` (row, column, and reversed)."""
    check_tensor("x", x, ("B", "H", "W", "C"), where="cross_scan")
    b, h, w, c = x.shape
    rows = x.reshape(b, h * w, c)
    cols = x.transpose(1, 2).reshape(b, h * w, c)
    return torch.stack([rows, cols, rows.flip(1), cols.flip(1)], dim=1)


def cross_merge(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of ``cross_scan`` followed by a sum: ``[B, 4, H*W, C] -> [B, H, W, C]``."""
    check_tensor("y", y, ("B", 4, height * width, "C"), where="cross_merge")
    b, _, _, c = y.shape
    rows = y[:, 0] + y[:, 2].flip(1)
    cols = y[:, 1] + y[:, 3].flip(1)
    return rows.reshape(b, height, width, c) + cols.reshape(b, width, height, c).transpose(1, 2)


def _pad_to_multiple(x: torch.Tensor, step: int) -> torch.Tensor:
    h, w = x.shape[1], x.shape[2]
    pad_h, pad_w = (-h) % step, (-w) % step
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x


def atrous_scan(x: torch.Tensor, step: int = 2) -> torch.Tensor:
    """Skip-sampled traversals of ``x [B, H, W, C]`` -> ``[B, 4, ceil(H/s)*ceil(W/s), C]``.

    Only ``step=2`` is defined by the paper (four traversals of the four sub-grids).
    """
    check_tensor("x", x, ("B", "H", "W", "C"), where="atrous_scan")
    if step != 2:
        raise ValueError(f"atrous_scan: only step=2 (four sub-grids) is defined, got step={step}")
    x = _pad_to_multiple(x, step)
    b, _, _, c = x.shape
    xt = x.transpose(1, 2)  # [B, W, H, C]: row-major over it is column-major over x
    parts = [
        x[:, 0::2, 0::2],  # even rows, even cols, row-major
        xt[:, 0::2, 1::2],  # even cols, odd rows, column-major
        x[:, 0::2, 1::2],  # even rows, odd cols, row-major
        xt[:, 1::2, 1::2],  # odd cols, odd rows, column-major
    ]
    return torch.stack([p.reshape(b, -1, c) for p in parts], dim=1)


def atrous_merge(y: torch.Tensor, height: int, width: int, step: int = 2) -> torch.Tensor:
    """Put the outputs of ``atrous_scan`` traversals back on the grid: ``-> [B, H, W, C]``."""
    if step != 2:
        raise ValueError(f"atrous_merge: only step=2 is defined, got step={step}")
    hp, wp = height + (-height) % step, width + (-width) % step
    hs, ws = hp // step, wp // step
    check_tensor("y", y, ("B", 4, hs * ws, "C"), where="atrous_merge")
    b, _, _, c = y.shape
    out = y.new_zeros(b, hp, wp, c)
    out[:, 0::2, 0::2] = y[:, 0].reshape(b, hs, ws, c)
    out[:, 1::2, 0::2] = y[:, 1].reshape(b, ws, hs, c).transpose(1, 2)
    out[:, 0::2, 1::2] = y[:, 2].reshape(b, hs, ws, c)
    out[:, 1::2, 1::2] = y[:, 3].reshape(b, ws, hs, c).transpose(1, 2)
    return out[:, :height, :width]
