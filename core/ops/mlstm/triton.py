"""Fused Triton kernels for the chunkwise mLSTM cell, on the design of the GLA kernels.

xLSTM ("xLSTM: Extended Long Short-Term Memory", Beck et al., 2024, arXiv 2405.04517), the
stabilised mLSTM of :mod:`.naive` (resets and padding included, see
:mod:`mixerzoo.core.ops.mlstm`). With ``m_t`` the recurrent stabiliser, ``G`` the chunk-local
cumulative log forget gates and ``C~ = [C, n]`` (the normaliser as one more value column, ``v~ =
[v, 1]``), the stabilised state and outputs are a linear attention with one gate per head whose
every weight carries its own stabiliser::

    N_t = sum_{s <= t} (q_t . k_s) exp(G_t - G_s + log i_s - m_t) v~_s + exp(m_prev + G_t - m_t) q_t C~
    C~ <- exp(m_prev + G_end - m_end) C~ + sum_s exp(log i_s + G_end - G_s - m_end) k_s^T v~_s
    h_t = N_t[:dv] / (max(|N_t[dv]|, exp(-m_t)) + eps)

with every exponent ``<= 0`` because ``m`` is the running maximum of exactly these log weights.
So the kernels are the shared chunkwise passes of :mod:`mixerzoo.core.ops.chunkwise_triton`
(a sequential state pass and a chunk-parallel output pass forward; a sequential state-gradient
pass and a chunk-parallel gradient pass backward), as for GLA, with these exponents (``m`` an
input) and their gradients.

``m`` itself is computed in PyTorch (:func:`stabilizer`): inside chunks of 64 steps as the
maximum over the ``[64, 64]`` log weights, across chunks by one short loop; autograd routes its
gradient to the winning gate (ties split as ``torch.maximum`` does). The kernels return the
gradient of ``N`` and of the final state with respect to ``m`` (every stabilised quantity is
``exp(-m)`` times an unstabilised one), so the whole cell is differentiated exactly, ``eps``
term included. Matrix products and dtypes as in the GLA kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from mixerzoo.core.layers.sequence import segment_ids
from mixerzoo.core.ops.chunkwise_triton import (
    SUPPORTED_DTYPES,
    _blocks,
    _grad_pass,
    _output_pass,
    _sequential_pass,
    backward_passes,
    check_inputs,
    forward_passes,
)

__all__ = ["mlstm_triton", "stabilizer", "SUPPORTED_DTYPES"]


@triton.jit
def _exponents(gates, bh, c, t, mt, tk, mtk, offs_t, T, K, pairs, first, last, keep,
               HAS_M0: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr):  # fmt: skip
    """The chunkwise design's terms (:mod:`mixerzoo.core.ops.chunkwise_triton`) from ``gates =
    (log i, log f, m, m0)``, every exponent masked before ``exp``: ``W [T, T]``, ``e_read``,
    ``e_write`` (``[T, 1]``), ``e_keep``; and the position of the chunk's last row."""
    li_ptr, lf_ptr, m_ptr, m0_ptr = gates
    li_ptr += bh * T
    lf_ptr += bh * T
    m_ptr += bh * T
    li = tl.load(li_ptr + t, mask=mt, other=float("-inf")).to(ACC)
    G = tl.cumsum(tl.load(lf_ptr + t, mask=mt, other=0.0).to(ACC), 0)
    # Rows past T repeat the last real row's m (their gates are identity steps).
    last_row = tl.minimum(c * BLOCK_T + BLOCK_T - 1, T - 1)
    m = tl.load(m_ptr + tl.minimum(t, T - 1)).to(ACC)
    m_end = tl.load(m_ptr + last_row).to(ACC)
    if c > 0:
        m_prev = tl.load(m_ptr + c * BLOCK_T - 1).to(ACC)
    else:
        if HAS_M0:
            m_prev = tl.load(m0_ptr + bh).to(ACC)
        else:
            m_prev = tl.zeros([], dtype=ACC)
    g_end = tl.sum(tl.where(offs_t == BLOCK_T - 1, G, 0.0), 0)
    W = tl.exp(tl.where(pairs, G[:, None] - G[None, :] + li[None, :] - m[:, None], float("-inf")))
    e_read = tl.exp(tl.where(first, m_prev + G - m, float("-inf")))[:, None]
    e_write = tl.exp(tl.where(last, li + g_end - G - m_end, float("-inf")))[:, None]
    e_keep = tl.exp(tl.where(keep, m_prev + g_end - m_end, float("-inf")))
    return W, e_read, e_write, e_keep, last_row


