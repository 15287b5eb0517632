"""Dropout with a cheaper random mask on the CPU.

``torch.nn.Dropout`` on the CPU draws one Bernoulli sample per element, which costs about as much
as the matrix products of a small model (a quarter of an iTransformer training step on ETTh1). This
version draws 64 random bits per four elements and compares each 16-bit lane with a threshold, so
the random number generator runs a quarter as often; applying the mask is one fused ``where``.

Semantics are those of ``nn.Dropout`` (each element zeroed independently with probability ``p``
during training, the kept ones scaled so that the expectation is unchanged; identity in eval
mode), with one documented difference: the drop probability is rounded to a multiple of
``2**-16`` (``p = 0.1`` becomes ``6554 / 65536 = 0.1000061``) and the kept elements are scaled by
``1 / (1 - p_rounded)``, so the expectation is still exactly the input. Probabilities that round
to 0 or 1, non-CPU tensors (where PyTorch's fused dropout is already fast) and ``inplace=True``
fall back to ``torch.nn.functional.dropout``. The mask comes from PyTorch's global generator, so
``torch.manual_seed`` / ``seed_everything`` make it reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Dropout", "dropout", "dropout_mask"]

_LANES = 65536


def dropout_mask(shape: torch.Size | tuple[int, ...], p: float) -> tuple[torch.Tensor, float]:
    """A keep mask (bool, ``shape``) with drop probability ``p`` rounded to ``k / 65536``.

    Returns:
        ``(keep, scale)`` with ``scale = 1 / (1 - k / 65536)``.
    """
    k = round(p * _LANES)
    if not 0 < k < _LANES:
        raise ValueError(f"dropout_mask: p={p} rounds to {k}/65536; use 0 < p < 1 - 2**-17")
    n = math.prod(shape)
    # Uniform 64-bit words (randint over the whole int64 range), read as four 16-bit lanes
    # uniform on [-32768, 32767]: P(lane < k - 32768) = k / 65536.
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    lanes = words.view(torch.int16)[:n].view(shape)
    return lanes >= k - _LANES // 2, _LANES / (_LANES - k)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x * scale, 0.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad * ctx.scale, 0.0), None, None


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Functional form of :class:`Dropout` (see the module docstring)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    k = round(p * _LANES)
    if inplace or x.device.type != "cpu" or not 0 < k < _LANES or not x.is_floating_point():
        return F.dropout(x, p, training, inplace)
    keep, scale = dropout_mask(x.shape, p)
    return _MaskedScale.apply(x, keep, scale)


class Dropout(nn.Dropout):
    """Drop-in ``nn.Dropout`` with the cheaper CPU mask (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.inplace)
