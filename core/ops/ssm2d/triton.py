"""Fused Triton kernels for the 2-D selective SSM (forward and backward), with their autograd.

One program owns one batch element and a block of channels ``e`` (all ``N`` state indices) and
walks the whole ``T x V`` grid in order: rows of time, variates within a row. The grid point
``(t, v)`` needs ``h1[t-1, v]`` (kept in a ``[B, V, E, N]`` buffer that the program updates in
place, so it ends holding the final states) and ``h2[t, v-1]`` (kept in registers along the row).
Every element-wise step of ``naive.py`` (the discretisation, both updates, the ``C`` read-out)
happens in registers; the loads are the per-token inputs and that one state row. The chunk path
instead runs about 25 separate element-wise operations over ``[B, T, E, N]`` per variate.

The backward walks the grid in reverse with the adjoint recurrence (for ``gh1 = dL/dh1[t, v]``,
``gh2 = dL/dh2[t, v]``, with ``a1 = exp(dt1 A1)``, ``g1 = (a1 - 1) / A1`` and likewise ``a4``,
``g4``, all taken at the point that reads the state):

    gh1[t,v] = C1 gy[t,v] + a1[t+1,v] gh1[t+1,v] + g4[t,v+1] A3 gh2[t,v+1]
    gh2[t,v] = C2 gy[t,v] + a4[t,v+1] gh2[t,v+1] + g1[t+1,v] A2 gh1[t+1,v]

and forms every input gradient at the point from the stored states of the point and its two
neighbours. Storing the states (``[B, T, V, E, N]`` twice, only when a gradient is needed) is
the memory cost of this version; recomputing them chunk by chunk in the backward, as Mamba's
kernel does, would remove it and is not done yet.

Per-channel outputs (``y``, ``dx``, ``ddt``) are written directly. Sums over channels (the
gradients of ``B``, ``C``) are written per channel block and summed afterwards, and sums over
the grid (the gradients of ``A1 .. A4``) are accumulated in registers per program and summed
over the batch afterwards, so there are no atomics and the result is deterministic.

Padded time steps (``mask``, compiled in only when given): the forward keeps both states of the
point from one time step up; the backward passes the point's state adjoints straight up
(``r1 = gh1``, ``r2 = gh2``), sends nothing left and gives the point's inputs no gradient.

Arithmetic is float32 (float64 for float64 inputs); other dtypes are cast on the way in and out.
On the CPU the kernels run only under ``TRITON_INTERPRET=1`` (how the tests check them).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["ssm2d_scan_triton"]


@triton.jit
def _load_transitions(a1_ptr, a2_ptr, a3_ptr, a4_ptr, en, m2):
    """``A1 .. A4`` tiles ``[BLOCK_E, BLOCK_N]``. Padding lanes get ``A1 = A4 = -1`` so that
    ``(a - 1) / A`` stays finite there; their inputs are zero."""
    A1 = tl.load(a1_ptr + en, mask=m2, other=-1.0)
    A2 = tl.load(a2_ptr + en, mask=m2, other=0.0)
    A3 = tl.load(a3_ptr + en, mask=m2, other=0.0)
    A4 = tl.load(a4_ptr + en, mask=m2, other=-1.0)
    return A1, A2, A3, A4


@triton.jit
def _load_token(
    x_ptr, dt1_ptr, dt2_ptr, b1_ptr, b2_ptr, c1_ptr, c2_ptr, tok, E, N, offs_e, offs_n, me, mn
):  # fmt: skip
    """The inputs of grid point ``tok``: ``x, dt1, dt2`` as columns ``[BLOCK_E, 1]``, ``B1, B2,
    C1, C2`` as rows ``[1, BLOCK_N]``."""
    at_e = tok * E + offs_e
    at_n = tok * N + offs_n
    x = tl.load(x_ptr + at_e, mask=me, other=0.0)[:, None]
    d1 = tl.load(dt1_ptr + at_e, mask=me, other=0.0)[:, None]
    d2 = tl.load(dt2_ptr + at_e, mask=me, other=0.0)[:, None]
    B1 = tl.load(b1_ptr + at_n, mask=mn, other=0.0)[None, :]
    B2 = tl.load(b2_ptr + at_n, mask=mn, other=0.0)[None, :]
    C1 = tl.load(c1_ptr + at_n, mask=mn, other=0.0)[None, :]
    C2 = tl.load(c2_ptr + at_n, mask=mn, other=0.0)[None, :]
    return x, d1, d2, B1, B2, C1, C2


@triton.jit
def _ssm2d_fwd_kernel(
    x_ptr, dt1_ptr, dt2_ptr,  # [B, T, V, E]
    a1_ptr, a2_ptr, a3_ptr, a4_ptr,  # [E, N]
    b1_ptr, b2_ptr, c1_ptr, c2_ptr,  # [B, T, V, N]
    s1_ptr, s2_ptr,  # [B, V, E, N]: the initial states in, the final states out
    y_ptr,  # [B, T, V, E]
    h1_ptr, h2_ptr,  # [B, T, V, E, N]: every state (written when STORE)
    mask_ptr,  # [B, T] int32, 1 = real time step (read when HAS_MASK)
    T, V, E, N,
    BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, STORE: tl.constexpr,
    HAS_MASK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    offs_e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    me, mn = offs_e < E, offs_n < N
    m2 = me[:, None] & mn[None, :]
    en = offs_e[:, None] * N + offs_n[None, :]
    A1, A2, A3, A4 = _load_transitions(a1_ptr, a2_ptr, a3_ptr, a4_ptr, en, m2)
    t = 0
    while t < T:  # while, not range: the interpreter cannot take a runtime range bound
        left1 = tl.zeros_like(A1)  # h1[t, v-1], h2[t, v-1]: nothing before the first variate
        left2 = tl.zeros_like(A1)
        v = 0
        while v < V:
            tok = (b * T + t) * V + v
            x, d1, d2, B1, B2, C1, C2 = _load_token(
                x_ptr, dt1_ptr, dt2_ptr, b1_ptr, b2_ptr, c1_ptr, c2_ptr,
                tok, E, N, offs_e, offs_n, me, mn,
            )  # fmt: skip
            row = (b * V + v) * E * N + en
            up1 = tl.load(s1_ptr + row, mask=m2, other=0.0)  # h1[t-1, v], h2[t-1, v]
            up2 = tl.load(s2_ptr + row, mask=m2, other=0.0)
            a1 = tl.exp(d1 * A1)
            a4 = tl.exp(d2 * A4)
            h1 = a1 * up1 + (a1 - 1.0) / A1 * (A2 * up2 + B1 * x)
            h2 = a4 * left2 + (a4 - 1.0) / A4 * (A3 * left1 + B2 * x)
            if HAS_MASK:
                # A padded time step keeps the states of the time step above.
                real = tl.load(mask_ptr + b * T + t) != 0
                h1 = tl.where(real, h1, up1)
                h2 = tl.where(real, h2, up2)
            tl.store(s1_ptr + row, h1, mask=m2)
            tl.store(s2_ptr + row, h2, mask=m2)
            tl.store(y_ptr + tok * E + offs_e, tl.sum(C1 * h1 + C2 * h2, axis=1), mask=me)
            if STORE:
                tl.store(h1_ptr + tok * E * N + en, h1, mask=m2)
                tl.store(h2_ptr + tok * E * N + en, h2, mask=m2)
            left1 = h1
            left2 = h2
            v += 1
        t += 1


@triton.jit
def _ssm2d_bwd_kernel(
    x_ptr, dt1_ptr, dt2_ptr,  # [B, T, V, E]
    a1_ptr, a2_ptr, a3_ptr, a4_ptr,  # [E, N]
    b1_ptr, b2_ptr, c1_ptr, c2_ptr,  # [B, T, V, N]
    h1_ptr, h2_ptr,  # [B, T, V, E, N] every state from the forward
    h10_ptr, h20_ptr,  # [B, V, E, N] initial states
    gy_ptr,  # [B, T, V, E]
    r1_ptr, r2_ptr,  # [B, V, E, N]: grads of the final states in, of the initial states out
    gx_ptr, gd1_ptr, gd2_ptr,  # [B, T, V, E]
    gb1_ptr, gb2_ptr, gc1_ptr, gc2_ptr,  # [E blocks, B, T, V, N] partial sums
    ga1_ptr, ga2_ptr, ga3_ptr, ga4_ptr,  # [B, E, N] partial sums
    mask_ptr,  # [B, T] int32, 1 = real time step (read when HAS_MASK)
    T, V, E, N,
    BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, HAS_MASK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    eblock = tl.program_id(1)
    n_batch = tl.num_programs(0)
    offs_e = eblock * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, BLOCK_N)
    me, mn = offs_e < E, offs_n < N
    m2 = me[:, None] & mn[None, :]
    en = offs_e[:, None] * N + offs_n[None, :]
    A1, A2, A3, A4 = _load_transitions(a1_ptr, a2_ptr, a3_ptr, a4_ptr, en, m2)
    gA1 = tl.zeros_like(A1)
    gA2 = tl.zeros_like(A1)
    gA3 = tl.zeros_like(A1)
    gA4 = tl.zeros_like(A1)
    t = T - 1
    while t >= 0:
        # Adjoint flowing left along the row: from h2[t, v+1] into h1[t, v] and h2[t, v].
        q1 = tl.zeros_like(A1)
        q2 = tl.zeros_like(A1)
        v = V - 1
        while v >= 0:
            tok = (b * T + t) * V + v
            x, d1, d2, B1, B2, C1, C2 = _load_token(
                x_ptr, dt1_ptr, dt2_ptr, b1_ptr, b2_ptr, c1_ptr, c2_ptr,
                tok, E, N, offs_e, offs_n, me, mn,
            )  # fmt: skip
            gy = tl.load(gy_ptr + tok * E + offs_e, mask=me, other=0.0)[:, None]
            here = tok * E * N + en
            h1 = tl.load(h1_ptr + here, mask=m2, other=0.0)
            h2 = tl.load(h2_ptr + here, mask=m2, other=0.0)
            # The point's inputs: h1, h2 one time step up (the initial state on the first row)
            # and one variate to the left (zero on the first variate).
            above = here - V * E * N
            init = (b * V + v) * E * N + en
            up1 = tl.load(h1_ptr + above, mask=m2 & (t > 0), other=0.0)
            up1 += tl.load(h10_ptr + init, mask=m2 & (t == 0), other=0.0)
            up2 = tl.load(h2_ptr + above, mask=m2 & (t > 0), other=0.0)
            up2 += tl.load(h20_ptr + init, mask=m2 & (t == 0), other=0.0)
            left1 = tl.load(h1_ptr + here - E * N, mask=m2 & (v > 0), other=0.0)
            left2 = tl.load(h2_ptr + here - E * N, mask=m2 & (v > 0), other=0.0)
            row = (b * V + v) * E * N + en
            gh1 = C1 * gy + tl.load(r1_ptr + row, mask=m2, other=0.0) + q1
            gh2 = C2 * gy + tl.load(r2_ptr + row, mask=m2, other=0.0) + q2
            if HAS_MASK:
                # At a padded point the states are those one time step up: their adjoints pass
                # straight up, and the update (zeroed adjoints below) gets no gradient.
                real = tl.load(mask_ptr + b * T + t) != 0
                pass1 = gh1
                pass2 = gh2
                gh1 = tl.where(real, gh1, 0.0)
                gh2 = tl.where(real, gh2, 0.0)
            a1 = tl.exp(d1 * A1)
            a4 = tl.exp(d2 * A4)
            g1 = (a1 - 1.0) / A1
            g4 = (a4 - 1.0) / A4
            s1 = A2 * up2 + B1 * x  # held inputs of the two updates
            s2 = A3 * left1 + B2 * x
            k1 = gh1 * g1
            k2 = gh2 * g4
            tl.store(
                gd1_ptr + tok * E + offs_e, tl.sum(gh1 * a1 * (A1 * up1 + s1), axis=1), mask=me
            )
            tl.store(
                gd2_ptr + tok * E + offs_e, tl.sum(gh2 * a4 * (A4 * left2 + s2), axis=1), mask=me
            )
            tl.store(gx_ptr + tok * E + offs_e, tl.sum(k1 * B1 + k2 * B2, axis=1), mask=me)
            part = (eblock.to(tl.int64) * n_batch * T * V + tok) * N + offs_n
            tl.store(gb1_ptr + part, tl.sum(k1 * x, axis=0), mask=mn)
            tl.store(gb2_ptr + part, tl.sum(k2 * x, axis=0), mask=mn)
            tl.store(gc1_ptr + part, tl.sum(gy * h1, axis=0), mask=mn)
            tl.store(gc2_ptr + part, tl.sum(gy * h2, axis=0), mask=mn)
            gA1 += gh1 * (d1 * a1 * up1 + (d1 * a1 - g1) / A1 * s1)
            gA2 += k1 * up2
            gA3 += k2 * left1
            gA4 += gh2 * (d2 * a4 * left2 + (d2 * a4 - g4) / A4 * s2)
            up_g1 = a1 * gh1  # into h1[t-1, v]
            up_g2 = k1 * A2  # into h2[t-1, v]
            if HAS_MASK:
                up_g1 = tl.where(real, up_g1, pass1)
                up_g2 = tl.where(real, up_g2, pass2)
            tl.store(r1_ptr + row, up_g1, mask=m2)
            tl.store(r2_ptr + row, up_g2, mask=m2)
            q1 = k2 * A3  # into h1[t, v-1]
            q2 = a4 * gh2  # into h2[t, v-1]
            v -= 1
        t -= 1
    out = b * E * N + en
    tl.store(ga1_ptr + out, gA1, mask=m2)
    tl.store(ga2_ptr + out, gA2, mask=m2)
    tl.store(ga3_ptr + out, gA3, mask=m2)
    tl.store(ga4_ptr + out, gA4, mask=m2)


def _blocks(e: int, n: int) -> tuple[int, int, int]:
    """(BLOCK_E, BLOCK_N, warps): all of N in one tile, about 128 tile elements per program."""
    block_n = triton.next_power_of_2(n)
    block_e = max(1, min(triton.next_power_of_2(e), 128 // block_n))
    warps = 1 if block_e * block_n <= 128 else 4
    return block_e, block_n, warps


def _check_device(x: torch.Tensor) -> None:
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "ssm2d_scan: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1, set before "
            f"mixerzoo is imported, to interpret the kernel on the CPU); got {x.device} tensors. "
            "Use backend='chunk' on the CPU."
        )


class _SSM2DScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, h1_0, h2_0, mask):
        bsz, length, n_var, e = x.shape
        n = A1.shape[1]
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        ins = [p.to(dtype).contiguous() for p in (x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2)]
        h1_0_in, h2_0_in = h1_0, h2_0
        h1_0, h2_0 = (h.to(dtype).contiguous() for h in (h1_0, h2_0))
        s1, s2 = h1_0.clone(), h2_0.clone()
        y = torch.empty_like(ins[0])
        store = any(ctx.needs_input_grad)
        full = (bsz, length, n_var, e, n) if store else (1,)
        h1_all = torch.empty(full, dtype=dtype, device=x.device)
        h2_all = torch.empty(full, dtype=dtype, device=x.device)
        block_e, block_n, warps = _blocks(e, n)
        grid = (bsz, triton.cdiv(e, block_e))
        has_mask = mask is not None
        # Without a mask the pointer is never read (HAS_MASK compiles the reads out).
        mask_i32 = mask.to(torch.int32).contiguous() if has_mask else y
        _ssm2d_fwd_kernel[grid](
            *ins, s1, s2, y, h1_all, h2_all, mask_i32, length, n_var, e, n,
            BLOCK_E=block_e, BLOCK_N=block_n, STORE=store, HAS_MASK=has_mask, num_warps=warps,
        )  # fmt: skip
        if store:
            ctx.save_for_backward(*ins, h1_0, h2_0, h1_all, h2_all, mask_i32)
            ctx.has_mask = has_mask
            ctx.dtypes = [p.dtype for p in (x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2)]
            ctx.dtypes += [h1_0_in.dtype, h2_0_in.dtype]
        out_dtype = x.dtype
        return y.to(out_dtype), s1.to(out_dtype), s2.to(out_dtype)

    @staticmethod
    def backward(ctx, gy, g_h1, g_h2):
        (x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, h1_0, h2_0, h1_all, h2_all, mask_i32) = (
            ctx.saved_tensors
        )
        bsz, length, n_var, e = x.shape
        n = A1.shape[1]
        dtype = x.dtype
        gy = torch.zeros_like(x) if gy is None else gy.to(dtype).contiguous()
        r1 = torch.zeros_like(h1_0) if g_h1 is None else g_h1.to(dtype).contiguous().clone()
        r2 = torch.zeros_like(h2_0) if g_h2 is None else g_h2.to(dtype).contiguous().clone()
        block_e, block_n, warps = _blocks(e, n)
        n_blocks = triton.cdiv(e, block_e)
        gx, gd1, gd2 = (torch.empty_like(x) for _ in range(3))
        parts = [x.new_empty(n_blocks, bsz, length, n_var, n) for _ in range(4)]
        gas = [x.new_empty(bsz, e, n) for _ in range(4)]
        _ssm2d_bwd_kernel[(bsz, n_blocks)](
            x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, h1_all, h2_all, h1_0, h2_0, gy,
            r1, r2, gx, gd1, gd2, *parts, *gas, mask_i32, length, n_var, e, n,
            BLOCK_E=block_e, BLOCK_N=block_n, HAS_MASK=ctx.has_mask, num_warps=warps,
        )  # fmt: skip
        grads = [gx, gd1, gd2, *(g.sum(0) for g in gas), *(p.sum(0) for p in parts), r1, r2]
        return (*(g.to(d) for g, d in zip(grads, ctx.dtypes)), None)


def ssm2d_scan_triton(
    x: torch.Tensor,
    dt1: torch.Tensor,
    dt2: torch.Tensor,
    A1: torch.Tensor,
    A2: torch.Tensor,
    A3: torch.Tensor,
    A4: torch.Tensor,
    B1: torch.Tensor,
    B2: torch.Tensor,
    C1: torch.Tensor,
    C2: torch.Tensor,
    h1_0: torch.Tensor | None = None,
    h2_0: torch.Tensor | None = None,
    *,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as ``naive.ssm2d_scan_naive``; fused kernels, float32 arithmetic."""
    _check_device(x)
    bsz, _, n_var, e = x.shape
    zeros = x.new_zeros(bsz, n_var, e, A1.shape[1])
    h1_0 = h1_0 if h1_0 is not None else zeros
    h2_0 = h2_0 if h2_0 is not None else zeros
    return _SSM2DScan.apply(x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, h1_0, h2_0, mask)
