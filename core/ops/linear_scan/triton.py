"""Fused Triton kernels for the resettable diagonal linear scan ``h_t = a_t * h_{t-1} + b_t``.

Real (float16 / bfloat16 / float32 / float64) and complex (complex64 / complex128) inputs, an
initial state and per-row resets (``reset[b, t]`` true: ``h_t = b_t``, the resettable scan of
"Structured State Space Models for In-Context Reinforcement Learning", Lu et al., 2023,
arXiv 2303.03982). The layout is ``[B, T, M]`` with the ``M`` trailing values contiguous, so one
program owns a block of ``M`` and walks time step by step: every load and store of a step is one
contiguous, coalesced row, and each value is read and written once (the memory-traffic minimum:
``a``, ``b`` in, ``h`` out).

A short batch with few trailing values gives too few programs to fill a GPU, so time is also cut
into chunks that run in parallel, in three launches (the two-level scan of ``chunk.py``, fused):

1. *summary*: each chunk's product of decays ``P_c`` and the state it reaches from zero ``S_c``;
2. *carry*: the chunk start states, a short sequential scan ``H_{c+1} = P_c H_c + S_c``;
3. *apply*: each chunk re-runs from its true start state and writes ``h``.

That reads ``a`` and ``b`` twice (5 units of traffic instead of 3), so one chunk is used whenever
the rows alone give enough programs. The backward pass is the adjoint scan run in reverse with
the same three launches: with ``lam_t = dL/dh_t`` (total) and ``mu_t = conj(a_t) lam_t`` (what
reaches ``h_{t-1}`` through step ``t``)::

    lam_t = g_t + mu_{t+1},   grad_b_t = lam_t,   grad_a_t = lam_t conj(h_{t-1}),   grad_h0 = mu_0

with ``mu_t = 0`` and ``grad_a_t = 0`` at a reset (the decay there is the constant 0). Conjugates
follow PyTorch's convention for complex gradients and vanish for real inputs. The forward keeps
no state but the output ``h`` (which the caller gets anyway); sums are never atomic.

Arithmetic is float32 (float64 for float64 / complex128 inputs); ``h`` and the gradients are
stored in the input dtype. On the CPU the kernels run only under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["linear_scan_triton", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
)

# Programs wanted in flight before time is cut into chunks (about 4 per SM on an H100 / H200).
_TARGET_PROGRAMS = 512
_MIN_CHUNK = 64


# Interpreter note: every call of a nested @triton.jit function re-patches triton.language in
# the interpreter (milliseconds each), so the per-step code below is written inline rather than
# through small helpers; it costs nothing when compiled.


@triton.jit
def _scan_fwd_kernel(
    a_ptr, b_ptr, reset_ptr,  # [B, T, M] (x2 interleaved when complex), [B, T] int8
    start_ptr,  # [B, NC, M] chunk start states (APPLY)
    h_ptr,  # [B, T, M] output (APPLY)
    prod_ptr, local_ptr,  # [B, NC, M] chunk summaries (SUMMARY)
    T, M, CHUNK, NC,
    BLOCK: tl.constexpr, COMPLEX: tl.constexpr, HAS_RESET: tl.constexpr,
    SUMMARY: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    bid = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    W: tl.constexpr = 2 if COMPLEX else 1  # stored values per element
    re = W * offs  # real parts; the imaginary part follows each
    summary_at = (bid * NC + chunk) * M * W
    hi = tl.zeros([BLOCK], dtype=ACC)
    pi = tl.zeros([BLOCK], dtype=ACC)
    pr = tl.full([BLOCK], 1.0, dtype=ACC)
    if SUMMARY:
        hr = tl.zeros([BLOCK], dtype=ACC)
    else:
        hr = tl.load(start_ptr + summary_at + re, mask=mask, other=0.0).to(ACC)
        if COMPLEX:
            hi = tl.load(start_ptr + summary_at + re + 1, mask=mask, other=0.0).to(ACC)
    t = chunk * CHUNK
    end = tl.minimum(t + CHUNK, T)
    # while, not range: the interpreter cannot take a loop bound known only at run time.
    while t < end:
        row = (bid * T + t) * M * W
        ar = tl.load(a_ptr + row + re, mask=mask, other=0.0).to(ACC)
        br = tl.load(b_ptr + row + re, mask=mask, other=0.0).to(ACC)
        if HAS_RESET:
            keep = tl.load(reset_ptr + bid * T + t) == 0
            ar = tl.where(keep, ar, 0.0)
        if COMPLEX:
            ai = tl.load(a_ptr + row + re + 1, mask=mask, other=0.0).to(ACC)
            bi = tl.load(b_ptr + row + re + 1, mask=mask, other=0.0).to(ACC)
            if HAS_RESET:
                ai = tl.where(keep, ai, 0.0)
            hr, hi = ar * hr - ai * hi + br, ar * hi + ai * hr + bi
            if SUMMARY:
                pr, pi = ar * pr - ai * pi, ar * pi + ai * pr
            else:
                tl.store(h_ptr + row + re + 1, hi.to(h_ptr.dtype.element_ty), mask=mask)
        else:
            hr = ar * hr + br
            if SUMMARY:
                pr = ar * pr
        if not SUMMARY:
            tl.store(h_ptr + row + re, hr.to(h_ptr.dtype.element_ty), mask=mask)
        t += 1
    if SUMMARY:
        tl.store(prod_ptr + summary_at + re, pr, mask=mask)
        tl.store(local_ptr + summary_at + re, hr, mask=mask)
        if COMPLEX:
            tl.store(prod_ptr + summary_at + re + 1, pi, mask=mask)
            tl.store(local_ptr + summary_at + re + 1, hi, mask=mask)


@triton.jit
def _scan_bwd_kernel(
    a_ptr, h_ptr, h0_ptr, reset_ptr,  # [B, T, M], [B, T, M] forward output, [B, M], [B, T]
    g_ptr,  # [B, T, M] gradient of h
    start_ptr,  # [B, NC, M] adjoint entering each chunk from its right (APPLY)
    ga_ptr, gb_ptr, gh0_ptr,  # [B, T, M], [B, T, M], [B, M] (APPLY)
    prod_ptr, local_ptr,  # [B, NC, M] chunk summaries (SUMMARY)
    T, M, CHUNK, NC,
    BLOCK: tl.constexpr, COMPLEX: tl.constexpr, HAS_RESET: tl.constexpr,
    HAS_H0: tl.constexpr, SUMMARY: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    bid = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    W: tl.constexpr = 2 if COMPLEX else 1
    re = W * offs
    summary_at = (bid * NC + chunk) * M * W
    # mu: the adjoint reaching h_{t-1} through step t (here: from the step right of the chunk).
    mi = tl.zeros([BLOCK], dtype=ACC)
    pi = tl.zeros([BLOCK], dtype=ACC)
    pr = tl.full([BLOCK], 1.0, dtype=ACC)
    if SUMMARY:
        mr = tl.zeros([BLOCK], dtype=ACC)
    else:
        mr = tl.load(start_ptr + summary_at + re, mask=mask, other=0.0).to(ACC)
        if COMPLEX:
            mi = tl.load(start_ptr + summary_at + re + 1, mask=mask, other=0.0).to(ACC)
    first = chunk * CHUNK
    t = tl.minimum(first + CHUNK, T) - 1
    while t >= first:
        row = (bid * T + t) * M * W
        ar = tl.load(a_ptr + row + re, mask=mask, other=0.0).to(ACC)
        lr = tl.load(g_ptr + row + re, mask=mask, other=0.0).to(ACC) + mr
        if HAS_RESET:
            keep = tl.load(reset_ptr + bid * T + t) == 0
            ar = tl.where(keep, ar, 0.0)
        if not SUMMARY:
            # h_{t-1}: the previous output, or h0 before the first step.
            if t > 0:
                xr = tl.load(h_ptr + row - M * W + re, mask=mask, other=0.0).to(ACC)
            else:
                xr = tl.load(h0_ptr + bid * M * W + re, mask=mask & HAS_H0, other=0.0).to(ACC)
            tl.store(gb_ptr + row + re, lr.to(gb_ptr.dtype.element_ty), mask=mask)
        if COMPLEX:
            ai = -tl.load(a_ptr + row + re + 1, mask=mask, other=0.0).to(ACC)  # conj(a)
            li = tl.load(g_ptr + row + re + 1, mask=mask, other=0.0).to(ACC) + mi
            if HAS_RESET:
                ai = tl.where(keep, ai, 0.0)
            if SUMMARY:
                pr, pi = ar * pr - ai * pi, ar * pi + ai * pr
            else:
                if t > 0:
                    xi = tl.load(h_ptr + row - M * W + re + 1, mask=mask, other=0.0).to(ACC)
                else:
                    xi = tl.load(h0_ptr + bid * M * W + re + 1, mask=mask & HAS_H0, other=0.0).to(
                        ACC
                    )
                tl.store(gb_ptr + row + re + 1, li.to(gb_ptr.dtype.element_ty), mask=mask)
                # grad_a = lam * conj(h_{t-1})
                qr = lr * xr + li * xi
                qi = li * xr - lr * xi
                if HAS_RESET:
                    qi = tl.where(keep, qi, 0.0)
                tl.store(ga_ptr + row + re + 1, qi.to(ga_ptr.dtype.element_ty), mask=mask)
            mr, mi = ar * lr - ai * li, ar * li + ai * lr
        else:
            if SUMMARY:
                pr = ar * pr
            else:
                qr = lr * xr
            mr = ar * lr
        if not SUMMARY:
            if HAS_RESET:
                qr = tl.where(keep, qr, 0.0)
            tl.store(ga_ptr + row + re, qr.to(ga_ptr.dtype.element_ty), mask=mask)
        t -= 1
    if SUMMARY:
        tl.store(prod_ptr + summary_at + re, pr, mask=mask)
        tl.store(local_ptr + summary_at + re, mr, mask=mask)
        if COMPLEX:
            tl.store(prod_ptr + summary_at + re + 1, pi, mask=mask)
            tl.store(local_ptr + summary_at + re + 1, mi, mask=mask)
    elif HAS_H0:
        if chunk == 0:
            tl.store(gh0_ptr + bid * M * W + re, mr.to(gh0_ptr.dtype.element_ty), mask=mask)
            if COMPLEX:
                tl.store(gh0_ptr + bid * M * W + re + 1, mi.to(gh0_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _carry_kernel(
    prod_ptr, local_ptr,  # [B, NC, M] chunk summaries
    h0_ptr,  # [B, M] boundary state (HAS_H0)
    start_ptr,  # [B, NC, M] out: the state entering each chunk
    M, NC,
    BLOCK: tl.constexpr, COMPLEX: tl.constexpr, HAS_H0: tl.constexpr,
    REVERSE: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """``H_{c+1} = P_c H_c + S_c`` over chunks (right to left when ``REVERSE``)."""
    bid = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    W: tl.constexpr = 2 if COMPLEX else 1
    re = W * offs
    hr = tl.load(h0_ptr + bid * M * W + re, mask=mask & HAS_H0, other=0.0).to(ACC)
    hi = tl.zeros([BLOCK], dtype=ACC)
    if COMPLEX:
        hi = tl.load(h0_ptr + bid * M * W + re + 1, mask=mask & HAS_H0, other=0.0).to(ACC)
    i = 0
    while i < NC:
        c = (NC - 1 - i) if REVERSE else i
        at = (bid * NC + c) * M * W + re
        tl.store(start_ptr + at, hr, mask=mask)
        pr = tl.load(prod_ptr + at, mask=mask, other=0.0)
        sr = tl.load(local_ptr + at, mask=mask, other=0.0)
        if COMPLEX:
            tl.store(start_ptr + at + 1, hi, mask=mask)
            pi = tl.load(prod_ptr + at + 1, mask=mask, other=0.0)
            si = tl.load(local_ptr + at + 1, mask=mask, other=0.0)
            hr, hi = pr * hr - pi * hi + sr, pr * hi + pi * hr + si
        else:
            hr = pr * hr + sr
        i += 1


def _plan(batch: int, length: int, m: int, chunk_size: int | None) -> tuple[int, int, int, int]:
    """(BLOCK, chunk length, number of chunks, warps)."""
    block = min(triton.next_power_of_2(max(m, 1)), 512)
    warps = 4 if block >= 256 else 1
    rows = batch * triton.cdiv(m, block)
    if chunk_size is None:
        wanted = triton.cdiv(_TARGET_PROGRAMS, rows)
        chunk_size = max(_MIN_CHUNK, triton.cdiv(length, wanted))
    chunk_size = max(1, min(chunk_size, length))
    return block, chunk_size, triton.cdiv(length, chunk_size), warps


def _real_view(x: torch.Tensor) -> torch.Tensor:
    """A contiguous real tensor over the same values (complex as interleaved pairs)."""
    x = x.contiguous()
    return torch.view_as_real(x) if x.is_complex() else x


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype in (torch.float64, torch.complex128) else tl.float32


def _acc_torch(dtype: torch.dtype) -> torch.dtype:
    if dtype.is_complex:
        return torch.complex128 if dtype == torch.complex128 else torch.complex64
    return torch.float64 if dtype == torch.float64 else torch.float32


class _LinearScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, reset, chunk_size):
        batch, length = a.shape[:2]
        m = a[0, 0].numel()
        complex_ = a.is_complex()
        acc = _acc(a.dtype)
        block, chunk, n_chunks, warps = _plan(batch, length, m, chunk_size)
        a_r, b_r = _real_view(a), _real_view(b)
        h = torch.empty_like(a.contiguous())
        h_r = _real_view(h)
        reset_i8 = reset.to(torch.int8).contiguous() if reset is not None else a_r
        consts = dict(BLOCK=block, COMPLEX=complex_, HAS_RESET=reset is not None, ACC=acc)
        wide = _acc_torch(a.dtype)
        starts = torch.empty(batch, n_chunks, m, dtype=wide, device=a.device)
        if n_chunks == 1:
            if h0 is None:
                starts.zero_()
            else:
                starts.copy_(h0.reshape(batch, 1, m))
        else:
            prods, locals_ = torch.empty_like(starts), torch.empty_like(starts)
            grid = (batch, n_chunks, triton.cdiv(m, block))
            _scan_fwd_kernel[grid](
                a_r, b_r, reset_i8, h_r, h_r, _real_view(prods), _real_view(locals_),
                length, m, chunk, n_chunks, SUMMARY=True, num_warps=warps, **consts,
            )  # fmt: skip
            h0_arg = _real_view(h0.to(wide)) if h0 is not None else a_r
            _carry_kernel[(batch, triton.cdiv(m, block))](
                _real_view(prods), _real_view(locals_), h0_arg, _real_view(starts), m, n_chunks,
                BLOCK=block, COMPLEX=complex_, HAS_H0=h0 is not None, REVERSE=False, ACC=acc,
                num_warps=warps,
            )  # fmt: skip
        grid = (batch, n_chunks, triton.cdiv(m, block))
        _scan_fwd_kernel[grid](
            a_r, b_r, reset_i8, _real_view(starts), h_r, h_r, h_r,
            length, m, chunk, n_chunks, SUMMARY=False, num_warps=warps, **consts,
        )  # fmt: skip
        ctx.save_for_backward(a, h, h0, reset)
        ctx.plan = (block, chunk, n_chunks, warps)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h, h0, reset = ctx.saved_tensors
        block, chunk, n_chunks, warps = ctx.plan
        batch, length = a.shape[:2]
        m = a[0, 0].numel()
        complex_ = a.is_complex()
        acc = _acc(a.dtype)
        wide = _acc_torch(a.dtype)
        a_r, h_r, g_r = _real_view(a), _real_view(h), _real_view(grad_h.to(a.dtype))
        reset_i8 = reset.to(torch.int8).contiguous() if reset is not None else a_r
        grad_a, grad_b = torch.empty_like(h), torch.empty_like(h)
        grad_h0 = torch.empty_like(h0.contiguous()) if h0 is not None else None
        h0_r = _real_view(h0) if h0 is not None else a_r
        consts = dict(
            BLOCK=block, COMPLEX=complex_, HAS_RESET=reset is not None, HAS_H0=h0 is not None,
            ACC=acc,
        )  # fmt: skip
        starts = torch.zeros(batch, n_chunks, m, dtype=wide, device=a.device)
        grid = (batch, n_chunks, triton.cdiv(m, block))
        if n_chunks > 1:
            prods, locals_ = torch.empty_like(starts), torch.empty_like(starts)
            _scan_bwd_kernel[grid](
                a_r, h_r, h0_r, reset_i8, g_r, a_r, a_r, a_r, a_r,
                _real_view(prods), _real_view(locals_), length, m, chunk, n_chunks,
                SUMMARY=True, num_warps=warps, **consts,
            )  # fmt: skip
            _carry_kernel[(batch, triton.cdiv(m, block))](
                _real_view(prods), _real_view(locals_), a_r, _real_view(starts), m, n_chunks,
                BLOCK=block, COMPLEX=complex_, HAS_H0=False, REVERSE=True, ACC=acc,
                num_warps=warps,
            )  # fmt: skip
        gh0_r = _real_view(grad_h0) if grad_h0 is not None else a_r
        _scan_bwd_kernel[grid](
            a_r, h_r, h0_r, reset_i8, g_r, _real_view(starts),
            _real_view(grad_a), _real_view(grad_b), gh0_r, a_r, a_r,
            length, m, chunk, n_chunks, SUMMARY=False, num_warps=warps, **consts,
        )  # fmt: skip
        return grad_a, grad_b, grad_h0, None, None


def _check(a, b, h0, reset) -> None:
    where = "linear_scan (triton)"
    for name, x in (("a", a), ("b", b), ("h0", h0)):
        if x is not None and x.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"{where}: {name} has dtype {x.dtype}; the kernel takes "
                f"{', '.join(str(d) for d in SUPPORTED_DTYPES)} (use backend='chunk' otherwise)"
            )
    if a.shape != b.shape or a.dtype != b.dtype or a.dim() < 2:
        raise ValueError(
            f"{where}: a and b must be [B, T, *] tensors of one shape and dtype, got "
            f"{tuple(a.shape)} {a.dtype} and {tuple(b.shape)} {b.dtype}"
        )
    if a.shape[1] < 1:
        raise ValueError(f"{where}: needs T >= 1, got shape {tuple(a.shape)}")
    if h0 is not None and (h0.shape != a.shape[:1] + a.shape[2:] or h0.dtype != a.dtype):
        raise ValueError(
            f"{where}: h0 must be [B, *] = {tuple(a.shape[:1] + a.shape[2:])} of dtype "
            f"{a.dtype}, got {tuple(h0.shape)} {h0.dtype}"
        )
    if reset is not None and (reset.dtype != torch.bool or reset.shape != a.shape[:2]):
        raise ValueError(
            f"{where}: reset must be a bool [B, T] = {tuple(a.shape[:2])} tensor, got "
            f"{tuple(reset.shape)} {reset.dtype}"
        )
    devices = {x.device for x in (a, b, h0, reset) if x is not None}
    if len(devices) > 1:
        raise ValueError(f"{where}: inputs are on different devices: {sorted(map(str, devices))}")
    check_device(a, "linear_scan")


def check_device(x: torch.Tensor, op: str) -> None:
    """Raise unless ``x`` is on CUDA or the interpreter is on (``TRITON_INTERPRET=1``)."""
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"{op}: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1, set before "
            f"mixerzoo is imported, to interpret the kernel on the CPU); got {x.device} tensors. "
            "Use backend='chunk' on the CPU."
        )


def linear_scan_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    reset: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused ``h_t = a_t * h_{t-1} + b_t`` (``h_t = b_t`` where ``reset_t``); same arguments and
    returns as :func:`mixerzoo.core.ops.linear_scan.naive.linear_scan_naive`.

    Args:
        a, b: ``[B, T, *]``, one of :data:`SUPPORTED_DTYPES` (the same for both).
        h0: ``[B, *]`` state before the first step, or ``None`` (zeros).
        reset: ``[B, T]`` bool, or ``None``.
        chunk_size: time steps per parallel chunk (default: one chunk unless the rows give too
            few programs to fill a GPU); exposed for tests.

    Returns:
        ``(h [B, T, *], h[:, -1])`` in the dtype of ``a``.
    """
    _check(a, b, h0, reset)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"linear_scan (triton): chunk_size must be >= 1, got {chunk_size}")
    h = _LinearScanTriton.apply(a, b, h0, reset, chunk_size)
    return h, h[:, -1]
