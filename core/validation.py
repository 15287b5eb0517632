"""Input checks shared by ops and mixers: clear errors naming the argument and expected shape."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

__all__ = ["check_tensor", "debug_enabled", "check_finite"]


def debug_enabled() -> bool:
    """True when ``MIXERZOO_DEBUG`` is set to a true value (enables NaN/Inf checks)."""
    return os.environ.get("MIXERZOO_DEBUG", "").lower() in {"1", "true", "yes", "on"}


def check_tensor(
    name: str,
    value: object,
    shape: Sequence[int | str | None],
    *,
    where: str,
    allow_complex: bool = False,
) -> torch.Tensor:
    """Check that ``value`` is a floating tensor of rank ``len(shape)`` matching ``shape``.

    Args:
        name: argument name used in the message, e.g. ``"x"``.
        value: the object to check.
        shape: expected shape; ints must match exactly, strings / None are free and only label
            the dimension in the message (``("B", "T", 64)``).
        where: the function or module doing the check, for the message.
        allow_complex: accept complex dtypes as well as real floating ones.

    Returns:
        ``value`` unchanged.
    """
    spec = "[" + ", ".join(str(s) if s is not None else "*" for s in shape) + "]"
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{where}: {name} must be a torch.Tensor of shape {spec}, got {type(value).__name__}"
        )
    if not (value.is_floating_point() or (allow_complex and value.is_complex())):
        kinds = "floating-point or complex" if allow_complex else "floating-point"
        raise TypeError(
            f"{where}: {name} must be a {kinds} tensor, got dtype {value.dtype}; "
            f"convert it with .float()"
        )
    if value.dim() != len(shape):
        raise ValueError(
            f"{where}: {name} must have shape {spec} ({len(shape)} dims), got "
            f"{tuple(value.shape)} ({value.dim()} dims)"
        )
    for i, (got, want) in enumerate(zip(value.shape, shape)):
        if isinstance(want, int) and got != want:
            raise ValueError(
                f"{where}: {name} must have shape {spec}, got {tuple(value.shape)} "
                f"(dimension {i} is {got}, expected {want})"
            )
    if debug_enabled():
        check_finite(name, value, where=where)
    return value


def check_finite(name: str, value: torch.Tensor, *, where: str) -> None:
    """Raise if ``value`` holds NaN or Inf (used in debug mode)."""
    if not torch.isfinite(value).all():
        n_bad = int((~torch.isfinite(value)).sum())
        raise FloatingPointError(
            f"{where}: {name} contains {n_bad} NaN/Inf values (shape {tuple(value.shape)}); "
            f"check the data or lower the learning rate"
        )
