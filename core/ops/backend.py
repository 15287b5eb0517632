"""Backend selection shared by every op: ``backend=None | "naive" | "chunk" | "triton"``.

``None`` means: the ``MIXERZOO_BACKEND`` environment variable if set, else ``"triton"`` for CUDA
tensors when the op has a Triton kernel and Triton imports, else ``"chunk"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

__all__ = ["BACKENDS", "resolve_backend"]

BACKENDS = ("naive", "chunk", "triton")


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(
    op: str, backend: str | None, available: Sequence[str], device: torch.device
) -> str:
    """Pick the backend for ``op`` running on ``device``.

    Args:
        op: op name, for messages.
        backend: the caller's choice or ``None`` for automatic.
        available: backends this op implements.
        device: device of the inputs.

    Raises:
        ValueError: an unknown backend, or one this op does not implement.
    """
    choice = backend if backend is not None else os.environ.get("MIXERZOO_BACKEND") or None
    if choice is None:
        if device.type == "cuda" and "triton" in available and _triton_available():
            return "triton"
        return "chunk" if "chunk" in available else available[0]
    choice = choice.lower()
    if choice not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {choice!r}; choose one of {BACKENDS} or None")
    if choice not in available:
        if backend is None:
            # An environment-wide default that this op lacks falls back quietly to the fast path.
            return "chunk" if "chunk" in available else available[0]
        raise ValueError(
            f"{op}: backend {choice!r} is not implemented; available: {tuple(available)}"
        )
    return choice
