"""Elementwise first-order linear recurrence ``h_t = a_t * h_{t-1} + b_t`` (real or complex).

The workhorse of diagonal state-space and linear-recurrent layers (S5, LRU, RG-LRU, ...). The
optional ``reset`` implements the resettable scan of "Structured State Space Models for In-Context
Reinforcement Learning" (Lu et al., 2023, arXiv 2303.03982): where ``reset_t`` is true the state
restarts at that step, ``h_t = b_t``, so several episodes packed into one sequence never see each
other.

Backends: ``"naive"`` (step-by-step loop, the reference), ``"chunk"`` (chunked parallel scan with
a reverse-scan backward) and ``"triton"`` (fused kernels, :mod:`.triton`; the automatic choice for
CUDA tensors); see :mod:`mixerzoo.core.ops.backend` for how one is picked.
"""

from __future__ import annotations

import torch

from mixerzoo.core.ops.backend import resolve_backend
from mixerzoo.core.ops.linear_scan.chunk import linear_scan_chunk
from mixerzoo.core.ops.linear_scan.naive import linear_scan_naive
from mixerzoo.core.validation import check_tensor

__all__ = ["linear_scan", "linear_scan_naive", "linear_scan_chunk"]


def _linear_scan_triton(a, b, h0, reset):
    # Imported on first use: the kernels' module needs Triton (and the interpreter switch, when
    # set, before it is imported).
    from mixerzoo.core.ops.linear_scan.triton import linear_scan_triton

    return linear_scan_triton(a, b, h0, reset)


_BACKENDS = {"naive": linear_scan_naive, "chunk": linear_scan_chunk, "triton": _linear_scan_triton}


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    reset: torch.Tensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` along time (dim 1).

    The recurrence is elementwise over the trailing dimensions ``*`` (any number, e.g. ``[D]`` or
    ``[D, N]``). ``a`` and ``b`` must have the same shape; to share a decay across a dimension, pass
    ``a.expand_as(b)``.

    Args:
        a: decays ``[B, T, *]``, floating-point or complex.
        b: inputs ``[B, T, *]``, same shape and dtype as ``a``.
        h0: state before the first step ``[B, *]`` (same dtype); zeros when ``None``.
        reset: boolean ``[B, T]``; where true, ``h_t = b_t`` (the previous state is dropped).
        backend: ``None`` (automatic), ``"naive"``, ``"chunk"`` or ``"triton"``.

    Returns:
        ``(h [B, T, *], h_last [B, *])`` where ``h_last = h[:, -1]``.

    Raises:
        TypeError / ValueError: on wrong dtypes or shapes, naming the argument.
    """
    where = "linear_scan"
    if not isinstance(a, torch.Tensor):
        check_tensor("a", a, ("B", "T", "*"), where=where, allow_complex=True)
    if a.dim() < 2:
        raise ValueError(
            f"{where}: a must have shape [B, T, *] (at least 2 dims), got {tuple(a.shape)}"
        )
    spec = ("B", "T", *a.shape[2:])
    check_tensor("a", a, spec, where=where, allow_complex=True)
    if a.shape[1] == 0:
        raise ValueError(
            f"{where}: a must have at least one time step (T >= 1), got shape {tuple(a.shape)}"
        )
    check_tensor("b", b, (a.shape[0], a.shape[1], *a.shape[2:]), where=where, allow_complex=True)
    if b.dtype != a.dtype:
        raise TypeError(f"{where}: a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    if h0 is not None:
        check_tensor("h0", h0, (a.shape[0], *a.shape[2:]), where=where, allow_complex=True)
        if h0.dtype != a.dtype:
            raise TypeError(f"{where}: h0 must have dtype {a.dtype} like a, got {h0.dtype}")
    if reset is not None:
        if not isinstance(reset, torch.Tensor) or reset.dtype != torch.bool:
            got = reset.dtype if isinstance(reset, torch.Tensor) else type(reset).__name__
            raise TypeError(
                f"{where}: reset must be a torch.bool tensor of shape [B, T], got {got}"
            )
        if tuple(reset.shape) != tuple(a.shape[:2]):
            raise ValueError(
                f"{where}: reset must have shape [B, T] = {tuple(a.shape[:2])}, got {tuple(reset.shape)}"
            )
    choice = resolve_backend(where, backend, tuple(_BACKENDS), a.device)
    return _BACKENDS[choice](a, b, h0, reset)
