"""Dropout with a cheaper random mask on the CPU.

``torch.nn.Dropout`` on the CPU draws one Bernoulli sample per element, which costs about as much
as the matrix products of a small model (a quarter of an iTransformer training step on ETTh1). This
version draws 64 random bits per four elements and compares each 16-bit lane with a threshold, so
the random number generator runs a quarter as often; the comparison writes the mask straight into
a float multiplier (0 or ``1 / (1 - p)``), so applying it, and its gradient, is one multiplication.

Semantics are those of ``nn.Dropout`` (each element zeroed independently with probability ``p``
during training, the kept ones scaled so that the expectation is unchanged; identity in eval mode),
with one documented difference: the drop probability is rounded to a multiple of ``2**-16``
(``p = 0.1`` becomes ``6554 / 65536 = 0.1000061``) and the kept elements are scaled by
``1 / (1 - p_rounded)``, so the expectation is still exactly the input. Probabilities that round to
0 or 1, non-CPU tensors (where PyTorch's fused dropout is already fast), dtypes other than
float32/float64 (a half-precision multiplier would round the scale) and ``inplace=True`` fall back
to ``torch.nn.functional.dropout``. The mask comes from PyTorch's global generator, so
``torch.manual_seed`` / ``seed_everything`` make it reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Dropout", "dropout", "dropout_mask", "dropout_multiplier", "multiplier_applies"]

_LANES = 65536
_EXACT = (torch.float32, torch.float64)  # dtypes that hold the scale exactly enough


def multiplier_applies(p: float, dtype: torch.dtype) -> bool:
    """Whether :func:`dropout_multiplier` serves ``p`` in ``dtype`` (else use PyTorch's dropout).

    True for float32/float64 and a ``p`` that rounds to ``k / 65536`` with ``0 < k < 65536``.
    """
    return dtype in _EXACT and 0 < round(p * _LANES) < _LANES


def _lanes(shape: torch.Size | tuple[int, ...], p: float) -> tuple[torch.Tensor, int, float]:
    """Uniform 16-bit lanes of ``shape`` with the threshold and scale for drop probability ``p``."""
    k = round(p * _LANES)
    if not 0 < k < _LANES:
        raise ValueError(f"dropout_mask: p={p} rounds to {k}/65536; use 0 < p < 1 - 2**-17")
    n = math.prod(shape)
    # Uniform 64-bit words (randint over the whole int64 range), read as four 16-bit lanes
    # uniform on [-32768, 32767]: P(lane < k - 32768) = k / 65536.
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    return words.view(torch.int16)[:n].view(shape), k - _LANES // 2, _LANES / (_LANES - k)


def dropout_mask(shape: torch.Size | tuple[int, ...], p: float) -> tuple[torch.Tensor, float]:
    """A keep mask (bool, ``shape``) with drop probability ``p`` rounded to ``k / 65536``.

    Returns:
        ``(keep, scale)`` with ``scale = 1 / (1 - k / 65536)``.
    """
    lanes, threshold, scale = _lanes(shape, p)
    return lanes >= threshold, scale


def dropout_multiplier(
    shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The dropout multiplier of ``shape``: ``scale`` where kept, 0 where dropped.

    The same draw as :func:`dropout_mask` (same random stream, same keep pattern), written as a
    float tensor: one comparison into the output and one in-place scaling.
    """
    lanes, threshold, scale = _lanes(shape, p)
    multiplier = torch.empty(shape, dtype=dtype)
    torch.ge(lanes, threshold, out=multiplier)
    return multiplier.mul_(scale)


class _Multiply(torch.autograd.Function):
    """``x * m`` for a constant ``m`` (the gradient is ``grad * m``; ``x`` is not saved)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(multiplier)
        return x * multiplier

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Functional form of :class:`Dropout` (see the module docstring)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if inplace or x.device.type != "cpu" or not multiplier_applies(p, x.dtype):
        return F.dropout(x, p, training, inplace)
    return _Multiply.apply(x, dropout_multiplier(x.shape, p, x.dtype))


class Dropout(nn.Dropout):
    """Drop-in ``nn.Dropout`` with the cheaper CPU mask (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.inplace)
