"""Retention on the fused GLA kernels: simple gated linear attention with the gate ``log(gamma)``.

RetNet ("Retentive Network: A Successor to Transformer for Large Language Models", Sun et al.,
2023, arXiv 2307.08621) is GLA with one constant gate per head, so its kernels are
:mod:`mixerzoo.core.ops.gla.triton`'s per-head-gate path (as fla builds retention on its simple-GLA
kernel). The non-causal (symmetric ``gamma^|n-m|``) form is a forward plus a backward causal scan
minus the diagonal both count, as in :mod:`.chunk`. Same arguments and results as :mod:`.naive`.
"""

from __future__ import annotations

import torch

from mixerzoo.core.ops.gla.triton import gla_triton

__all__ = ["retention_triton", "bidirectional_retention_triton"]


def _log_decay(q: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``[1, H, T]`` log decays, shared by the batch (the kernel takes them per position)."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    heads, length = q.shape[1], q.shape[2]
    return torch.log(gamma.to(dtype)).view(1, heads, 1).expand(1, heads, length)


def retention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal retention (arguments and results of
    :func:`mixerzoo.core.ops.retention.naive.naive_retention`)."""
    return gla_triton(q, k, v, _log_decay(q, gamma), initial_state, reset=reset, mask=mask)


def bidirectional_retention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Non-causal retention ``o_n = sum_m gamma^|n-m| (q_n . k_m) v_m`` (arguments and result of
    :func:`mixerzoo.core.ops.retention.naive.naive_bidirectional_retention`)."""
    forward, _ = retention_triton(q, k, v, gamma, mask=mask)
    flipped = None if mask is None else mask.flip(1)
    backward, _ = retention_triton(q.flip(2), k.flip(2), v.flip(2), gamma, mask=flipped)
    dtype = torch.promote_types(q.dtype, torch.float32)
    diagonal = (q.to(dtype) * k.to(dtype)).sum(-1, keepdim=True) * v.to(dtype)
    if mask is not None:
        diagonal = torch.where(mask[:, None, :, None], diagonal, 0.0)
    return (forward.to(dtype) + backward.flip(2).to(dtype) - diagonal).to(q.dtype)
