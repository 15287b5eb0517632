"""The mLSTM cell: a matrix-memory LSTM with exponential input gates and a stabiliser.

Follows "xLSTM: Extended Long Short-Term Memory" (Beck, Pöppel, Spanring, Auer, Prudnikova,
Kopp, Klambauer, Brandstetter and Hochreiter, 2024, arXiv 2405.04517), the mLSTM section and its appendix.
Per head, with the memory stored as ``C [dk, dv]`` (the transpose of the paper's ``v k^T``, so
that ``h = q C`` like the other linear-attention ops here)::

    C_t = f_t C_{t-1} + i_t k_t^T v_t,    n_t = f_t n_{t-1} + i_t k_t
    h~_t = q_t C_t / max(|q_t . n_t|, 1)

computed in the stabilised form with ``m_t = max(log f_t + m_{t-1}, log i_t)``, storing
``C_t exp(-m_t)`` and ``n_t exp(-m_t)`` (so the lower bound 1 becomes ``exp(-m_t)``). The gates are
passed as logarithms: ``log_i`` is the exponential input gate's pre-activation and ``log_f`` is
``logsigmoid(f~)`` for the sigmoid forget gate (or ``f~`` itself for the exponential one). As in
the authors' code, ``eps`` (default ``1e-6``) is added to the normaliser. The state before the
first token is zeros with ``m_0 = 0``, as in the authors' recurrent step. The output gate, the
``d_k^-0.5`` key scaling and the block around the cell live in the mixer
(``mixerzoo.core.mixers.mlstm``).

**Resets and padding** (exact semantics, for every backend):

- ``reset [B, T]`` (bool): where true, ``(C, n, m)`` is set to zero (the initial state, ``m = 0``
  included) *before* step ``t``; the step then runs as usual, so ``m_t = max(log f_t, log i_t)``
  (``log f_t`` still enters the stabiliser, though it multiplies an empty memory). The segments
  of a packed row never see each other, and ``initial_state`` reaches only the steps before the
  row's first reset.
- ``mask [B, T]`` (bool, true = real step): a masked step is the identity on ``(C, n, m)`` (as
  with ``log f_t = 0`` and ``log i_t = -inf``, input gate 0); its output is the query read against
  the unchanged state (callers normally ignore it) and ``k``, ``v``, the gates there get zero
  gradient. A reset at a masked step still zeroes the state. The final state is the one after
  each row's last real step.

``log_i = -inf`` (input gate 0) is also accepted anywhere as a value.

Backends: ``"naive"`` (stabilised recurrence), ``"chunk"`` (parallel form per chunk, state
carried across chunks) and ``"triton"`` (fused chunkwise kernels on the design of the GLA ones,
:mod:`.triton`; the automatic choice for CUDA tensors). ``parallel_mlstm`` is the paper's ``T x T`` stabilised parallel form.
"""

from __future__ import annotations

import torch

from mixerzoo.core.ops.backend import resolve_backend
from mixerzoo.core.ops.gla.flags import check_flags
from mixerzoo.core.ops.mlstm.chunk import chunk_mlstm, parallel_mlstm
from mixerzoo.core.ops.mlstm.naive import naive_mlstm
from mixerzoo.core.validation import check_tensor

__all__ = ["mlstm", "parallel_mlstm", "chunk_mlstm", "naive_mlstm", "MLSTMState"]

MLSTMState = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

_AVAILABLE = ("naive", "chunk", "triton")


def mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_i: torch.Tensor,
    log_f: torch.Tensor,
    initial_state: MLSTMState | None = None,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    eps: float = 1e-6,
    backend: str | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, MLSTMState]:
    """Multi-head mLSTM cell (without the output gate).

    Args:
        q: ``[B, H, T, dk]`` queries.
        k: ``[B, H, T, dk]`` keys (the paper scales them by ``dk^-0.5``; the caller does).
        v: ``[B, H, T, dv]`` values.
        log_i: ``[B, H, T]`` log input gates.
        log_f: ``[B, H, T]`` log forget gates.
        initial_state: ``(C [B, H, dk, dv], n [B, H, dk], m [B, H])`` before the first token, or
            ``None`` (zeros).
        reset: ``[B, T]`` bool, drop the state before the flagged steps (module docstring).
        mask: ``[B, T]`` bool, true = real step; masked steps leave the state unchanged.
        eps: added to the normaliser ``max(|q . n|, exp(-m))``.
        backend: ``None`` (automatic), ``"naive"``, ``"chunk"`` or ``"triton"``.
        chunk_size: tokens per chunk for the ``"chunk"`` backend.

    Returns:
        ``h [B, H, T, dv]`` in the dtype of ``q`` and the final ``(C, n, m)`` (float32 or wider),
        to pass as ``initial_state`` for the next piece.
    """
    where = "mlstm"
    check_tensor("q", q, ("B", "H", "T", "dk"), where=where)
    b, h, t, dk = q.shape
    check_tensor("k", k, (b, h, t, dk), where=where)
    check_tensor("v", v, (b, h, t, "dv"), where=where)
    check_tensor("log_i", log_i, (b, h, t), where=where)
    check_tensor("log_f", log_f, (b, h, t), where=where)
    if initial_state is not None:
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 3:
            raise TypeError(
                f"{where}: initial_state must be a tuple (C, n, m), got {type(initial_state).__name__}"
            )
        c_mem, n_mem, m = initial_state
        check_tensor("initial_state[0] (C)", c_mem, (b, h, dk, v.shape[-1]), where=where)
        check_tensor("initial_state[1] (n)", n_mem, (b, h, dk), where=where)
        check_tensor("initial_state[2] (m)", m, (b, h), where=where)
        initial_state = (c_mem, n_mem, m)
    reset, mask = check_flags(reset, mask, b, t, where)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{where}: chunk_size must be a positive int, got {chunk_size!r}")
    choice = resolve_backend(where, backend, _AVAILABLE, q.device)
    if t == 0:
        # An empty piece: the recurrence returns the state unchanged and no output.
        choice = "naive"
    if choice == "triton":
        from mixerzoo.core.ops.mlstm.triton import mlstm_triton

        out, state = mlstm_triton(q, k, v, log_i, log_f, initial_state, eps, reset=reset, mask=mask)
    elif choice == "naive":
        out, state = naive_mlstm(q, k, v, log_i, log_f, initial_state, eps, reset=reset, mask=mask)
    else:
        out, state = chunk_mlstm(
            q, k, v, log_i, log_f, initial_state, eps, chunk_size, reset=reset, mask=mask
        )
    return out.to(q.dtype), state
