"""Gated linear attention (GLA): linear attention with data-dependent, per-key-dimension decay.

Follows "Gated Linear Attention Transformers with Hardware-Efficient Training" (Yang, Wang,
Shen, Panda and Kim, 2024, arXiv 2312.06635). Per head, with gates ``alpha_t in (0, 1)^dk``
passed as their logarithms ``g_t = log(alpha_t)``::

    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,    o_t = q_t S_t

With one gate per head (``g [B, H, T]``) this is "simple GLA" (fla's ``chunk_simple_gla``), of
which RetNet's retention (``mixerzoo.core.ops.retention``) is the case ``g_t = log(gamma)``.

**Resets and padding** (exact semantics, for every backend):

- ``reset [B, T]`` (bool): where true, the state is set to zero *before* step ``t``:
  ``S_t = k_t^T v_t`` (the gate ``g_t`` of that step is unused; its gradient is zero). The
  segments of a packed row never see each other, and the state passed as ``initial_state``
  reaches only the positions before the row's first reset.
- ``mask [B, T]`` (bool, true = real step): a masked step is the identity on the state,
  ``S_t = S_{t-1}`` (as if ``g_t = 0`` and ``k_t = 0``); its output is ``q_t S_{t-1}`` (callers
  normally ignore it) and ``k_t``, ``v_t``, ``g_t`` there get zero gradient. A reset at a masked
  step still zeroes the state. The final state is the one after each row's last real step.

The op is the bare recurrence; the gate parameterisation (low-rank, ``sigmoid^(1/tau)``), the
query scaling, the per-head norm and the output gate live in the mixer
(``mixerzoo.core.mixers.gla``).

Backends: ``"naive"`` (token-by-token recurrence), ``"chunk"`` (chunkwise form with
sub-chunks, every exponent a non-positive difference of cumulative log gates) and ``"triton"``
(fused chunkwise kernels, :mod:`.triton`; the automatic choice for CUDA tensors).
``parallel_gla`` is the ``T x T`` parallel form, exported for tests and short sequences.
"""

from __future__ import annotations

import torch

from mixerzoo.core.ops.backend import resolve_backend
from mixerzoo.core.ops.gla.chunk import chunk_gla, parallel_gla
from mixerzoo.core.ops.gla.flags import check_flags
from mixerzoo.core.ops.gla.naive import naive_gla
from mixerzoo.core.validation import check_tensor

__all__ = ["gla", "parallel_gla", "chunk_gla", "naive_gla"]

_AVAILABLE = ("naive", "chunk", "triton")


def gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    backend: str | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal gated linear attention.

    Args:
        q: ``[B, H, T, dk]`` queries (scaled as the caller wants).
        k: ``[B, H, T, dk]`` keys.
        v: ``[B, H, T, dv]`` values.
        g: ``[B, H, T, dk]`` log forget gates ``log(alpha_t)``, or ``[B, H, T]`` for one gate per
            head; must be ``<= 0`` (gates in ``(0, 1]``) for the chunked form to stay in range.
        initial_state: ``[B, H, dk, dv]`` state before the first token, or ``None`` (zeros).
        reset: ``[B, T]`` bool, drop the state before the flagged steps (module docstring).
        mask: ``[B, T]`` bool, true = real step; masked steps leave the state unchanged.
        backend: ``None`` (automatic), ``"naive"``, ``"chunk"`` or ``"triton"``.
        chunk_size: tokens per chunk for the ``"chunk"`` backend (the kernels pick their own).

    Returns:
        ``o [B, H, T, dv]`` in the dtype of ``q`` and the final state ``[B, H, dk, dv]`` (float32
        or wider), to pass as ``initial_state`` for the next piece.
    """
    where = "gla"
    check_tensor("q", q, ("B", "H", "T", "dk"), where=where)
    b, h, t, dk = q.shape
    check_tensor("k", k, (b, h, t, dk), where=where)
    check_tensor("v", v, (b, h, t, "dv"), where=where)
    if isinstance(g, torch.Tensor) and g.dim() == 3:
        check_tensor("g", g, (b, h, t), where=where)
    else:
        check_tensor("g", g, (b, h, t, dk), where=where)
    if initial_state is not None:
        check_tensor("initial_state", initial_state, (b, h, dk, v.shape[-1]), where=where)
    reset, mask = check_flags(reset, mask, b, t, where)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{where}: chunk_size must be a positive int, got {chunk_size!r}")
    choice = resolve_backend(where, backend, _AVAILABLE, q.device)
    if t == 0:
        # An empty piece: the recurrence returns the state unchanged and no output.
        choice = "naive"
    if choice == "triton":
        from mixerzoo.core.ops.gla.triton import gla_triton

        fn, kwargs = gla_triton, {}
    else:
        fn = naive_gla if choice == "naive" else chunk_gla
        kwargs = {} if choice == "naive" else {"chunk_size": chunk_size}
    o, state = fn(q, k, v, g, initial_state, reset=reset, mask=mask, **kwargs)
    return o.to(q.dtype), state
