"""Backend selection shared by every op: ``backend=None | "naive" | "chunk" | "triton" | "mamba_ssm"``.

``None`` means: the ``MIXERZOO_BACKEND`` environment variable if set, else ``"triton"`` for CUDA
tensors when the op has a Triton kernel and Triton imports, else ``"chunk"``.

Optional third-party kernels (:data:`EXTERNAL`, today mamba-ssm's fused selective scan) are never
chosen automatically: they are used only when asked for, by the ``backend`` argument or by
``MIXERZOO_BACKEND``, and then only for CUDA tensors with the package importable; otherwise the
call fails with an error that says what to install or which backend to use instead. An
environment-wide choice that an op does not implement falls back quietly to that op's own fast
path, so ``MIXERZOO_BACKEND=mamba_ssm`` affects only the selective scan.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

import torch

__all__ = ["BACKENDS", "EXTERNAL", "resolve_backend"]

BACKENDS = ("naive", "chunk", "triton", "mamba_ssm")

#: Third-party backends: name -> (module that must import, how to install it). CUDA only.
EXTERNAL: dict[str, tuple[str, str]] = {
    "mamba_ssm": ("mamba_ssm", "pip install mamba-ssm (builds CUDA kernels; needs a CUDA toolkit)"),
}


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _is_cuda(device: torch.device) -> bool:
    """Whether ``device`` is a CUDA device (one function, so tests can stand in for a GPU)."""
    return torch.device(device).type == "cuda"


def _require_external(op: str, name: str, device: torch.device) -> None:
    """Raise a clear error unless the third-party backend ``name`` can run on ``device``."""
    module, install = EXTERNAL[name]
    if not _is_cuda(device):
        raise RuntimeError(
            f"{op}: backend {name!r} runs {module}'s CUDA kernel and needs CUDA tensors, got "
            f"{torch.device(device)} tensors; use backend='chunk' (or unset MIXERZOO_BACKEND)"
        )
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{op}: backend {name!r} needs the optional package {module!r}, which does not "
            f"import ({err}); install it with `{install}`, or use backend='chunk'"
        ) from err


def resolve_backend(
    op: str, backend: str | None, available: Sequence[str], device: torch.device
) -> str:
    """Pick the backend for ``op`` running on ``device``.

    Args:
        op: op name, for messages.
        backend: the caller's choice or ``None`` for automatic.
        available: backends this op implements (for this call).
        device: device of the inputs.

    Raises:
        ValueError: an unknown backend, or one this op does not implement.
        RuntimeError / ImportError: a third-party backend asked for on a non-CUDA device, or
            whose package does not import.
    """
    choice = backend if backend is not None else os.environ.get("MIXERZOO_BACKEND") or None
    if choice is None:
        if _is_cuda(device) and "triton" in available and _triton_available():
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
    if choice in EXTERNAL:
        _require_external(op, choice, device)
    return choice
