"""The chunkwise Triton design shared by the GLA and mLSTM kernels (and retention, through GLA).

Both ops are, per (batch, head), a linear attention over a ``[dk, dv]`` state ``S`` whose weights
decay inside a chunk of ``BLOCK_T`` tokens by chunk-local factors that only the op knows:

- forward, pass 1 (sequential over chunks): ``S <- e_keep S + (k * e_write)^T v``, storing the
  state entering every chunk;
- forward, pass 2 (one program per chunk): ``o = (q k^T * W) v + (q * e_read) S``;
- backward, pass 1 (sequential, right to left): ``dS <- e_keep dS + (q * e_read)^T do``, storing
  the gradient of the state leaving every chunk;
- backward, pass 2 (one program per chunk): ``dq``, ``dk``, ``dv`` from ``W`` and the stored
  states, and whatever the op needs for the gradients of its gates.

One program owns one (batch, head) and a block of ``BLOCK_V`` value columns; the value blocks'
partial ``dq``, ``dk`` (and gate gradients) are summed afterwards: no atomics, deterministic.
GLA ("Gated Linear Attention Transformers with Hardware-Efficient Training", Yang et al., 2024,
arXiv 2312.06635, Section 3) and the stabilised mLSTM ("xLSTM: Extended Long Short-Term Memory",
Beck et al., 2024, arXiv 2405.04517) differ only in those factors, in the gates' gradients and
in their host-side inputs; the passes here take the op's *terms* function as a constexpr
(and :func:`_grad_pass` its gate-gradient function, documented there):

    TERMS(gates, bh, c, t, mt, tk, mtk, offs_t, T, K, pairs, first, last, keep,
          GATE: constexpr, ACC: constexpr, BLOCK_T: constexpr) -> (W, e_read, e_write, e_keep, extra)

``gates`` is the tuple of the op's gate pointers (not yet offset to the head ``bh``), ``c`` the
chunk, ``t``/``mt`` its token indices and mask, ``tk``/``mtk`` the ``[BLOCK_T, BLOCK_K]`` offsets
and mask, ``pairs, first, last, keep`` the masks of :func:`_chunk_masks`, ``GATE`` the op's own
constexpr flag. It returns the pair weights ``W`` (``[T, T]``, or ``[T, T, K]`` for per-dimension
gates: ``SCALAR`` false), ``e_read`` (``[T, 1]`` or ``[T, K]``), ``e_write`` (same), ``e_keep``
(scalar or ``[K, 1]``), every exponent masked before ``exp``, and one op-specific value.

Each op keeps its own thin kernels, with their names and signatures
(``benchmarks/compile_kernels.py`` compiles them by name), which call the passes here. The host
side (:func:`forward_passes`, :func:`backward_passes`) launches the four kernels for any op whose
kernels take the gate tensors in one place of a fixed argument order. Matrix products run with ``input_precision=DOT``; arithmetic in ``ACC``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
import triton
import triton.language as tl

from mixerzoo.core.ops.linear_scan.triton import check_device

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
def _tile(vblock, K, V, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr):
    """A program's offsets: tokens of a chunk, keys, its value block, and its ``[K, V]`` tile."""
    offs_t = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    offs_v = vblock * BLOCK_V + tl.arange(0, BLOCK_V)
    mk = offs_k < K
    mv = offs_v < V
    mkv = mk[:, None] & mv[None, :]
    kv = offs_k[:, None] * V + offs_v[None, :]
    return offs_t, offs_k, offs_v, mk, mv, mkv, kv


@triton.jit
def _rows(c, offs_t, offs_k, offs_v, mk, mv, T, K, V, BLOCK_T: tl.constexpr):
    """Chunk ``c``'s tokens ``t`` and their ``[T, K]`` and ``[T, V]`` offsets, with masks."""
    t = c * BLOCK_T + offs_t
    mt = t < T
    tk = (t * K)[:, None] + offs_k[None, :]
    mtk = mt[:, None] & mk[None, :]
    tv = (t * V)[:, None] + offs_v[None, :]
    mtv = mt[:, None] & mv[None, :]
    return t, mt, tk, mtk, tv, mtv


@triton.jit
def _scores(q, k, W, SCALAR: tl.constexpr, DOT: tl.constexpr):
    """``A[t, s] = sum_d q_td k_sd W[t, s(, d)]``: a matrix product scaled by ``W [T, T]``, or
    the ``[T, T, K]`` products summed for per-dimension weights."""
    if SCALAR:
        A = tl.dot(q, tl.trans(k), input_precision=DOT) * W
    else:
        A = tl.sum(q[:, None, :] * k[None, :, :] * W, axis=2)
    return A