@triton.jit
def _mlstm_state_kernel(
    k_ptr, v_ptr, li_ptr, lf_ptr, m_ptr, m0_ptr, h0_ptr, reset_ptr,
    states_ptr,  # [B, H, NC, K, V] out: the state entering each chunk
    final_ptr,  # [B, H, K, V] out
    T, H, K, V, NC,
    HAS_H0: tl.constexpr, HAS_M0: tl.constexpr, HAS_RESET: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    _sequential_pass(
        k_ptr, v_ptr, (li_ptr, lf_ptr, m_ptr, m0_ptr), h0_ptr, reset_ptr, states_ptr, final_ptr,
        T, H, K, V, NC, TERMS=_exponents, GATE=HAS_M0, REVERSE=False, HAS_START=HAS_H0,
        HAS_RESET=HAS_RESET, STORE_END=True, BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K, BLOCK_V=BLOCK_V,
        ACC=ACC, DOT=DOT,
    )  # fmt: skip


@triton.jit
def _mlstm_output_kernel(
    q_ptr, k_ptr, v_ptr, li_ptr, lf_ptr, m_ptr, m0_ptr, reset_ptr, states_ptr,
    n_ptr,  # [B, H, T, V] out: the stabilised numerators N (normaliser in the last column)
    T, H, K, V, NC,
    HAS_M0: tl.constexpr, HAS_RESET: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    _output_pass(
        q_ptr, k_ptr, v_ptr, (li_ptr, lf_ptr, m_ptr, m0_ptr), reset_ptr, states_ptr, n_ptr,
        T, H, K, V, NC, TERMS=_exponents, GATE=HAS_M0, SCALAR=True, HAS_RESET=HAS_RESET,
        BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K, BLOCK_V=BLOCK_V, ACC=ACC, DOT=DOT,
    )  # fmt: skip


@triton.jit
def _mlstm_dstate_kernel(
    q_ptr, li_ptr, lf_ptr, m_ptr, m0_ptr, reset_ptr,
    dn_ptr,  # [B, H, T, V] gradient of N
    dfinal_ptr,  # [B, H, K, V] (HAS_DFINAL)
    dstates_ptr,  # [B, H, NC, K, V] out: the gradient of the state leaving each chunk
    dh0_ptr,  # [B, H, K, V] out (HAS_H0)
    T, H, K, V, NC,
    HAS_H0: tl.constexpr, HAS_M0: tl.constexpr, HAS_RESET: tl.constexpr,
    HAS_DFINAL: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    _sequential_pass(
        q_ptr, dn_ptr, (li_ptr, lf_ptr, m_ptr, m0_ptr), dfinal_ptr, reset_ptr, dstates_ptr,
        dh0_ptr, T, H, K, V, NC, TERMS=_exponents, GATE=HAS_M0, REVERSE=True,
        HAS_START=HAS_DFINAL, HAS_RESET=HAS_RESET, STORE_END=HAS_H0, BLOCK_T=BLOCK_T,
        BLOCK_K=BLOCK_K, BLOCK_V=BLOCK_V, ACC=ACC, DOT=DOT,
    )  # fmt: skip


@triton.jit
def _mlstm_gate_grads(gate_grads, part, c, t, mt, tk, mtk, is_end, T, K, NC, q, k, S, dS, A, dA,
                      dq, dk, q_state, k_state, e_keep, last_row, HAS_M0: tl.constexpr,
                      BLOCK_T: tl.constexpr):  # fmt: skip
    """The gradients of ``log f`` (summed from the end of the chunk), ``log i``, ``m`` and
    ``m_prev`` (this value block's share) through the exponents of :func:`_exponents`."""
    dli_ptr, dlf_ptr, dm_ptr, dprev_ptr = gate_grads
    # Gradients of the exponents: pairs (row t, column s), read (row t), write (key s), keep.
    dP = dA * A
    rows = tl.sum(dP, 1)
    cols = tl.sum(dP, 0)
    d_read = tl.sum(q * q_state, 1)
    d_write = tl.sum(k * k_state, 1)
    d_keep = e_keep * tl.sum(tl.sum(S * dS, 1), 0)
    end_total = tl.sum(d_write, 0) + d_keep  # enters g_end (+) and m_end (-)
    # Pair exponent G_t - G_s + log i_s - m_t; read m_prev + G_t - m_t; write
    # log i_s + G_end - G_s - m_end; keep m_prev + G_end - m_end.
    dG = rows - cols + d_read - d_write + tl.where(is_end, end_total, 0.0)
    dli = cols + d_write
    dm = -rows - d_read - tl.where(t == last_row, end_total, 0.0)
    tl.store(dlf_ptr + part * T + t, tl.cumsum(dG, 0, reverse=True), mask=mt)
    tl.store(dli_ptr + part * T + t, dli, mask=mt)
    tl.store(dm_ptr + part * T + t, dm, mask=mt)
    tl.store(dprev_ptr + part * NC + c, tl.sum(d_read, 0) + d_keep)


@triton.jit
def _mlstm_grad_kernel(
    q_ptr, k_ptr, v_ptr, li_ptr, lf_ptr, m_ptr, m0_ptr, reset_ptr, states_ptr, dstates_ptr,
    dn_ptr,
    dq_ptr, dk_ptr,  # [NVB, B, H, T, K]
    dli_ptr, dlf_ptr, dm_ptr,  # [NVB, B, H, T]
    dprev_ptr,  # [NVB, B, H, NC]: gradient of m_prev (the previous chunk's last m, or m0)
    dv_ptr,  # [B, H, T, V]
    T, H, K, V, NC,
    HAS_M0: tl.constexpr, HAS_RESET: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    _grad_pass(
        q_ptr, k_ptr, v_ptr, (li_ptr, lf_ptr, m_ptr, m0_ptr), reset_ptr, states_ptr, dstates_ptr,
        dn_ptr, dq_ptr, dk_ptr, (dli_ptr, dlf_ptr, dm_ptr, dprev_ptr), dv_ptr, T, H, K, V, NC,
        TERMS=_exponents, GATE_GRADS=_mlstm_gate_grads, GATE=HAS_M0, SCALAR=True,
        HAS_RESET=HAS_RESET, BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K, BLOCK_V=BLOCK_V, ACC=ACC, DOT=DOT,
    )  # fmt: skip


class _StabilisedAttention(torch.autograd.Function):
    """``(N [B, H, T, V], final state [B, H, K, V])`` of the module docstring for a given ``m``."""

    @staticmethod
    def forward(ctx, q, k, v, log_i, log_f, m, h0, m0, reset, blocks):
        blocks = blocks or _blocks(q.shape[-1], v.shape[-1])
        ins = [x.contiguous() for x in (q, k, v, log_i, log_f, m)]
        h0_ = h0.contiguous() if h0 is not None else None
        m0_ = m0.contiguous() if m0 is not None else None
        reset_ = reset.to(torch.int8).contiguous() if reset is not None else None
        q_, k_, v_, li_, lf_, m_ = ins
        acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        numer, final, states = forward_passes(
            (_mlstm_state_kernel, _mlstm_output_kernel), q_, k_, v_, (li_, lf_, m_, m0_), h0_,
            reset_, blocks, acc_dtype, HAS_M0=m0 is not None,
        )  # fmt: skip
        ctx.save_for_backward(*ins, h0_, m0_, reset_, states)
        ctx.meta = blocks
        ctx.set_materialize_grads(False)
        return numer, final

    @staticmethod
    def backward(ctx, grad_numer, grad_final):
        q, k, v, li, lf, m, h0, m0, reset, states = ctx.saved_tensors
        blocks = ctx.meta
        n_chunks = states.shape[2]
        per_step, per_chunk = li.shape, (*li.shape[:2], n_chunks)
        dq, dk, dv, dh0, (dli, dlf, dm, dprev) = backward_passes(
            (_mlstm_dstate_kernel, _mlstm_grad_kernel), q, k, v, (li, lf, m, m0), h0, reset,
            states, grad_numer, grad_final, (per_step, per_step, per_step, per_chunk), blocks,
            HAS_M0=m0 is not None,
        )  # fmt: skip
        # m_prev of chunk c is m at the previous chunk's last step (m0 for the first chunk).
        if n_chunks > 1:
            ends = torch.arange(1, n_chunks, device=q.device) * blocks[0] - 1
            dm.index_add_(2, ends, dprev[..., 1:])
        dm0 = dprev[..., 0].to(m0.dtype) if m0 is not None else None
        return (
            dq,
            dk,
            dv,
            dli.to(li.dtype),
            dlf.to(lf.dtype),
            dm.to(m.dtype),
            dh0,
            dm0,
            None,
            None,
        )


def stabilizer(
    log_i: torch.Tensor,
    log_f: torch.Tensor,
    m0: torch.Tensor | None,
    reset: torch.Tensor | None,
    chunk: int = 64,
) -> torch.Tensor:
    """The recurrent stabiliser ``m_t = max(log f_t + m_{t-1}, log i_t)`` (``m = 0`` before a
    reset) for every step, ``[B, H, T]``, differentiable (autograd routes its gradient to the
    maximising gate).

    Inside a chunk ``m_t = max(max_{s <= t} (log i_s + G_t - G_s), m_prev + G_t)`` with ``G`` the
    chunk-local cumulative log forget gates, over the pairs of one segment; after a reset at
    ``r`` the zero state's column ``G_t - G_{r-1}`` replaces ``m_prev + G_t``. Masked steps must
    already be identity steps (``log i = -inf``, ``log f = 0``).
    """
    batch, heads, length = log_i.shape
    size = min(chunk, length)
    n_chunks = math.ceil(length / size)
    pad = n_chunks * size - length
    li = F.pad(log_i, (0, pad), value=float("-inf")).view(batch, heads, n_chunks, size)
    lf = F.pad(log_f, (0, pad), value=0.0).view(batch, heads, n_chunks, size)
    G = lf.cumsum(-1)
    causal = torch.ones(size, size, dtype=torch.bool, device=log_i.device).tril()
    pairs = causal
    if reset is not None:
        flags = F.pad(reset, (0, pad), value=False).view(batch, 1, n_chunks, size)
        seg = segment_ids(flags.reshape(-1, size), (batch * n_chunks, size)).view(flags.shape)
        pairs = causal & (seg[..., :, None] == seg[..., None, :])
        first = seg == 0
        # G_{r-1} of the latest reset r <= t (inside the chunk).
        index = torch.arange(size, device=log_i.device).expand(flags.shape)
        latest = torch.where(flags, index, 0).cummax(-1).values.expand(batch, heads, -1, -1)
        base = (G - lf).gather(-1, latest)
        zero_column = G - base
    else:
        first = None
    cand = G[..., :, None] - G[..., None, :] + li[..., None, :]
    local = torch.where(pairs, cand, float("-inf")).amax(-1)
    if reset is not None:
        local = torch.where(first, local, torch.maximum(local, zero_column))
    m_prev = m0 if m0 is not None else log_i.new_zeros(batch, heads)
    out = []
    for c in range(n_chunks):
        carried = m_prev[..., None] + G[:, :, c]
        if first is not None:
            carried = torch.where(first[:, :, c], carried, float("-inf"))
        m_c = torch.maximum(local[:, :, c], carried)
        out.append(m_c)
        m_prev = m_c[..., -1]
    return torch.cat(out, -1)[..., :length]


def mlstm_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_i: torch.Tensor,
    log_f: torch.Tensor,
    initial_state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    eps: float = 1e-6,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    blocks: tuple[int, int, int, int] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Fused chunkwise mLSTM; same arguments and results as
    :func:`mixerzoo.core.ops.mlstm.naive.naive_mlstm` (shapes checked by the public op).

    Returns:
        ``h [B, H, T, dv]`` in the compute dtype (float32, float64 for float64 ``q``) and the final
        ``(C, n, m)``.
    """
    state = list(initial_state) if initial_state is not None else []
    named = (("q", q), ("k", k), ("v", v), ("log_i", log_i), ("log_f", log_f),
             *(("initial_state", s) for s in state))  # fmt: skip
    # The kernels see one more value column: the normaliser's.
    check_inputs("mlstm", named, q, v.shape[-1] + 1, blocks)
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    log_i, log_f = log_i.to(compute), log_f.to(compute)
    if mask is not None:
        # A masked step is the identity on (C, n, m): input gate 0, forget gate 1, key 0.
        keep = mask[:, None, :]
        log_i = torch.where(keep, log_i, float("-inf"))
        log_f = torch.where(keep, log_f, 0.0)
    c0, n0, m0 = (x.to(compute) for x in state) if state else (None, None, None)
    m = stabilizer(log_i, log_f, m0, reset)
    # The normaliser n is the memory of a value column of ones.
    v_ext = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    h0 = torch.cat([c0, n0[..., None]], dim=-1) if state else None
    numer, final = _StabilisedAttention.apply(
        q, k, v_ext, log_i, log_f, m, h0, m0, reset, blocks
    )  # fmt: skip
    denominator = torch.maximum(numer[..., -1].abs(), torch.exp(-m)) + eps
    h = numer[..., :-1] / denominator[..., None]
    return h, (final[..., :-1], final[..., -1], m[..., -1])
