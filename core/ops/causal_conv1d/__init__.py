"""Causal depthwise convolution over time (+ SiLU), with a carried state and resets.

The short convolution of Mamba ("Mamba: Linear-Time Sequence Modeling with Selective State
Spaces", Gu & Dao, 2023, arXiv 2312.00752; kernel 4, then SiLU), of the mLSTM / ViL blocks and of
FSMN's memory (dilated taps)::

    y_t = act(bias + sum_{i=0}^{K-1} w_i x_{t - d (K - 1 - i)})

with ``nn.Conv1d``'s tap order (the last tap multiplies the current input). Taps before the first
token read the carried ``state`` (the ``d (K - 1)`` previous inputs, oldest first); with
``reset [B, T]`` a tap never reaches across an episode boundary (it reads zero). This is the bare
operator: carrying the new state, padding masks and the module live in
:mod:`mixerzoo.core.layers.conv`, which calls this op on CUDA.

Backends: ``"naive"`` (one output and one tap at a time, the reference), ``"chunk"`` (a grouped
``F.conv1d``, cuDNN on a GPU; one vectorised pass per tap with resets) and ``"triton"`` (fused
convolution + bias + SiLU, forward and backward, :mod:`.triton`; the automatic choice for CUDA
tensors); see :mod:`mixerzoo.core.ops.backend`. The optional ``causal-conv1d`` package (Tri Dao's
CUDA kernel) is a peer in ``benchmarks/ops.py``, not a backend.
"""

from __future__ import annotations

import torch

from mixerzoo.core.ops.backend import resolve_backend
from mixerzoo.core.ops.causal_conv1d.chunk import causal_conv1d_chunk
from mixerzoo.core.ops.causal_conv1d.naive import causal_conv1d_naive
from mixerzoo.core.validation import check_tensor

__all__ = ["causal_conv1d", "causal_conv1d_naive", "causal_conv1d_chunk"]

_AVAILABLE = ("naive", "chunk", "triton")
ACTIVATIONS = (None, "silu")


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
    dilation: int = 1,
    *,
    reset: torch.Tensor | None = None,
    segments: torch.Tensor | None = None,
    activation: str | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Causal depthwise convolution of ``x`` continuing from ``state``.

    Args:
        x: ``[B, T, C]`` inputs.
        weight: ``[C, K]`` taps (``nn.Conv1d``'s ``[C, 1, K]`` weight squeezed).
        bias: ``[C]`` or ``None``.
        state: ``[B, d (K - 1), C]`` previous inputs (oldest first), or ``None`` (zeros).
        dilation: spacing ``d`` of the taps (>= 1).
        reset: ``[B, T]`` bool; a tap never reads an input before a reset that precedes ``t``
            (nor the state once a reset has occurred).
        segments: ``[B, T]`` integer segment ids instead of ``reset`` (as
            :func:`mixerzoo.core.layers.sequence.segment_ids` makes them: non-decreasing, 0 =
            continues the state); for callers that already hold them.
        activation: ``None`` or ``"silu"``, applied to the result.
        backend: ``None`` (automatic), ``"naive"``, ``"chunk"`` or ``"triton"``.

    Returns:
        ``y [B, T, C]`` in the dtype of ``x``.

    Raises:
        TypeError / ValueError: wrong shapes or dtypes, an unknown activation, both ``reset`` and
            ``segments`` given.
    """
    where = "causal_conv1d"
    check_tensor("x", x, ("B", "T", "C"), where=where)
    batch, length, channels = x.shape
    check_tensor("weight", weight, (channels, "K"), where=where)
    taps = weight.shape[1]
    if not isinstance(dilation, int) or dilation < 1 or taps < 1:
        raise ValueError(f"{where}: needs dilation >= 1 and K >= 1, got {dilation} and {taps}")
    if bias is not None:
        check_tensor("bias", bias, (channels,), where=where)
    if state is not None:
        check_tensor("state", state, (batch, dilation * (taps - 1), channels), where=where)
    if activation not in ACTIVATIONS:
        raise ValueError(f"{where}: activation must be one of {ACTIVATIONS}, got {activation!r}")
    if reset is not None and segments is not None:
        raise ValueError(f"{where}: pass reset or segments, not both")
    if reset is not None:
        if not isinstance(reset, torch.Tensor) or reset.dtype != torch.bool:
            raise TypeError(f"{where}: reset must be a torch.bool tensor of shape [B, T]")
        if tuple(reset.shape) != (batch, length):
            raise ValueError(
                f"{where}: reset must have shape [B, T] = {(batch, length)}, got "
                f"{tuple(reset.shape)}"
            )
        segments = reset.long().cumsum(1)
    elif segments is not None:
        if not isinstance(segments, torch.Tensor) or segments.is_floating_point():
            raise TypeError(f"{where}: segments must be an integer tensor of shape [B, T]")
        if tuple(segments.shape) != (batch, length):
            raise ValueError(
                f"{where}: segments must have shape [B, T] = {(batch, length)}, got "
                f"{tuple(segments.shape)}"
            )
    choice = resolve_backend(where, backend, _AVAILABLE, x.device)
    if choice == "triton":
        from mixerzoo.core.ops.causal_conv1d.triton import causal_conv1d_triton

        fn = causal_conv1d_triton
    else:
        fn = causal_conv1d_naive if choice == "naive" else causal_conv1d_chunk
    return fn(x, weight, bias, state, dilation, segments=segments, activation=activation)
