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
So the kernels are those of :mod:`mixerzoo.core.ops.gla.triton` (a sequential state pass and a
chunk-parallel output pass forward; a sequential state-gradient pass and a chunk-parallel
gradient pass backward) with these exponents, ``m`` an input.

``m`` itself is computed in PyTorch (:func:`stabilizer`): inside chunks of 64 steps as the
maximum over the ``[64, 64]`` log weights, across chunks by one short loop; autograd routes its
gradient to the winning gate (ties split as ``torch.maximum`` does). The kernels return the
gradient of ``N`` and of the final state with respect to ``m`` (every stabilised quantity is
``exp(-m)`` times an unstabilised one), so the whole cell is differentiated exactly, ``eps``
term included. Matrix products and dtypes as in the GLA kernels.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from mixerzoo.core.layers.sequence import segment_ids
from mixerzoo.core.ops.gla.triton import _chunk_masks, _dot
from mixerzoo.core.ops.linear_scan.triton import check_device

__all__ = ["mlstm_triton", "stabilizer", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _exponents(li_ptr, lf_ptr, m_ptr, m0_ptr, bh, c, t, mt, offs_t, T, pairs, first, last, keep,
               HAS_M0: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr):  # fmt: skip
    """The chunk's weights (every exponent masked before ``exp``): ``W [T, T]``, ``e_read``,
    ``e_write`` (``[T, 1]``), ``e_keep``; and what the gradient pass needs: ``m`` per row, the
    positions of the chunk's last row, ``m_prev`` and ``m_end``."""
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
    bh = tl.program_id(0).to(tl.int64)
    offs_t = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    offs_v = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    mk = offs_k < K
    mv = offs_v < V
    mkv = mk[:, None] & mv[None, :]
    kv = offs_k[:, None] * V + offs_v[None, :]
    k_ptr += bh * T * K
    v_ptr += bh * T * V
    li_ptr += bh * T
    lf_ptr += bh * T
    m_ptr += bh * T
    reset_ptr += (bh // H) * T
    if HAS_H0:
        S = tl.load(h0_ptr + bh * K * V + kv, mask=mkv, other=0.0).to(ACC)
    else:
        S = tl.zeros([BLOCK_K, BLOCK_V], dtype=ACC)
    c = 0
    while c < NC:
        tl.store(states_ptr + (bh * NC + c) * K * V + kv, S, mask=mkv)
        t = c * BLOCK_T + offs_t
        mt = t < T
        k = tl.load(k_ptr + (t * K)[:, None] + offs_k[None, :],
                    mask=mt[:, None] & mk[None, :], other=0.0).to(ACC)  # fmt: skip
        v = tl.load(v_ptr + (t * V)[:, None] + offs_v[None, :],
                    mask=mt[:, None] & mv[None, :], other=0.0).to(ACC)  # fmt: skip
        pairs, first, last, keep = _chunk_masks(reset_ptr, t, mt, offs_t, HAS_RESET)
        _, _, e_write, e_keep, _ = _exponents(
            li_ptr, lf_ptr, m_ptr, m0_ptr, bh, c, t, mt, offs_t, T, pairs, first, last, keep,
            HAS_M0, ACC, BLOCK_T,
        )  # fmt: skip
        S = e_keep * S + tl.dot(tl.trans(k * e_write), v, input_precision=DOT)
        c += 1
    tl.store(final_ptr + bh * K * V + kv, S, mask=mkv)


@triton.jit
def _mlstm_output_kernel(
    q_ptr, k_ptr, v_ptr, li_ptr, lf_ptr, m_ptr, m0_ptr, reset_ptr, states_ptr,
    n_ptr,  # [B, H, T, V] out: the stabilised numerators N (normaliser in the last column)
    T, H, K, V, NC,
    HAS_M0: tl.constexpr, HAS_RESET: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_t = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    offs_v = tl.program_id(2) * BLOCK_V + tl.arange(0, BLOCK_V)
    mk = offs_k < K
    mv = offs_v < V
    t = c * BLOCK_T + offs_t
    mt = t < T
    tk = (t * K)[:, None] + offs_k[None, :]
    mtk = mt[:, None] & mk[None, :]
    tv = (t * V)[:, None] + offs_v[None, :]
    mtv = mt[:, None] & mv[None, :]
    q = tl.load(q_ptr + bh * T * K + tk, mask=mtk, other=0.0).to(ACC)
    k = tl.load(k_ptr + bh * T * K + tk, mask=mtk, other=0.0).to(ACC)
    v = tl.load(v_ptr + bh * T * V + tv, mask=mtv, other=0.0).to(ACC)
    S = tl.load(states_ptr + (bh * NC + c) * K * V + offs_k[:, None] * V + offs_v[None, :],
                mask=mk[:, None] & mv[None, :], other=0.0)  # fmt: skip
    pairs, first, last, keep = _chunk_masks(reset_ptr + (bh // H) * T, t, mt, offs_t, HAS_RESET)
    W, e_read, _, _, _ = _exponents(
        li_ptr + bh * T, lf_ptr + bh * T, m_ptr + bh * T, m0_ptr, bh, c, t, mt, offs_t, T,
        pairs, first, last, keep, HAS_M0, ACC, BLOCK_T,
    )  # fmt: skip
    A = tl.dot(q, tl.trans(k), input_precision=DOT) * W
    out = tl.dot(A, v, input_precision=DOT) + tl.dot(q * e_read, S, input_precision=DOT)
    tl.store(n_ptr + bh * T * V + tv, out.to(n_ptr.dtype.element_ty), mask=mtv)


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
    bh = tl.program_id(0).to(tl.int64)
    offs_t = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    offs_v = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    mk = offs_k < K
    mv = offs_v < V
    mkv = mk[:, None] & mv[None, :]
    kv = offs_k[:, None] * V + offs_v[None, :]
    q_ptr += bh * T * K
    dn_ptr += bh * T * V
    li_ptr += bh * T
    lf_ptr += bh * T
    m_ptr += bh * T
    reset_ptr += (bh // H) * T
    if HAS_DFINAL:
        dS = tl.load(dfinal_ptr + bh * K * V + kv, mask=mkv, other=0.0).to(ACC)
    else:
        dS = tl.zeros([BLOCK_K, BLOCK_V], dtype=ACC)
    c = NC - 1
    while c >= 0:
        tl.store(dstates_ptr + (bh * NC + c) * K * V + kv, dS, mask=mkv)
        t = c * BLOCK_T + offs_t
        mt = t < T
        q = tl.load(q_ptr + (t * K)[:, None] + offs_k[None, :],
                    mask=mt[:, None] & mk[None, :], other=0.0).to(ACC)  # fmt: skip
        dn = tl.load(dn_ptr + (t * V)[:, None] + offs_v[None, :],
                     mask=mt[:, None] & mv[None, :], other=0.0).to(ACC)  # fmt: skip
        pairs, first, last, keep = _chunk_masks(reset_ptr, t, mt, offs_t, HAS_RESET)
        _, e_read, _, e_keep, _ = _exponents(
            li_ptr, lf_ptr, m_ptr, m0_ptr, bh, c, t, mt, offs_t, T, pairs, first, last, keep,
            HAS_M0, ACC, BLOCK_T,
        )  # fmt: skip
        dS = e_keep * dS + tl.dot(tl.trans(q * e_read), dn, input_precision=DOT)
        c -= 1
    if HAS_H0:
        tl.store(dh0_ptr + bh * K * V + kv, dS.to(dh0_ptr.dtype.element_ty), mask=mkv)


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
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    vblock = tl.program_id(2)
    n_bh = tl.num_programs(1)
    offs_t = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    offs_v = vblock * BLOCK_V + tl.arange(0, BLOCK_V)
    mk = offs_k < K
    mv = offs_v < V
    mkv = mk[:, None] & mv[None, :]
    kv = offs_k[:, None] * V + offs_v[None, :]
    t = c * BLOCK_T + offs_t
    mt = t < T
    tk = (t * K)[:, None] + offs_k[None, :]
    mtk = mt[:, None] & mk[None, :]
    tv = (t * V)[:, None] + offs_v[None, :]
    mtv = mt[:, None] & mv[None, :]
    q = tl.load(q_ptr + bh * T * K + tk, mask=mtk, other=0.0).to(ACC)
    k = tl.load(k_ptr + bh * T * K + tk, mask=mtk, other=0.0).to(ACC)
    v = tl.load(v_ptr + bh * T * V + tv, mask=mtv, other=0.0).to(ACC)
    dn = tl.load(dn_ptr + bh * T * V + tv, mask=mtv, other=0.0).to(ACC)
    S = tl.load(states_ptr + (bh * NC + c) * K * V + kv, mask=mkv, other=0.0)
    dS = tl.load(dstates_ptr + (bh * NC + c) * K * V + kv, mask=mkv, other=0.0)
    pairs, first, last, keep = _chunk_masks(reset_ptr + (bh // H) * T, t, mt, offs_t, HAS_RESET)
    W, e_read, e_write, e_keep, last_row = _exponents(
        li_ptr + bh * T, lf_ptr + bh * T, m_ptr + bh * T, m0_ptr, bh, c, t, mt, offs_t, T,
        pairs, first, last, keep, HAS_M0, ACC, BLOCK_T,
    )  # fmt: skip
    scores = tl.dot(q, tl.trans(k), input_precision=DOT)
    A = scores * W
    dA = tl.where(pairs, tl.dot(dn, tl.trans(v), input_precision=DOT), 0.0)
    dAW = dA * W
    q_state = e_read * tl.dot(dn, tl.trans(S), input_precision=DOT)  # dq from the carried state
    k_state = e_write * tl.dot(v, tl.trans(dS), input_precision=DOT)  # dk from the state written
    dq = tl.dot(dAW, k, input_precision=DOT) + q_state
    dk = tl.dot(tl.trans(dAW), q, input_precision=DOT) + k_state
    dv = tl.dot(tl.trans(A), dn, input_precision=DOT) + tl.dot(k * e_write, dS, input_precision=DOT)
    # Gradients of the exponents: pairs (row t, column s), read (row t), write (key s), keep.
    dP = dA * A
    rows = tl.sum(dP, 1)
    cols = tl.sum(dP, 0)
    d_read = tl.sum(q * q_state, 1)
    d_write = tl.sum(k * k_state, 1)
    d_keep = e_keep * tl.sum(tl.sum(S * dS, 1), 0)
    end_total = tl.sum(d_write, 0) + d_keep  # enters g_end (+) and m_end (-)
    is_end = offs_t == BLOCK_T - 1
    # Pair exponent G_t - G_s + log i_s - m_t; read m_prev + G_t - m_t; write
    # log i_s + G_end - G_s - m_end; keep m_prev + G_end - m_end.
    dG = rows - cols + d_read - d_write + tl.where(is_end, end_total, 0.0)
    dli = cols + d_write
    dm = -rows - d_read - tl.where(t == last_row, end_total, 0.0)
    part = vblock.to(tl.int64) * n_bh + bh
    tl.store(dlf_ptr + part * T + t, tl.cumsum(dG, 0, reverse=True), mask=mt)
    tl.store(dli_ptr + part * T + t, dli, mask=mt)
    tl.store(dm_ptr + part * T + t, dm, mask=mt)
    tl.store(dprev_ptr + part * NC + c, tl.sum(d_read, 0) + d_keep)
    tl.store(dq_ptr + part * T * K + tk, dq, mask=mtk)
    tl.store(dk_ptr + part * T * K + tk, dk, mask=mtk)
    tl.store(dv_ptr + bh * T * V + tv, dv.to(dv_ptr.dtype.element_ty), mask=mtv)


def _blocks(dk: int, dv: int) -> tuple[int, int, int, int]:
    """(BLOCK_T, BLOCK_K, BLOCK_V, warps), as for the GLA kernels with one gate per head."""
    block_k = max(16, triton.next_power_of_2(dk))
    block_v = max(16, min(32, triton.next_power_of_2(dv)))
    if _INTERPRETED:
        return 8, block_k, block_v, 1
    return 16, block_k, block_v, 8


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


class _StabilisedAttention(torch.autograd.Function):
    """``(N [B, H, T, V], final state [B, H, K, V])`` of the module docstring for a given ``m``."""

    @staticmethod
    def forward(ctx, q, k, v, log_i, log_f, m, h0, m0, reset, blocks):
        batch, heads, length, dk = q.shape
        dv = v.shape[-1]
        block_t, block_k, block_v, warps = blocks or _blocks(dk, dv)
        n_chunks = triton.cdiv(length, block_t)
        n_vb = triton.cdiv(dv, block_v)
        acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        ins = [x.contiguous() for x in (q, k, v, log_i, log_f, m)]
        h0_ = h0.contiguous() if h0 is not None else None
        m0_ = m0.contiguous() if m0 is not None else None
        reset_ = reset.to(torch.int8).contiguous() if reset is not None else None
        numer = torch.empty(batch, heads, length, dv, dtype=acc_dtype, device=q.device)
        final = q.new_empty(batch, heads, dk, dv, dtype=acc_dtype)
        states = q.new_empty(batch, heads, n_chunks, dk, dv, dtype=acc_dtype)
        dummy = ins[0]
        consts = dict(
            HAS_M0=m0 is not None, HAS_RESET=reset is not None, BLOCK_T=block_t,
            BLOCK_K=block_k, BLOCK_V=block_v, ACC=_acc(q.dtype), DOT=_dot(q.dtype),
            num_warps=warps,
        )  # fmt: skip
        q_, k_, v_, li_, lf_, m_ = ins
        m0_arg = m0_ if m0_ is not None else dummy
        reset_arg = reset_ if reset_ is not None else dummy
        _mlstm_state_kernel[(batch * heads, n_vb)](
            k_, v_, li_, lf_, m_, m0_arg, h0_ if h0_ is not None else dummy, reset_arg,
            states, final, length, heads, dk, dv, n_chunks, HAS_H0=h0 is not None, **consts,
        )  # fmt: skip
        _mlstm_output_kernel[(n_chunks, batch * heads, n_vb)](
            q_, k_, v_, li_, lf_, m_, m0_arg, reset_arg, states, numer,
            length, heads, dk, dv, n_chunks, **consts,
        )  # fmt: skip
        ctx.save_for_backward(*ins, h0_, m0_, reset_, states)
        ctx.meta = (block_t, block_k, block_v, warps)
        ctx.set_materialize_grads(False)
        return numer, final

    @staticmethod
    def backward(ctx, grad_numer, grad_final):
        q, k, v, li, lf, m, h0, m0, reset, states = ctx.saved_tensors
        block_t, block_k, block_v, warps = ctx.meta
        batch, heads, length, dk = q.shape
        dv = v.shape[-1]
        n_chunks = states.shape[2]
        n_vb = triton.cdiv(dv, block_v)
        acc = states.dtype
        dn = (
            torch.zeros(batch, heads, length, dv, dtype=acc, device=q.device)
            if grad_numer is None
            else grad_numer.contiguous()
        )
        dstates = torch.empty_like(states)
        dq = q.new_empty(n_vb, batch, heads, length, dk, dtype=acc)
        dk_ = q.new_empty(n_vb, batch, heads, length, dk, dtype=acc)
        dli, dlf, dm = (q.new_empty(n_vb, batch, heads, length, dtype=acc) for _ in range(3))
        dprev = q.new_empty(n_vb, batch, heads, n_chunks, dtype=acc)
        dv_ = torch.empty_like(v)
        dh0 = torch.empty_like(h0) if h0 is not None else None
        consts = dict(
            HAS_M0=m0 is not None, HAS_RESET=reset is not None, BLOCK_T=block_t,
            BLOCK_K=block_k, BLOCK_V=block_v, ACC=_acc(q.dtype), DOT=_dot(q.dtype),
            num_warps=warps,
        )  # fmt: skip
        m0_arg = m0 if m0 is not None else q
        reset_arg = reset if reset is not None else q
        _mlstm_dstate_kernel[(batch * heads, n_vb)](
            q, li, lf, m, m0_arg, reset_arg, dn,
            grad_final.contiguous() if grad_final is not None else q, dstates,
            dh0 if dh0 is not None else q, length, heads, dk, dv, n_chunks,
            HAS_H0=h0 is not None, HAS_DFINAL=grad_final is not None, **consts,
        )  # fmt: skip
        _mlstm_grad_kernel[(n_chunks, batch * heads, n_vb)](
            q, k, v, li, lf, m, m0_arg, reset_arg, states, dstates, dn,
            dq, dk_, dli, dlf, dm, dprev, dv_, length, heads, dk, dv, n_chunks, **consts,
        )  # fmt: skip
        dm = dm.sum(0)
        dprev = dprev.sum(0)
        # m_prev of chunk c is m at the previous chunk's last step (m0 for the first chunk).
        if n_chunks > 1:
            ends = torch.arange(1, n_chunks, device=q.device) * block_t - 1
            dm.index_add_(2, ends, dprev[..., 1:])
        dm0 = dprev[..., 0].to(m0.dtype) if m0 is not None else None
        return (
            dq.sum(0).to(q.dtype),
            dk_.sum(0).to(k.dtype),
            dv_,
            dli.sum(0).to(li.dtype),
            dlf.sum(0).to(lf.dtype),
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
    where = "mlstm (triton)"
    state = list(initial_state) if initial_state is not None else []
    for name, x in (("q", q), ("k", k), ("v", v), ("log_i", log_i), ("log_f", log_f),
                    *(("initial_state", s) for s in state)):  # fmt: skip
        if x.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"{where}: {name} must be float16, bfloat16, float32 or float64, got {x.dtype} "
                f"(use backend='chunk')"
            )
    check_device(q, "mlstm")
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    if dk > 256:
        raise ValueError(f"{where}: head dim dk = {dk} > 256 is not supported (one key tile)")
    if max(dk, dv + 1) * length >= 2**31:
        raise ValueError(f"{where}: T * dk and T * dv must stay below 2^31 per head")
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
