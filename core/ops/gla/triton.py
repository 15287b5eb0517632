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

Matrix products run with ``input_precision=DOT``: ``"tf32x3"`` for float32 (three TF32
products, about float32 accuracy, not single-pass TF32: the tests hold the kernels to the float32
tolerances of the loop), ``"ieee"`` for float64. Arithmetic is float32 (float64 for float64
inputs); outputs and gradients are written in their inputs' dtypes, the final state in float32.
On the CPU the kernels run only under ``TRITON_INTERPRET=1``. The passes themselves live in
:mod:`mixerzoo.core.ops.chunkwise_triton` (shared with mLSTM); this module gives them GLA's gate
terms and gate gradients.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

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
from mixerzoo.core.ops.gla.chunk import apply_flags

__all__ = ["gla_triton", "SUPPORTED_DTYPES"]


@triton.jit
def _gate_terms(gates, bh, c, t, mt, tk, mtk, offs_t, T, K, pairs, first, last, keep,
                SCALAR: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr):  # fmt: skip
    """The chunkwise design's terms (:mod:`mixerzoo.core.ops.chunkwise_triton`) from the
    chunk-local cumulative log gates ``G``: ``W`` (pairs; ``[T, T]`` or ``[T, T, K]``),
    ``e_read = exp(G)`` where the carried state is read, ``e_write = exp(G_end - G)`` where a key
    enters the chunk-end state, ``e_keep = exp(G_end)`` if the state survives the chunk (zeros
    elsewhere), and ``G``. Per-head gates give ``[T]`` factors (broadcast as ``[T, 1]``),
    per-dimension gates ``[T, K]``. Every exponent is masked before ``exp``."""
    g_ptr = gates[0] + bh * T * (1 if SCALAR else K)
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
    _sequential_pass(
        k_ptr, v_ptr, (g_ptr,), h0_ptr, reset_ptr, states_ptr, final_ptr, T, H, K, V, NC,
        TERMS=_gate_terms, GATE=SCALAR, REVERSE=False, HAS_START=HAS_H0, HAS_RESET=HAS_RESET,
        STORE_END=True, BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K, BLOCK_V=BLOCK_V, ACC=ACC, DOT=DOT,
    )  # fmt: skip


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
    _output_pass(
        q_ptr, k_ptr, v_ptr, (g_ptr,), reset_ptr, states_ptr, o_ptr, T, H, K, V, NC,
        TERMS=_gate_terms, GATE=SCALAR, SCALAR=SCALAR, HAS_RESET=HAS_RESET,
        BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K, BLOCK_V=BLOCK_V, ACC=ACC, DOT=DOT,
    )  # fmt: skip


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
    _sequential_pass(
        q_ptr, do_ptr, (g_ptr,), dfinal_ptr, reset_ptr, dstates_ptr, dh0_ptr, T, H, K, V, NC,
        TERMS=_gate_terms, GATE=SCALAR, REVERSE=True, HAS_START=HAS_DFINAL, HAS_RESET=HAS_RESET,
        STORE_END=HAS_H0, BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K, BLOCK_V=BLOCK_V, ACC=ACC, DOT=DOT,
    )  # fmt: skip


@triton.jit
def _gla_gate_grads(gate_grads, part, c, t, mt, tk, mtk, is_end, T, K, NC, q, k, S, dS, A, dA,
                    dq, dk, q_state, k_state, e_keep, G, SCALAR: tl.constexpr,
                    BLOCK_T: tl.constexpr):  # fmt: skip
    """The log gates' gradient (this value block's share) from ``dL/dG_t = q_t dq_t - k_t dk_t``
    plus, at the chunk's end, the terms of ``G_end``, summed from the end of the chunk."""
    dg_ptr = gate_grads[0]  # [NVB, B, H, T, K or 1]
    if SCALAR:
        dG = tl.sum(q * dq - k * dk, axis=1)
        end_terms = tl.sum(tl.sum(k * k_state, 1), 0) + e_keep * tl.sum(tl.sum(S * dS, 1), 0)
        dG += tl.where(is_end, end_terms, 0.0)
    else:
        dG = q * dq - k * dk
        end_terms = tl.sum(k * k_state, 0) + tl.sum(e_keep * S * dS, 1)
        dG += tl.where(is_end[:, None], end_terms[None, :], 0.0)
    # dL/dg_r = sum of dL/dG_t over t >= r in the chunk (G is chunk-local).
    dg = tl.cumsum(dG, 0, reverse=True)
    if SCALAR:
        tl.store(dg_ptr + part * T + t, dg, mask=mt)
    else:
        tl.store(dg_ptr + part * T * K + tk, dg, mask=mtk)


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
    _grad_pass(
        q_ptr, k_ptr, v_ptr, (g_ptr,), reset_ptr, states_ptr, dstates_ptr, do_ptr,
        dq_ptr, dk_ptr, (dg_ptr,), dv_ptr, T, H, K, V, NC,
        TERMS=_gate_terms, GATE_GRADS=_gla_gate_grads, GATE=SCALAR, SCALAR=SCALAR,
        HAS_RESET=HAS_RESET, BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K, BLOCK_V=BLOCK_V, ACC=ACC, DOT=DOT,
    )  # fmt: skip


class _GLATriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, h0, reset, blocks):
        scalar = g.dim() == 3
        blocks = blocks or _blocks(q.shape[-1], v.shape[-1], scalar)
        q_, k_, v_, g_ = (x.contiguous() for x in (q, k, v, g))
        h0_ = h0.contiguous() if h0 is not None else None
        reset_ = reset.to(torch.int8).contiguous() if reset is not None else None
        o, final, states = forward_passes(
            (_gla_state_kernel, _gla_output_kernel), q_, k_, v_, (g_,), h0_, reset_, blocks,
            q.dtype, SCALAR=scalar,
        )  # fmt: skip
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(q_, k_, v_, g_, h0_, reset_, states)
            ctx.meta = (scalar, blocks)
        ctx.set_materialize_grads(False)
        return o, final

    @staticmethod
    def backward(ctx, grad_o, grad_final):
        q, k, v, g, h0, reset, states = ctx.saved_tensors
        scalar, blocks = ctx.meta
        dq, dk, dv, dh0, (dg,) = backward_passes(
            (_gla_dstate_kernel, _gla_grad_kernel), q, k, v, (g,), h0, reset, states,
            grad_o, grad_final, (g.shape,), blocks, SCALAR=scalar,
        )  # fmt: skip
        return dq, dk, dv, dg.to(g.dtype), dh0, None, None


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
    named = (("q", q), ("k", k), ("v", v), ("g", g), ("initial_state", initial_state))
    check_inputs("gla", named, q, v.shape[-1], blocks)
    batch, heads, length = q.shape[:3]
    k, g = apply_flags(k, g, reset, mask)
    if g.dim() == 3 and g.shape[0] != batch:
        g = g.expand(batch, heads, length)
    return _GLATriton.apply(q, k, v, g, initial_state, reset, blocks)
