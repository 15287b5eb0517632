"""Fused Triton kernels for chunkwise gated linear attention (GLA), forward and backward.

GLA ("Gated Linear Attention Transformers with Hardware-Efficient Training", Yang, Wang, Shen,
Panda and Kim, 2024, arXiv 2312.06635), per head ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``,
``o_t = q_t S_t``, with per-key-dimension log gates ``g [B, H, T, dk]`` or one gate per head
(``g [B, H, T]``, "simple GLA", of which retention is the constant case). Same semantics as
:mod:`.naive`, resets and padding masks included (see :mod:`mixerzoo.core.ops.gla`).

One program owns one (batch, head) and a block of ``BLOCK_V`` value columns, keeps its
``[dk, BLOCK_V]`` state in registers and walks the chunks of ``BLOCK_T`` tokens in order (the
chunkwise form of the paper, Section 3). Inside a chunk, with ``G`` the chunk-local cumulative log
gates, every exponent is a difference ``G_later - G_earlier <= 0`` (for gates in ``(0, 1]``),
masked *before* ``exp`` where a pair is not allowed (so no ``inf * 0``):

- scores ``A[t, s] = sum_d q_td k_sd exp(G_td - G_sd)`` for ``s <= t`` in one segment: a
  ``[BLOCK_T, BLOCK_T]`` matrix product scaled by the scalar decays for one gate per head, the
  ``[BLOCK_T, BLOCK_T, dk]`` differences materialised in registers for per-dimension gates (the
  paper's exact "log-space" intra-chunk form; hence ``BLOCK_T = 16`` there);
- output ``o = A v + (q * exp(G)) S`` (the carried state read only before the chunk's first
  reset);
- state ``S <- exp(G_end) S + (k * exp(G_end - G))^T v`` (only keys of the chunk's last segment;
  the old state only if no reset lies in the chunk).

The forward stores the state entering every chunk when a gradient is needed; the backward walks
the chunks right to left with the state's gradient ``dS`` in registers:
``dq = (dA * W) k + exp(G) (do S^T)``, ``dk = (dA * W)^T q + exp(G_end - G) (v dS^T)``,
``dv = A^T do + (k exp(G_end - G)) dS`` and ``dS <- exp(G_end) dS + (q exp(G))^T do``, with
``dA = do v^T``. The log gates' gradient follows from the identity ``dL/dG_t = q_t dq_t - k_t
dk_t`` (plus, at the chunk's end, the terms of ``G_end``), summed from the end of the chunk
backwards (``G`` is chunk-local, so no sum crosses a chunk). With more than one value block the
query, key and gate gradients are summed over blocks afterwards: no atomics, deterministic.

Matrix products run with ``input_precision=DOT`` (exact float32, not TF32: the tests hold the
kernels to the float32 tolerances of the loop). Arithmetic is float32 (float64 for float64
inputs); outputs and gradients are written in their inputs' dtypes, the final state in float32.
On the CPU the kernels run only under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from mixerzoo.core.ops.gla.chunk import apply_flags
from mixerzoo.core.ops.linear_scan.triton import check_device

__all__ = ["gla_triton", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Decided at import, as triton.jit decides whether to interpret.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _chunk_masks(reset_ptr, t, mt, offs_t, HAS_RESET: tl.constexpr):
    """Per chunk: the allowed pairs ``[BLOCK_T, BLOCK_T]`` (``s <= t`` in one segment), whether
    the carried state reaches ``t`` (``first``), whether key ``s`` enters the chunk-end state
    (``last``), and whether the carried state survives the chunk (``keep``)."""
    causal = offs_t[:, None] >= offs_t[None, :]
    if HAS_RESET:
        seg = tl.cumsum(tl.load(reset_ptr + t, mask=mt, other=0).to(tl.int32), 0)
        end = tl.max(seg, 0)
        pairs = causal & (seg[:, None] == seg[None, :])
        first = seg == 0
        last = seg == end
        keep = end == 0
    else:
        pairs = causal
        first = offs_t >= 0
        last = offs_t >= 0
        keep = True
    return pairs, first, last, keep


@triton.jit
def _gate_terms(g_ptr, t, mt, tk, mtk, offs_t, pairs, first, last, keep,
                SCALAR: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr):  # fmt: skip
    """Chunk-local decays: ``W`` (pairs; ``[T, T]`` or ``[T, T, K]``), ``e_read = exp(G)`` where
    the carried state is read, ``e_write = exp(G_end - G)`` where a key enters the chunk-end
    state, ``e_keep = exp(G_end)`` if the state survives the chunk (zeros elsewhere), and ``G``.
    Per-head gates give ``[T]`` factors (broadcast as ``[T, 1]``), per-dimension gates ``[T, K]``.
    Every exponent is masked before ``exp``."""
    is_end = offs_t == BLOCK_T - 1
    if SCALAR:
        G = tl.cumsum(tl.load(g_ptr + t, mask=mt, other=0.0).to(ACC), 0)  # [BLOCK_T]
        g_end = tl.sum(tl.where(is_end, G, 0.0), 0)
        W = tl.exp(tl.where(pairs, G[:, None] - G[None, :], float("-inf")))
        e_read = tl.exp(tl.where(first, G, float("-inf")))[:, None]
        e_write = tl.exp(tl.where(last, g_end - G, float("-inf")))[:, None]
        e_keep = tl.exp(tl.where(keep, g_end, float("-inf")))
    else:
        G = tl.cumsum(tl.load(g_ptr + tk, mask=mtk, other=0.0).to(ACC), 0)  # [BLOCK_T, BLOCK_K]
        g_end = tl.sum(tl.where(is_end[:, None], G, 0.0), 0)
        W = tl.exp(tl.where(pairs[:, :, None], G[:, None, :] - G[None, :, :], float("-inf")))
        e_read = tl.exp(tl.where(first[:, None], G, float("-inf")))
        e_write = tl.exp(tl.where(last[:, None], g_end[None, :] - G, float("-inf")))
        e_keep = tl.exp(tl.where(keep, g_end, float("-inf")))[:, None]
    return W, e_read, e_write, e_keep, G


@triton.jit
def _gla_state_kernel(
    k_ptr, v_ptr, g_ptr,  # [B, H, T, K], [B, H, T, V], [B, H, T, K or 1]
    h0_ptr,  # [B, H, K, V]
    reset_ptr,  # [B, T] int8
    states_ptr,  # [B, H, NC, K, V] out: the state entering each chunk
    final_ptr,  # [B, H, K, V] out
    T, H, K, V, NC,
    SCALAR: tl.constexpr, HAS_H0: tl.constexpr, HAS_RESET: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Forward, pass 1 (sequential over chunks): the state entering every chunk."""
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
    g_ptr += bh * T * (1 if SCALAR else K)
    reset_ptr += (bh // H) * T
    if HAS_H0:
        S = tl.load(h0_ptr + bh * K * V + kv, mask=mkv, other=0.0).to(ACC)
    else:
        S = tl.zeros([BLOCK_K, BLOCK_V], dtype=ACC)
    c = 0
    # while, not range: the interpreter cannot take a loop bound known only at run time.
    while c < NC:
        tl.store(states_ptr + (bh * NC + c) * K * V + kv, S, mask=mkv)
        t = c * BLOCK_T + offs_t
        mt = t < T
        tk = (t * K)[:, None] + offs_k[None, :]
        mtk = mt[:, None] & mk[None, :]
        k = tl.load(k_ptr + tk, mask=mtk, other=0.0).to(ACC)
        v = tl.load(v_ptr + (t * V)[:, None] + offs_v[None, :],
                    mask=mt[:, None] & mv[None, :], other=0.0).to(ACC)  # fmt: skip
        pairs, first, last, keep = _chunk_masks(reset_ptr, t, mt, offs_t, HAS_RESET)
        _, _, e_write, e_keep, _ = _gate_terms(
            g_ptr, t, mt, tk, mtk, offs_t, pairs, first, last, keep, SCALAR, ACC, BLOCK_T
        )
        S = e_keep * S + tl.dot(tl.trans(k * e_write), v, input_precision=DOT)
        c += 1
    tl.store(final_ptr + bh * K * V + kv, S, mask=mkv)


@triton.jit
def _gla_output_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, reset_ptr, states_ptr,
    o_ptr,  # [B, H, T, V] out
    T, H, K, V, NC,
    SCALAR: tl.constexpr, HAS_RESET: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Forward, pass 2 (one program per chunk): ``o = A v + (q exp(G)) S``."""
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
    W, e_read, _, _, _ = _gate_terms(
        g_ptr + bh * T * (1 if SCALAR else K), t, mt, tk, mtk, offs_t, pairs, first, last, keep,
        SCALAR, ACC, BLOCK_T,
    )  # fmt: skip
    if SCALAR:
        A = tl.dot(q, tl.trans(k), input_precision=DOT) * W
    else:
        A = tl.sum(q[:, None, :] * k[None, :, :] * W, axis=2)
    o = tl.dot(A, v, input_precision=DOT) + tl.dot(q * e_read, S, input_precision=DOT)
    tl.store(o_ptr + bh * T * V + tv, o.to(o_ptr.dtype.element_ty), mask=mtv)


@triton.jit
def _gla_dstate_kernel(
    q_ptr, g_ptr, reset_ptr,
    do_ptr,  # [B, H, T, V]
    dfinal_ptr,  # [B, H, K, V] (HAS_DFINAL)
    dstates_ptr,  # [B, H, NC, K, V] out: the gradient of the state leaving each chunk
    dh0_ptr,  # [B, H, K, V] out (HAS_H0)
    T, H, K, V, NC,
    SCALAR: tl.constexpr, HAS_H0: tl.constexpr, HAS_RESET: tl.constexpr,
    HAS_DFINAL: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Backward, pass 1 (sequential over chunks, right to left): ``dS`` leaving every chunk."""
    bh = tl.program_id(0).to(tl.int64)
    offs_t = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    offs_v = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    mk = offs_k < K
    mv = offs_v < V
    mkv = mk[:, None] & mv[None, :]
    kv = offs_k[:, None] * V + offs_v[None, :]
    q_ptr += bh * T * K
    do_ptr += bh * T * V
    g_ptr += bh * T * (1 if SCALAR else K)
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
        tk = (t * K)[:, None] + offs_k[None, :]
        mtk = mt[:, None] & mk[None, :]
        q = tl.load(q_ptr + tk, mask=mtk, other=0.0).to(ACC)
        do = tl.load(do_ptr + (t * V)[:, None] + offs_v[None, :],
                     mask=mt[:, None] & mv[None, :], other=0.0).to(ACC)  # fmt: skip
        pairs, first, last, keep = _chunk_masks(reset_ptr, t, mt, offs_t, HAS_RESET)
        _, e_read, _, e_keep, _ = _gate_terms(
            g_ptr, t, mt, tk, mtk, offs_t, pairs, first, last, keep, SCALAR, ACC, BLOCK_T
        )
        dS = e_keep * dS + tl.dot(tl.trans(q * e_read), do, input_precision=DOT)
        c -= 1
    if HAS_H0:
        tl.store(dh0_ptr + bh * K * V + kv, dS.to(dh0_ptr.dtype.element_ty), mask=mkv)


@triton.jit
def _gla_grad_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, reset_ptr, states_ptr, dstates_ptr, do_ptr,
    dq_ptr, dk_ptr, dg_ptr,  # [NVB, B, H, T, K (or 1 for dg)] per value block
    dv_ptr,  # [B, H, T, V]
    T, H, K, V, NC,
    SCALAR: tl.constexpr, HAS_RESET: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Backward, pass 2 (one program per chunk): the gradients of q, k, v and the log gates."""
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
    do = tl.load(do_ptr + bh * T * V + tv, mask=mtv, other=0.0).to(ACC)
    S = tl.load(states_ptr + (bh * NC + c) * K * V + kv, mask=mkv, other=0.0)
    dS = tl.load(dstates_ptr + (bh * NC + c) * K * V + kv, mask=mkv, other=0.0)
    pairs, first, last, keep = _chunk_masks(reset_ptr + (bh // H) * T, t, mt, offs_t, HAS_RESET)
    W, e_read, e_write, e_keep, G = _gate_terms(
        g_ptr + bh * T * (1 if SCALAR else K), t, mt, tk, mtk, offs_t, pairs, first, last, keep,
        SCALAR, ACC, BLOCK_T,
    )  # fmt: skip
    is_end = offs_t == BLOCK_T - 1
    dA = tl.where(pairs, tl.dot(do, tl.trans(v), input_precision=DOT), 0.0)
    # What the carried state gives each query, and each key's share of the state's gradient.
    dq = e_read * tl.dot(do, tl.trans(S), input_precision=DOT)
    dk_state = e_write * tl.dot(v, tl.trans(dS), input_precision=DOT)
    if SCALAR:
        A = tl.dot(q, tl.trans(k), input_precision=DOT) * W
        dAW = dA * W
        dq += tl.dot(dAW, k, input_precision=DOT)
        dk = tl.dot(tl.trans(dAW), q, input_precision=DOT) + dk_state
        dG = tl.sum(q * dq - k * dk, axis=1)
        end_terms = tl.sum(tl.sum(k * dk_state, 1), 0) + e_keep * tl.sum(tl.sum(S * dS, 1), 0)
        dG += tl.where(is_end, end_terms, 0.0)
    else:
        A = tl.sum(q[:, None, :] * k[None, :, :] * W, axis=2)
        dq += tl.sum(dA[:, :, None] * k[None, :, :] * W, axis=1)
        dk = tl.sum(dA[:, :, None] * q[:, None, :] * W, axis=0) + dk_state
        dG = q * dq - k * dk
        end_terms = tl.sum(k * dk_state, 0) + tl.sum(e_keep * S * dS, 1)
        dG += tl.where(is_end[:, None], end_terms[None, :], 0.0)
    # dL/dg_r = sum of dL/dG_t over t >= r in the chunk (G is chunk-local).
    dg = tl.cumsum(dG, 0, reverse=True)
    part = vblock.to(tl.int64) * n_bh + bh  # this value block's slice of the partial sums
    if SCALAR:
        tl.store(dg_ptr + part * T + t, dg, mask=mt)
    else:
        tl.store(dg_ptr + part * T * K + tk, dg, mask=mtk)
    tl.store(dq_ptr + part * T * K + tk, dq, mask=mtk)
    tl.store(dk_ptr + part * T * K + tk, dk, mask=mtk)
    dv = tl.dot(tl.trans(A), do, input_precision=DOT) + tl.dot(k * e_write, dS, input_precision=DOT)
    tl.store(dv_ptr + bh * T * V + tv, dv.to(dv_ptr.dtype.element_ty), mask=mtv)


def _blocks(dk: int, dv: int, scalar: bool) -> tuple[int, int, int, int]:
    """(BLOCK_T, BLOCK_K, BLOCK_V, warps); every matrix product dimension at least 16."""
    block_k = max(16, triton.next_power_of_2(dk))
    block_v = max(16, min(32, triton.next_power_of_2(dv)))
    if _INTERPRETED:
        # Short chunks, so that the interpreter tests cover several of them.
        return 8, block_k, block_v, 1
    # Untuned (no GPU at hand; see benchmarks/RESULTS.md): the largest tiles whose gradient
    # kernel compiles for sm_90 without (or with a few bytes of) spills at dk = 64, from a sweep
    # of benchmarks/compile_kernels.py. Per-dimension gates materialise [16, 16, dk] in registers.
    return 16, block_k, block_v, 8


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _dot(dtype: torch.dtype) -> str:
    """Matrix-product precision: float32 operands as three TF32 products (tensor cores, float32
    accuracy; a plain "ieee" product compiles to unrolled FMAs that spill), float64 exactly."""
    return "ieee" if dtype == torch.float64 else "tf32x3"


class _GLATriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, h0, reset, blocks):
        batch, heads, length, dk = q.shape
        dv = v.shape[-1]
        scalar = g.dim() == 3
        block_t, block_k, block_v, warps = blocks or _blocks(dk, dv, scalar)
        n_chunks = triton.cdiv(length, block_t)
        n_vb = triton.cdiv(dv, block_v)
        acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        q_, k_, v_, g_ = (x.contiguous() for x in (q, k, v, g))
        h0_ = h0.contiguous() if h0 is not None else None
        reset_ = reset.to(torch.int8).contiguous() if reset is not None else None
        o = torch.empty(batch, heads, length, dv, dtype=q.dtype, device=q.device)
        final = q.new_empty(batch, heads, dk, dv, dtype=acc_dtype)
        states = q.new_empty(batch, heads, n_chunks, dk, dv, dtype=acc_dtype)
        consts = dict(
            SCALAR=scalar, HAS_RESET=reset is not None, BLOCK_T=block_t, BLOCK_K=block_k,
            BLOCK_V=block_v, ACC=_acc(q.dtype), DOT=_dot(q.dtype), num_warps=warps,
        )  # fmt: skip
        reset_arg = reset_ if reset_ is not None else q_
        _gla_state_kernel[(batch * heads, n_vb)](
            k_, v_, g_, h0_ if h0_ is not None else q_, reset_arg, states, final,
            length, heads, dk, dv, n_chunks, HAS_H0=h0 is not None, **consts,
        )  # fmt: skip
        _gla_output_kernel[(n_chunks, batch * heads, n_vb)](
            q_, k_, v_, g_, reset_arg, states, o, length, heads, dk, dv, n_chunks, **consts
        )
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(q_, k_, v_, g_, h0_, reset_, states)
            ctx.meta = (scalar, (block_t, block_k, block_v, warps))
        ctx.set_materialize_grads(False)
        return o, final

    @staticmethod
    def backward(ctx, grad_o, grad_final):
        q, k, v, g, h0, reset, states = ctx.saved_tensors
        scalar, (block_t, block_k, block_v, warps) = ctx.meta
        batch, heads, length, dk = q.shape
        dv = v.shape[-1]
        n_chunks = states.shape[2]
        n_vb = triton.cdiv(dv, block_v)
        acc_dtype = states.dtype
        grad_o = torch.zeros_like(v) if grad_o is None else grad_o.contiguous()
        dstates = torch.empty_like(states)
        dq = q.new_empty(n_vb, batch, heads, length, dk, dtype=acc_dtype)
        dk_ = q.new_empty(n_vb, batch, heads, length, dk, dtype=acc_dtype)
        dg = q.new_empty(n_vb, *g.shape, dtype=acc_dtype)
        dv_ = torch.empty_like(v)
        dh0 = torch.empty_like(h0) if h0 is not None else None
        consts = dict(
            SCALAR=scalar, HAS_RESET=reset is not None, BLOCK_T=block_t, BLOCK_K=block_k,
            BLOCK_V=block_v, ACC=_acc(q.dtype), DOT=_dot(q.dtype), num_warps=warps,
        )  # fmt: skip
        reset_arg = reset if reset is not None else q
        _gla_dstate_kernel[(batch * heads, n_vb)](
            q, g, reset_arg, grad_o, grad_final.contiguous() if grad_final is not None else q,
            dstates, dh0 if dh0 is not None else q, length, heads, dk, dv, n_chunks,
            HAS_H0=h0 is not None, HAS_DFINAL=grad_final is not None, **consts,
        )  # fmt: skip
        _gla_grad_kernel[(n_chunks, batch * heads, n_vb)](
            q, k, v, g, reset_arg, states, dstates, grad_o, dq, dk_, dg, dv_,
            length, heads, dk, dv, n_chunks, **consts,
        )  # fmt: skip
        return (
            dq.sum(0).to(q.dtype),
            dk_.sum(0).to(k.dtype),
            dv_,
            dg.sum(0).to(g.dtype),
            dh0,
            None,
            None,
        )


def gla_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    blocks: tuple[int, int, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused chunkwise GLA; same arguments and results as
    :func:`mixerzoo.core.ops.gla.naive.naive_gla` (shapes are checked by the public op
    :func:`mixerzoo.core.ops.gla.gla`; dtypes, the device and sizes here).

    Args:
        g: ``[B, H, T, dk]`` log gates, or ``[B or 1, H, T]`` (one per head).
        blocks: ``(BLOCK_T, BLOCK_K, BLOCK_V, warps)`` to override the heuristic (tests);
            ``BLOCK_K >= dk``, all powers of two and at least 16 except ``BLOCK_T``.

    Returns:
        ``o [B, H, T, dv]`` in ``q``'s dtype and the final state ``[B, H, dk, dv]`` (float32,
        float64 for float64 ``q``).
    """
    where = "gla (triton)"
    for name, x in (("q", q), ("k", k), ("v", v), ("g", g), ("initial_state", initial_state)):
        if x is not None and x.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"{where}: {name} must be float16, bfloat16, float32 or float64, got {x.dtype} "
                f"(use backend='chunk')"
            )
    check_device(q, "gla")
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    if dk > 256:
        raise ValueError(f"{where}: head dim dk = {dk} > 256 is not supported (one key tile)")
    if max(dk, dv) * length >= 2**31:
        raise ValueError(f"{where}: T * dk and T * dv must stay below 2^31 per head")
    if blocks is not None and (blocks[1] < dk or min(blocks[1:3]) < 16):
        raise ValueError(f"{where}: blocks {blocks} need BLOCK_K >= dk and BLOCK_K, BLOCK_V >= 16")
    k, g = apply_flags(k, g, reset, mask)
    if g.dim() == 3 and g.shape[0] != batch:
        g = g.expand(batch, heads, length)
    return _GLATriton.apply(q, k, v, g, initial_state, reset, blocks)
