"""The ``"mamba_ssm"`` backend: mamba-ssm's fused CUDA ``selective_scan_fn``, when asked for.

mamba-ssm (https://github.com/state-spaces/mamba) is optional and never chosen automatically
(see :mod:`mixerzoo.core.ops.backend`); :func:`mixerzoo.core.ops.selective_scan.selective_scan`
calls this adapter only for CUDA tensors, with the package importable, and without ``h0`` or
``reset`` (its kernel starts every row from a zero state and has no per-row resets).

What differs from the other backends:

- A padding ``mask`` is applied here, before the kernel: ``softplus(delta + delta_bias)`` is
  computed in float32, zeroed at the padded steps (identity steps), cast back to ``delta``'s dtype
  and passed with ``delta_bias=None, delta_softplus=False``.
- mamba-ssm's backward ignores the gradient of the returned last state (its docstring says so);
  use ``"chunk"`` when a loss depends on the state.
- Only float32, float16 and bfloat16 inputs (the kernel's types); ``A``, ``D`` and ``delta_bias``
  are passed in float32 as the kernel expects.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_mamba_ssm"]


def selective_scan_mamba_ssm(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """mamba-ssm's fused selective scan (same arguments as the naive reference, less ``h0`` and
    ``reset``)."""
    if u.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(
            f"selective_scan: backend 'mamba_ssm' takes float32, float16 or bfloat16 inputs, got "
            f"{u.dtype}; use backend='chunk' for {u.dtype}"
        )
    interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    if mask is not None:
        dt = delta.float()
        if delta_bias is not None:
            dt = dt + delta_bias.float()[:, None]
        if delta_softplus:
            dt = F.softplus(dt)
        delta = dt.masked_fill(~mask[:, None, :], 0.0).to(delta.dtype)
        delta_bias, delta_softplus = None, False
    return interface.selective_scan_fn(
        u.contiguous(),
        delta.contiguous(),
        A.float().contiguous(),
        B.contiguous(),
        C.contiguous(),
        D.float().contiguous() if D is not None else None,
        z=z.contiguous() if z is not None else None,
        delta_bias=delta_bias.float().contiguous() if delta_bias is not None else None,
        delta_softplus=delta_softplus,
        return_last_state=return_last_state,
    )
