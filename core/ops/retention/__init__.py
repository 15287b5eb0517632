"""Retention: linear attention with a fixed per-head exponential decay.

Follows "Retentive Network: A Successor to Transformer for Large Language Models" (Sun et al.,
2023, arXiv 2307.08621). Per head, with decay ``gamma`` in ``(0, 1]``::

    S_n = gamma * S_{n-1} + k_n^T v_n,   o_n = q_n S_n          (recurrent form)
    O = (Q K^T * D) V,  D_nm = gamma^(n-m) [n >= m]             (parallel form)

plus the chunkwise recurrent form. The op is the bare recurrence: the rotation of ``q``/``k``, the
``d_k^-0.5`` scaling, the GroupNorm and the gate of multi-scale retention live in the mixer
(``mixerzoo.core.mixers.retention``). RetNet's score normalisations (dividing ``D`` and
``Q K^T * D`` row-wise) are per-row positive factors that the per-head GroupNorm removes, so
they are left out here.

``causal=False`` gives the symmetric decay ``D_nm = gamma^|n-m|`` (each token sees both sides,
nearer tokens more): the 1-D case of the distance decay of RMT (Fan et al., 2023, "RMT:
Retentive Networks Meet Vision Transformers", arXiv 2309.11523, which uses the Manhattan distance
on the 2-D patch grid); it has no state.

**Resets and padding** (exact semantics, for every backend):

- ``reset [B, T]`` (bool, causal only): where true, the state is set to zero *before* step
  ``n``: ``S_n = k_n^T v_n``. Tokens in different segments of a packed row never interact, and
  ``initial_state`` reaches only the tokens before the row's first reset.
- ``mask [B, T]`` (bool, true = real token): a padded step is the identity on the state,
  ``S_n = S_{n-1}`` (decay 1, key dropped), so ``gamma``'s exponent ``n - m`` counts real tokens
  only, for the causal and the symmetric decay alike; the output at a padded step is
  ``q_n S_{n-1}`` (unspecified for callers) and padded ``k``, ``v`` get zero gradient. A reset
  at a padded step still zeroes the state. The final state is the one after the last real step.

Retention is simple gated linear attention with the gate ``log(gamma)`` at every position: the
chunkwise form is :func:`mixerzoo.core.ops.gla.chunk_gla` with one gate per head (a gate tensor
shared by the batch when there is no mask, so the decay matrices are computed once).

Backends: ``"naive"`` (token-by-token recurrence; two scans when not causal), ``"chunk"``
(chunkwise form; forward plus backward chunkwise scans when not causal) and ``"triton"`` (the
fused GLA kernels with one gate per head, :mod:`.triton`; the automatic choice for CUDA tensors). ``parallel_retention``
is the ``T x T`` parallel form, exported for tests and short sequences.
"""

from __future__ import annotations

import torch

from mixerzoo.core.ops.backend import resolve_backend
from mixerzoo.core.ops.gla.flags import check_flags
from mixerzoo.core.ops.retention.chunk import (
    chunk_bidirectional_retention,
    chunk_retention,
    parallel_retention,
)
from mixerzoo.core.ops.retention.naive import naive_bidirectional_retention, naive_retention
from mixerzoo.core.validation import check_tensor, debug_enabled

__all__ = [
    "retention",
    "parallel_retention",
    "chunk_retention",
    "naive_retention",
    "chunk_bidirectional_retention",
    "naive_bidirectional_retention",
    "retnet_decays",
]

_AVAILABLE = ("naive", "chunk", "triton")


def retnet_decays(n_heads: int) -> torch.Tensor:
    """RetNet's multi-scale decays ``gamma_h = 1 - 2^(-5 - h)``, ``h = 0 .. n_heads - 1``."""
    return 1.0 - torch.pow(2.0, -5.0 - torch.arange(n_heads, dtype=torch.float64))


def retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    causal: bool = True,
    backend: str | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head retention ``o_n = sum_m D_nm (q_n . k_m) v_m``.

    Args:
        q: ``[B, H, T, dk]`` queries (already rotated/scaled as the caller wants).
        k: ``[B, H, T, dk]`` keys.
        v: ``[B, H, T, dv]`` values.
        gamma: ``[H]`` per-head decay, each in ``(0, 1]`` (checked on CPU, and on other devices
            in debug mode).
        initial_state: ``[B, H, dk, dv]`` state before the first token, or ``None`` (zeros);
            causal only.
        reset: ``[B, T]`` bool, drop the state before the flagged steps (causal only).
        mask: ``[B, T]`` bool, true = real token; padded steps leave the state unchanged.
        causal: causal decay ``gamma^(n-m) [n >= m]`` (default) or symmetric ``gamma^|n-m|``.
        backend: ``None`` (automatic), ``"naive"``, ``"chunk"`` or ``"triton"``.
        chunk_size: tokens per chunk for the ``"chunk"`` backend.

    Returns:
        ``o [B, H, T, dv]`` in the dtype of ``q`` and, when causal, the final state
        ``[B, H, dk, dv]`` (float32 or wider) to pass as ``initial_state`` for the next piece;
        ``None`` when not causal.

    Raises:
        ValueError / TypeError: wrong shapes, non-float dtypes, ``gamma`` outside ``(0, 1]``, or
            a state or ``reset`` given with ``causal=False``.
    """
    where = "retention"
    check_tensor("q", q, ("B", "H", "T", "dk"), where=where)
    b, h, t, dk = q.shape
    check_tensor("k", k, (b, h, t, dk), where=where)
    check_tensor("v", v, (b, h, t, "dv"), where=where)
    check_tensor("gamma", gamma, (h,), where=where)
    # A value check reads the tensor, which would stall a GPU stream: on CPU always, elsewhere in
    # debug mode (MIXERZOO_DEBUG=1).
    if (gamma.device.type == "cpu" or debug_enabled()) and not bool(
        ((gamma > 0) & (gamma <= 1)).all()
    ):
        raise ValueError(f"{where}: every gamma must lie in (0, 1], got {gamma.tolist()}")
    if initial_state is not None:
        if not causal:
            raise ValueError(
                f"{where}: causal=False looks at the whole sequence and takes no initial_state"
            )
        check_tensor("initial_state", initial_state, (b, h, dk, v.shape[-1]), where=where)
    if reset is not None and not causal:
        raise ValueError(
            f"{where}: causal=False looks at the whole sequence and takes no reset; run the "
            f"separate sequences as separate rows (padded with mask=)"
        )
    reset, mask = check_flags(reset, mask, b, t, where)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{where}: chunk_size must be a positive int, got {chunk_size!r}")
    choice = resolve_backend(where, backend, _AVAILABLE, q.device)
    if t == 0:
        # An empty piece: the recurrence returns the state unchanged and no output.
        choice = "naive"
    if choice == "triton":
        from mixerzoo.core.ops.retention.triton import (
            bidirectional_retention_triton,
            retention_triton,
        )

        if causal:
            o, state = retention_triton(q, k, v, gamma, initial_state, reset=reset, mask=mask)
            return o.to(q.dtype), state
        return bidirectional_retention_triton(q, k, v, gamma, mask=mask).to(q.dtype), None
    if causal:
        if choice == "naive":
            o, state = naive_retention(q, k, v, gamma, initial_state, reset=reset, mask=mask)
        else:
            o, state = chunk_retention(
                q, k, v, gamma, initial_state, chunk_size, reset=reset, mask=mask
            )
        return o.to(q.dtype), state
    if choice == "naive":
        o = naive_bidirectional_retention(q, k, v, gamma, mask=mask)
    else:
        o = chunk_bidirectional_retention(q, k, v, gamma, chunk_size, mask=mask)
    return o.to(q.dtype), None