@triton.jit
def _sequential_pass(
    x_ptr, y_ptr, gates, start_ptr, reset_ptr, chunks_ptr, end_ptr,
    T, H, K, V, NC,
    TERMS: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr, HAS_START: tl.constexpr,
    HAS_RESET: tl.constexpr, STORE_END: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Pass 1 of either direction, one program per (batch * head, value block), the ``[K, V]``
    tile in registers: ``S <- e_keep S + (x * e)^T y`` chunk after chunk, storing the tile met
    before each chunk in ``chunks_ptr [B, H, NC, K, V]`` and, if ``STORE_END``, the last one.

    Forward: ``x = k``, ``e = e_write``, ``y = v``, left to right from ``h0``. Backward
    (``REVERSE``): ``x = q``, ``e = e_read``, ``y = do``, right to left from the final state's
    gradient, ending with that of ``h0``."""
    bh = tl.program_id(0).to(tl.int64)
    offs_t, offs_k, offs_v, mk, mv, mkv, kv = _tile(
        tl.program_id(1), K, V, BLOCK_T, BLOCK_K, BLOCK_V
    )
    x_ptr += bh * T * K
    y_ptr += bh * T * V
    reset_ptr += (bh // H) * T
    if HAS_START:
        S = tl.load(start_ptr + bh * K * V + kv, mask=mkv, other=0.0).to(ACC)
    else:
        S = tl.zeros([BLOCK_K, BLOCK_V], dtype=ACC)
    c = NC - 1 if REVERSE else 0
    # while, not range: the interpreter cannot take a loop bound known only at run time.
    while (c >= 0) if REVERSE else (c < NC):
        tl.store(chunks_ptr + (bh * NC + c) * K * V + kv, S, mask=mkv)
        t, mt, tk, mtk, tv, mtv = _rows(c, offs_t, offs_k, offs_v, mk, mv, T, K, V, BLOCK_T)
        x = tl.load(x_ptr + tk, mask=mtk, other=0.0).to(ACC)
        y = tl.load(y_ptr + tv, mask=mtv, other=0.0).to(ACC)
        pairs, first, last, keep = _chunk_masks(reset_ptr, t, mt, offs_t, HAS_RESET)
        _, e_read, e_write, e_keep, _ = TERMS(
            gates, bh, c, t, mt, tk, mtk, offs_t, T, K, pairs, first, last, keep,
            GATE, ACC, BLOCK_T,
        )  # fmt: skip
        e = e_read if REVERSE else e_write
        S = e_keep * S + tl.dot(tl.trans(x * e), y, input_precision=DOT)
        c += -1 if REVERSE else 1
    if STORE_END:
        tl.store(end_ptr + bh * K * V + kv, S.to(end_ptr.dtype.element_ty), mask=mkv)


@triton.jit
def _output_pass(
    q_ptr, k_ptr, v_ptr, gates, reset_ptr, states_ptr,
    o_ptr,  # [B, H, T, V] out
    T, H, K, V, NC,
    TERMS: tl.constexpr, GATE: tl.constexpr, SCALAR: tl.constexpr, HAS_RESET: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Forward, pass 2 (one program per chunk, (batch * head), value block):
    ``o = (q k^T * W) v + (q * e_read) S``."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_t, offs_k, offs_v, mk, mv, mkv, kv = _tile(
        tl.program_id(2), K, V, BLOCK_T, BLOCK_K, BLOCK_V
    )
    t, mt, tk, mtk, tv, mtv = _rows(c, offs_t, offs_k, offs_v, mk, mv, T, K, V, BLOCK_T)
    q = tl.load(q_ptr + bh * T * K + tk, mask=mtk, other=0.0).to(ACC)
    k = tl.load(k_ptr + bh * T * K + tk, mask=mtk, other=0.0).to(ACC)
    v = tl.load(v_ptr + bh * T * V + tv, mask=mtv, other=0.0).to(ACC)
    S = tl.load(states_ptr + (bh * NC + c) * K * V + kv, mask=mkv, other=0.0)
    pairs, first, last, keep = _chunk_masks(reset_ptr + (bh // H) * T, t, mt, offs_t, HAS_RESET)
    W, e_read, _, _, _ = TERMS(
        gates, bh, c, t, mt, tk, mtk, offs_t, T, K, pairs, first, last, keep, GATE, ACC, BLOCK_T
    )
    A = _scores(q, k, W, SCALAR, DOT)
    o = tl.dot(A, v, input_precision=DOT) + tl.dot(q * e_read, S, input_precision=DOT)
    tl.store(o_ptr + bh * T * V + tv, o.to(o_ptr.dtype.element_ty), mask=mtv)


@triton.jit
def _grad_pass(
    q_ptr, k_ptr, v_ptr, gates, reset_ptr, states_ptr, dstates_ptr, do_ptr,
    dq_ptr, dk_ptr,  # [NVB, B, H, T, K] out: per value block
    gate_grads,  # the op's gate-gradient pointers
    dv_ptr,  # [B, H, T, V] out
    T, H, K, V, NC,
    TERMS: tl.constexpr, GATE_GRADS: tl.constexpr, GATE: tl.constexpr, SCALAR: tl.constexpr,
    HAS_RESET: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, ACC: tl.constexpr,
    DOT: tl.constexpr,
):  # fmt: skip
    """Backward, pass 2 (one program per chunk, (batch * head), value block), with
    ``dA = do v^T`` on the allowed pairs: ``dq = (dA * W) k + e_read (do S^T)``,
    ``dk = (dA * W)^T q + e_write (v dS^T)`` (this value block's share), ``dv = A^T do +
    (k * e_write) dS``, and the gates' gradients by the op's ``GATE_GRADS``::

        GATE_GRADS(gate_grads, part, c, t, mt, tk, mtk, is_end, T, K, NC, q, k, S, dS, A, dA,
                   dq, dk, q_state, k_state, e_keep, extra, GATE: constexpr, BLOCK_T: constexpr)

    with ``part`` this value block's slice of the partial sums, ``is_end`` the chunk's last row,
    ``q_state = e_read (do S^T)`` and ``k_state = e_write (v dS^T)``, ``extra`` from ``TERMS``."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    vblock = tl.program_id(2)
    n_bh = tl.num_programs(1)
    offs_t, offs_k, offs_v, mk, mv, mkv, kv = _tile(vblock, K, V, BLOCK_T, BLOCK_K, BLOCK_V)
    t, mt, tk, mtk, tv, mtv = _rows(c, offs_t, offs_k, offs_v, mk, mv, T, K, V, BLOCK_T)
    q = tl.load(q_ptr + bh * T * K + tk, mask=mtk, other=0.0).to(ACC)
    k = tl.load(k_ptr + bh * T * K + tk, mask=mtk, other=0.0).to(ACC)
    v = tl.load(v_ptr + bh * T * V + tv, mask=mtv, other=0.0).to(ACC)
    do = tl.load(do_ptr + bh * T * V + tv, mask=mtv, other=0.0).to(ACC)
    S = tl.load(states_ptr + (bh * NC + c) * K * V + kv, mask=mkv, other=0.0)
    dS = tl.load(dstates_ptr + (bh * NC + c) * K * V + kv, mask=mkv, other=0.0)
    pairs, first, last, keep = _chunk_masks(reset_ptr + (bh // H) * T, t, mt, offs_t, HAS_RESET)
    W, e_read, e_write, e_keep, extra = TERMS(
        gates, bh, c, t, mt, tk, mtk, offs_t, T, K, pairs, first, last, keep, GATE, ACC, BLOCK_T
    )
    is_end = offs_t == BLOCK_T - 1
    if SCALAR:
        # The scores first: in this order the [T, T] weights' kernels spill far less on sm_90
        # (benchmarks/compile_kernels.py); the [T, T, K] weights' kernels spill less in the other.
        A = tl.dot(q, tl.trans(k), input_precision=DOT) * W
    dA = tl.where(pairs, tl.dot(do, tl.trans(v), input_precision=DOT), 0.0)
    # What the carried state gives each query, and each key's share of the state's gradient.
    q_state = e_read * tl.dot(do, tl.trans(S), input_precision=DOT)
    k_state = e_write * tl.dot(v, tl.trans(dS), input_precision=DOT)
    if SCALAR:
        dAW = dA * W
        dq = tl.dot(dAW, k, input_precision=DOT) + q_state
        dk = tl.dot(tl.trans(dAW), q, input_precision=DOT) + k_state
    else:
        A = tl.sum(q[:, None, :] * k[None, :, :] * W, axis=2)
        dq = tl.sum(dA[:, :, None] * k[None, :, :] * W, axis=1) + q_state
        dk = tl.sum(dA[:, :, None] * q[:, None, :] * W, axis=0) + k_state
    part = vblock.to(tl.int64) * n_bh + bh
    GATE_GRADS(
        gate_grads, part, c, t, mt, tk, mtk, is_end, T, K, NC, q, k, S, dS, A, dA, dq, dk,
        q_state, k_state, e_keep, extra, GATE, BLOCK_T,
    )  # fmt: skip
    tl.store(dq_ptr + part * T * K + tk, dq, mask=mtk)
    tl.store(dk_ptr + part * T * K + tk, dk, mask=mtk)
    dv = tl.dot(tl.trans(A), do, input_precision=DOT) + tl.dot(k * e_write, dS, input_precision=DOT)
    tl.store(dv_ptr + bh * T * V + tv, dv.to(dv_ptr.dtype.element_ty), mask=mtv)


def _blocks(dk: int, dv: int, scalar: bool = True) -> tuple[int, int, int, int]:
    """(BLOCK_T, BLOCK_K, BLOCK_V, warps); every matrix product dimension at least 16."""
    block_k = max(16, triton.next_power_of_2(dk))
    block_v = max(16, min(32, triton.next_power_of_2(dv)))
    if _INTERPRETED:
        # Short chunks, so that the interpreter tests cover several of them.
        return 8, block_k, block_v, 1
    # Untuned (no GPU at hand; see benchmarks/RESULTS.md): the largest tiles whose gradient
    # kernel compiles for sm_90 without (or with a few bytes of) spills at dk = 64, from a sweep
    # of benchmarks/compile_kernels.py. Per-dimension gates (``scalar`` false) materialise
    # [16, 16, dk] in registers; one gate per head takes the same tiles.
    return 16, block_k, block_v, 8


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _dot(dtype: torch.dtype) -> str:
    """Matrix-product precision: float32 operands as three TF32 products (tensor cores, float32
    accuracy; a plain "ieee" product compiles to unrolled FMAs that spill), float64 exactly."""
    return "ieee" if dtype == torch.float64 else "tf32x3"


def check_inputs(
    op: str,
    named: Iterable[tuple[str, torch.Tensor | None]],
    q: torch.Tensor,
    width: int,
    blocks: tuple[int, int, int, int] | None,
) -> None:
    """Dtypes, device and sizes the kernels take, with errors naming ``op``.

    Args:
        named: ``(name, tensor or None)`` for every floating input.
        q: ``[B, H, T, dk]`` queries.
        width: the number of value columns the kernels see (``dv``, plus any extra column).
        blocks: the caller's ``(BLOCK_T, BLOCK_K, BLOCK_V, warps)`` override, or None.
    """
    where = f"{op} (triton)"
    for name, x in named:
        if x is not None and x.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"{where}: {name} must be float16, bfloat16, float32 or float64, got {x.dtype} "
                f"(use backend='chunk')"
            )
    check_device(q, op)
    length, dk = q.shape[2], q.shape[3]
    if dk > 256:
        raise ValueError(f"{where}: head dim dk = {dk} > 256 is not supported (one key tile)")
    if max(dk, width) * length >= 2**31:
        raise ValueError(f"{where}: T * dk and T * dv must stay below 2^31 per head")
    if blocks is not None and (blocks[1] < dk or min(blocks[1:3]) < 16):
        raise ValueError(f"{where}: blocks {blocks} need BLOCK_K >= dk and BLOCK_K, BLOCK_V >= 16")


def _constants(dtype: torch.dtype, reset, blocks: tuple[int, int, int, int], flags: dict) -> dict:
    """The constexprs (and warps) every kernel of one call shares."""
    block_t, block_k, block_v, warps = blocks
    return dict(
        flags, HAS_RESET=reset is not None, BLOCK_T=block_t, BLOCK_K=block_k, BLOCK_V=block_v,
        ACC=_acc(dtype), DOT=_dot(dtype), num_warps=warps,
    )  # fmt: skip


def forward_passes(
    kernels: tuple,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gates: Sequence[torch.Tensor | None],
    h0: torch.Tensor | None,
    reset: torch.Tensor | None,
    blocks: tuple[int, int, int, int],
    out_dtype: torch.dtype,
    **flags,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launches an op's (state, output) kernels on contiguous inputs.

    The kernels take ``(k, v, *gates, h0, reset, states, final, T, H, K, V, NC)`` and
    ``(q, k, v, *gates, reset, states, out, T, H, K, V, NC)``; an absent optional input (None)
    is passed as a placeholder pointer that its constexpr flag keeps unread.

    Args:
        q, k, v: ``[B, H, T, dk]``, ``[B, H, T, dk]``, ``[B, H, T, dv]``.
        gates: the op's gate tensors, in its kernels' order.
        h0: ``[B, H, dk, dv]`` initial state or None.
        reset: ``[B, T]`` int8 or None.
        out_dtype: dtype of the output.
        flags: the op's own constexprs (e.g. ``SCALAR=``).

    Returns:
        ``out [B, H, T, dv]``, the final state ``[B, H, dk, dv]`` and the state entering every
        chunk ``[B, H, NC, dk, dv]`` (both in the compute dtype).
    """
    state_kernel, output_kernel = kernels
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    n_chunks = triton.cdiv(length, blocks[0])
    n_vb = triton.cdiv(dv, blocks[2])
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.empty(batch, heads, length, dv, dtype=out_dtype, device=q.device)
    final = q.new_empty(batch, heads, dk, dv, dtype=acc_dtype)
    states = q.new_empty(batch, heads, n_chunks, dk, dv, dtype=acc_dtype)
    consts = _constants(q.dtype, reset, blocks, flags)
    gates = [q if x is None else x for x in gates]
    reset_arg = q if reset is None else reset
    state_kernel[(batch * heads, n_vb)](
        k, v, *gates, q if h0 is None else h0, reset_arg, states, final,
        length, heads, dk, dv, n_chunks, HAS_H0=h0 is not None, **consts,
    )  # fmt: skip
    output_kernel[(n_chunks, batch * heads, n_vb)](
        q, k, v, *gates, reset_arg, states, out, length, heads, dk, dv, n_chunks, **consts
    )
    return out, final, states


def backward_passes(
    kernels: tuple,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gates: Sequence[torch.Tensor | None],
    h0: torch.Tensor | None,
    reset: torch.Tensor | None,
    states: torch.Tensor,
    grad_out: torch.Tensor | None,
    grad_final: torch.Tensor | None,
    gate_grad_shapes: Sequence[tuple[int, ...]],
    blocks: tuple[int, int, int, int],
    **flags,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
    """Launches an op's (dstate, grad) kernels with the inputs :func:`forward_passes` took.

    The kernels take ``(q, *gates, reset, do, dfinal, dstates, dh0, T, H, K, V, NC)`` and
    ``(q, k, v, *gates, reset, states, dstates, do, dq, dk, *gate_grads, dv, T, H, K, V, NC)``,
    each gate gradient a buffer ``[NVB, *shape]`` of one partial sum per value block.

    Returns:
        ``dq``, ``dk`` (in ``q``'s and ``k``'s dtypes), ``dv``, ``dh0`` (None without ``h0``)
        and the gate gradients summed over value blocks (compute dtype), in
        ``gate_grad_shapes``' order.
    """
    dstate_kernel, grad_kernel = kernels
    batch, heads, length, dk = q.shape
    dv = v.shape[-1]
    n_chunks = states.shape[2]
    n_vb = triton.cdiv(dv, blocks[2])
    acc_dtype = states.dtype
    # A missing output gradient is zero (only the final state was used).
    grad_out = torch.zeros_like(v) if grad_out is None else grad_out.contiguous()
    dstates = torch.empty_like(states)
    dq = q.new_empty(n_vb, batch, heads, length, dk, dtype=acc_dtype)
    dk_ = q.new_empty(n_vb, batch, heads, length, dk, dtype=acc_dtype)
    gate_grads = [q.new_empty(n_vb, *shape, dtype=acc_dtype) for shape in gate_grad_shapes]
    dv_ = torch.empty_like(v)
    dh0 = torch.empty_like(h0) if h0 is not None else None
    consts = _constants(q.dtype, reset, blocks, flags)
    gates = [q if x is None else x for x in gates]
    reset_arg = q if reset is None else reset
    dstate_kernel[(batch * heads, n_vb)](
        q, *gates, reset_arg, grad_out, grad_final.contiguous() if grad_final is not None else q,
        dstates, dh0 if dh0 is not None else q, length, heads, dk, dv, n_chunks,
        HAS_H0=h0 is not None, HAS_DFINAL=grad_final is not None, **consts,
    )  # fmt: skip
    grad_kernel[(n_chunks, batch * heads, n_vb)](
        q, k, v, *gates, reset_arg, states, dstates, grad_out, dq, dk_, *gate_grads, dv_,
        length, heads, dk, dv, n_chunks, **consts,
    )  # fmt: skip
    return (
        dq.sum(0).to(q.dtype),
        dk_.sum(0).to(k.dtype),
        dv_,
        dh0,
        [x.sum(0) for x in gate_grads],
    )
