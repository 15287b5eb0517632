"""Fused Triton kernels for Mamba's selective scan (S6), forward and backward.

"Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (Gu & Dao, 2023,
arXiv 2312.00752), with mamba-ssm's ``selective_scan_fn`` argument layout and mixerzoo's
extensions (initial state ``h0``, ``reset`` and padding ``mask``), exactly the semantics of
:mod:`.naive` (see :func:`mixerzoo.core.ops.selective_scan.selective_scan`).

Layout. The inputs are channel-major, ``u, delta, z [B, D, L]`` and ``B, C [B, G, N, L]``, so
time is the contiguous axis. One program owns one batch row and a block of ``BLOCK_D`` channels
(all ``N`` states) and walks time in chunks of ``BLOCK_T`` steps: each chunk loads coalesced
``[BLOCK_D, BLOCK_T]`` tiles, builds the ``[BLOCK_D, N, BLOCK_T]`` decays ``exp(dt A)`` and inputs
``dt u B`` in registers, runs the recurrence as a parallel associative scan along time (pairs
``(a, b)`` composed as ``(a1 a2, a2 b1 + b2)``), adds the carried state, contracts with ``C``
and writes the gated output. Only ``u, delta, z, B, C`` are read and ``out`` written, once each.

Backward. The forward stores the state entering every chunk (``[B, D, N, L / BLOCK_T]``, one
value per ``BLOCK_T`` steps, only when a gradient is needed); the backward walks the chunks right
to left, recomputes the chunk's states from its stored start with the same scan, and runs the
adjoint ``lam_t = g_t + a_{t+1} lam_{t+1}`` (``g_t = dy_t C_t``, ``a_t = exp(dt_t A)``) as a
reverse associative scan over triples ``(first a, product of the other a, value)``, so that no
shifted copy of the decays is needed. The decay's gradient needs ``a_t h_{t-1}``, which is
``h_t - dt_t u_t B_t`` (no division, exact at a reset where ``a_t = 0``). The adjoint leaving a
chunk on the left is carried to the next one, and what is left at ``t = 0`` is ``dL/dh0``.

Sums over channels (the gradients of ``B`` and ``C``) are written per channel block and summed
afterwards; sums over time (``A``, ``D``, ``delta_bias``) are kept in registers per program and
summed over the batch afterwards: no atomics, deterministic results. A channel block never
straddles two groups of ``B`` / ``C`` (the block size is chosen so).

Resets and padding, as in the other backends: a reset at ``t`` is a decay of exactly 0 there (no
gradient reaches ``delta_t`` through it); a padded step (``mask`` false) has ``dt = 0`` after the
bias and softplus, an identity step whose ``delta`` gets no gradient. Steps past ``L`` in the last
chunk are padded the same way, so the state at the tile's end is the state at ``L - 1``.

Arithmetic is float32 (float64 for float64 ``u``); ``out`` is written in ``u``'s dtype and each
gradient in its input's dtype. On the CPU the kernels run only under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from mixerzoo.core.ops.linear_scan.triton import check_device

__all__ = ["selective_scan_triton", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Decided at import, as triton.jit decides whether to interpret.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _scan_combine(a1, b1, a2, b2):
    """Compose two steps of ``h = a h + b``: (a1, b1) first, then (a2, b2)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _adjoint_combine(f_r, p_r, v_r, f_l, p_l, v_l):
    """Join a segment ``l`` with the segment ``r`` right of it for ``lam_t = g_t + a_{t+1}
    lam_{t+1}``, scanned right to left (so ``r`` comes first). A segment is (its first decay,
    the product of its other decays, ``lam`` at its first step from a zero start on its right)."""
    link = p_l * f_r
    return f_l, link * p_r, v_l + link * v_r


@triton.jit
def _softplus(x):
    """``log(1 + e^x)`` accurate at both ends: ``x`` above 20, ``e^x`` below -15 and a corrected
    ``log1p`` between (``log(w) * y / (w - 1)`` with ``w = 1 + y``, exact where ``w`` rounds)."""
    y = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + y
    log1p = tl.where(w == 1.0, y, tl.log(w) * (y / (w - 1.0)))
    return tl.where(x > 20.0, x, tl.where(x < -15.0, y, log1p))


@triton.jit
def _ss_fwd_kernel(
    u_ptr, delta_ptr, z_ptr,  # [B, D, L]
    a_ptr,  # [D, N]
    bm_ptr, cm_ptr,  # [B, GB, N, L], [B, GC, N, L]
    dskip_ptr, bias_ptr,  # [D]
    h0_ptr,  # [B, D, N]
    reset_ptr, mask_ptr,  # [B, L] int8
    out_ptr,  # [B, D, L]
    last_ptr,  # [B, D, N]
    states_ptr,  # [B, D, N, NCH]: the state entering each chunk (STORE)
    D, N, L, GB, GC, NCH,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_RESET: tl.constexpr, HAS_MASK: tl.constexpr, STORE: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    bid = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    md = offs_d < D
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    dn = offs_d[:, None] * N + offs_n[None, :]
    A = tl.load(a_ptr + dn, mask=mdn, other=0.0).to(ACC)
    # The block lies in one group of B and one of C (the wrapper picks BLOCK_D so).
    # 64-bit scalar offsets of the batch row, 32-bit offsets within it (the wrapper checks that
    # D * L and N * L stay below 2^31; the states' offsets are 64-bit).
    b_row = bm_ptr + (bid * GB + (pid_d * BLOCK_D) // (D // GB)) * N * L + offs_n * L  # [BLOCK_N]
    c_row = cm_ptr + (bid * GC + (pid_d * BLOCK_D) // (D // GC)) * N * L + offs_n * L
    u_ptr += bid * D * L
    delta_ptr += bid * D * L
    z_ptr += bid * D * L
    out_ptr += bid * D * L
    rows = offs_d * L  # [BLOCK_D]: start of each channel's time row
    states_ptr += bid * D * N * NCH
    state_at = dn.to(tl.int64) * NCH  # [BLOCK_D, BLOCK_N]
    if HAS_H0:
        h = tl.load(h0_ptr + bid * D * N + dn, mask=mdn, other=0.0).to(ACC)
    else:
        h = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    if HAS_D:
        skip = tl.load(dskip_ptr + offs_d, mask=md, other=0.0).to(ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(ACC)
    last_col = offs_t[None, None, :] == BLOCK_T - 1
    c = 0
    # while, not range: the interpreter cannot take a loop bound known only at run time.
    while c < NCH:
        if STORE:
            tl.store(states_ptr + state_at + c, h, mask=mdn)
        t = c * BLOCK_T + offs_t
        mt = t < L
        mdt = md[:, None] & mt[None, :]
        at = rows[:, None] + t[None, :]
        u = tl.load(u_ptr + at, mask=mdt, other=0.0).to(ACC)
        dt = tl.load(delta_ptr + at, mask=mdt, other=0.0).to(ACC)
        if HAS_BIAS:
            dt += bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt)
        live = mt  # steps past L, and padded steps, are identity steps: dt = 0
        if HAS_MASK:
            live = live & (tl.load(mask_ptr + bid * L + t, mask=mt, other=0) != 0)
        dt = tl.where(live[None, :], dt, 0.0)
        mnt = mn[:, None] & mt[None, :]
        Bt = tl.load(b_row[:, None] + t[None, :], mask=mnt, other=0.0).to(ACC)  # [BLOCK_N, BLOCK_T]
        Ct = tl.load(c_row[:, None] + t[None, :], mask=mnt, other=0.0).to(ACC)
        decay = tl.exp(dt[:, None, :] * A[:, :, None])  # [BLOCK_D, BLOCK_N, BLOCK_T]
        if HAS_RESET:
            cut = tl.load(reset_ptr + bid * L + t, mask=mt, other=0) != 0
            decay = tl.where(cut[None, None, :], 0.0, decay)
        inp = (dt * u)[:, None, :] * Bt[None, :, :]
        reach, hs = tl.associative_scan((decay, inp), 2, _scan_combine)
        hs += reach * h[:, :, None]
        y = tl.sum(hs * Ct[None, :, :], axis=1)  # [BLOCK_D, BLOCK_T]
        h = tl.sum(tl.where(last_col, hs, 0.0), axis=2)
        if HAS_D:
            y += skip[:, None] * u
        if HAS_Z:
            zz = tl.load(z_ptr + at, mask=mdt, other=0.0).to(ACC)
            y *= zz / (1.0 + tl.exp(-zz))
        tl.store(out_ptr + at, y.to(out_ptr.dtype.element_ty), mask=mdt)
        c += 1
    tl.store(last_ptr + bid * D * N + dn, h.to(last_ptr.dtype.element_ty), mask=mdn)


@triton.jit
def _ss_bwd_kernel(
    u_ptr, delta_ptr, z_ptr, a_ptr, bm_ptr, cm_ptr, dskip_ptr, bias_ptr,
    reset_ptr, mask_ptr, states_ptr,
    gout_ptr,  # [B, D, L] gradient of out
    glast_ptr,  # [B, D, N] gradient of the last state (HAS_GLAST)
    gu_ptr, gdelta_ptr, gz_ptr,  # [B, D, L]
    gb_part_ptr, gc_part_ptr,  # [NDB, B, N, L] per channel block
    ga_part_ptr,  # [B, D, N] per batch row
    gd_part_ptr, gbias_part_ptr,  # [B, D] per batch row
    gh0_ptr,  # [B, D, N] (HAS_H0)
    D, N, L, GB, GC, NCH,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_RESET: tl.constexpr, HAS_MASK: tl.constexpr,
    HAS_GLAST: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    bid = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    n_batch = tl.num_programs(0)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    md = offs_d < D
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    dn = offs_d[:, None] * N + offs_n[None, :]
    A = tl.load(a_ptr + dn, mask=mdn, other=0.0).to(ACC)
    b_row = bm_ptr + (bid * GB + (pid_d * BLOCK_D) // (D // GB)) * N * L + offs_n * L
    c_row = cm_ptr + (bid * GC + (pid_d * BLOCK_D) // (D // GC)) * N * L + offs_n * L
    part_row = offs_n * L  # [BLOCK_N], within this block's and row's [N, L] slice
    gb_part_ptr += (pid_d.to(tl.int64) * n_batch + bid) * N * L
    gc_part_ptr += (pid_d.to(tl.int64) * n_batch + bid) * N * L
    u_ptr += bid * D * L
    delta_ptr += bid * D * L
    z_ptr += bid * D * L
    gout_ptr += bid * D * L
    gu_ptr += bid * D * L
    gdelta_ptr += bid * D * L
    gz_ptr += bid * D * L
    rows = offs_d * L
    states_ptr += bid * D * N * NCH
    state_at = dn.to(tl.int64) * NCH
    if HAS_D:
        skip = tl.load(dskip_ptr + offs_d, mask=md, other=0.0).to(ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(ACC)
    # The adjoint reaching the last state of the current chunk from its right.
    if HAS_GLAST:
        carry = tl.load(glast_ptr + bid * D * N + dn, mask=mdn, other=0.0).to(ACC)
    else:
        carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    g_a = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    g_skip = tl.zeros([BLOCK_D], dtype=ACC)
    g_bias = tl.zeros([BLOCK_D], dtype=ACC)
    first_col = offs_t[None, None, :] == 0
    ones = tl.full([BLOCK_D, BLOCK_N, BLOCK_T], 1.0, dtype=ACC)
    c = NCH - 1
    while c >= 0:
        # Recompute the chunk exactly as the forward did.
        t = c * BLOCK_T + offs_t
        mt = t < L
        mdt = md[:, None] & mt[None, :]
        at = rows[:, None] + t[None, :]
        u = tl.load(u_ptr + at, mask=mdt, other=0.0).to(ACC)
        pre = tl.load(delta_ptr + at, mask=mdt, other=0.0).to(ACC)
        if HAS_BIAS:
            pre += bias[:, None]
        if SOFTPLUS:
            dt = _softplus(pre)
        else:
            dt = pre
        live = mt
        if HAS_MASK:
            live = live & (tl.load(mask_ptr + bid * L + t, mask=mt, other=0) != 0)
        dt = tl.where(live[None, :], dt, 0.0)
        mnt = mn[:, None] & mt[None, :]
        Bt = tl.load(b_row[:, None] + t[None, :], mask=mnt, other=0.0).to(ACC)
        Ct = tl.load(c_row[:, None] + t[None, :], mask=mnt, other=0.0).to(ACC)
        decay = tl.exp(dt[:, None, :] * A[:, :, None])
        if HAS_RESET:
            cut = tl.load(reset_ptr + bid * L + t, mask=mt, other=0) != 0
            decay = tl.where(cut[None, None, :], 0.0, decay)
        x = dt * u
        inp = x[:, None, :] * Bt[None, :, :]
        h_start = tl.load(states_ptr + state_at + c, mask=mdn, other=0.0)
        reach, hs = tl.associative_scan((decay, inp), 2, _scan_combine)
        hs += reach * h_start[:, :, None]
        # Output side: the gate, the skip, and g_t = dy_t C_t.
        gy = tl.load(gout_ptr + at, mask=mdt, other=0.0).to(ACC)
        if HAS_Z:
            y = tl.sum(hs * Ct[None, :, :], axis=1)
            if HAS_D:
                y += skip[:, None] * u
            zz = tl.load(z_ptr + at, mask=mdt, other=0.0).to(ACC)
            sig = 1.0 / (1.0 + tl.exp(-zz))
            gz = gy * y * sig * (1.0 + zz * (1.0 - sig))
            tl.store(gz_ptr + at, gz.to(gz_ptr.dtype.element_ty), mask=mdt)
            gy = gy * zz * sig
        if HAS_D:
            g_skip += tl.sum(gy * u, axis=1)
            gu = gy * skip[:, None]
        else:
            gu = tl.zeros([BLOCK_D, BLOCK_T], dtype=ACC)
        g = gy[:, None, :] * Ct[None, :, :]
        # lam_t = g_t + a_{t+1} lam_{t+1}, with the carry entering at the chunk's last step.
        _, tail, lam = tl.associative_scan(
            (decay, ones, g), 2, _adjoint_combine, reverse=True
        )  # fmt: skip
        lam += tail * carry[:, :, None]
        tl.store(gc_part_ptr + part_row[:, None] + t[None, :], tl.sum(gy[:, None, :] * hs, axis=0),
                 mask=mnt)  # fmt: skip
        tl.store(gb_part_ptr + part_row[:, None] + t[None, :], tl.sum(lam * x[:, None, :], axis=0),
                 mask=mnt)  # fmt: skip
        gu += dt * tl.sum(lam * Bt[None, :, :], axis=1)
        # a_t h_{t-1} = h_t - dt_t u_t B_t: what the decay's gradient multiplies.
        held = hs - inp
        g_dt = tl.sum(lam * (u[:, None, :] * Bt[None, :, :] + A[:, :, None] * held), axis=1)
        g_a += tl.sum(lam * dt[:, None, :] * held, axis=2)
        # Identity steps (padding, past L) have the constant dt = 0: no gradient to delta.
        g_dt = tl.where(live[None, :], g_dt, 0.0)
        if SOFTPLUS:
            g_dt = g_dt / (1.0 + tl.exp(-pre))
        if HAS_BIAS:
            g_bias += tl.sum(g_dt, axis=1)
        tl.store(gu_ptr + at, gu.to(gu_ptr.dtype.element_ty), mask=mdt)
        tl.store(gdelta_ptr + at, g_dt.to(gdelta_ptr.dtype.element_ty), mask=mdt)
        # What leaves the chunk on the left: a_{first} lam_{first}.
        carry = tl.sum(tl.where(first_col, decay * lam, 0.0), axis=2)
        c -= 1
    if HAS_H0:
        tl.store(gh0_ptr + bid * D * N + dn, carry.to(gh0_ptr.dtype.element_ty), mask=mdn)
    tl.store(ga_part_ptr + bid * D * N + dn, g_a, mask=mdn)
    if HAS_D:
        tl.store(gd_part_ptr + bid * D + offs_d, g_skip, mask=md)
    if HAS_BIAS:
        tl.store(gbias_part_ptr + bid * D + offs_d, g_bias, mask=md)


def _blocks(channels: int, d_state: int, groups: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(BLOCK_D, BLOCK_N, BLOCK_T, warps). A channel block must not straddle two groups of
    ``B`` / ``C``: with more than one group its size divides the channels per group."""
    block_n = triton.next_power_of_2(d_state)
    if _INTERPRETED:
        # The interpreter runs a generic scan element by element: keep the tiles small.
        block_d, block_t, warps = 2, 8, 1
    else:
        # Untuned (no GPU was at hand when this was written; see benchmarks/RESULTS.md): about
        # 4K tile values per program, [16, 16, 16] at Mamba's N = 16, 8 warps; every size
        # compiles for sm_90 without spills (benchmarks/compile_kernels.py; about 250 registers
        # per thread in the backward).
        block_t = 16
        block_d = max(1, min(32, 4096 // (block_n * block_t)))
        warps = 8 if block_d * block_n * block_t >= 2048 else 4
    block_d = min(block_d, triton.next_power_of_2(channels))
    for g in groups:
        if g > 1:
            per_group = channels // g
            block_d = min(block_d, per_group & -per_group)  # largest power of two dividing it
    return block_d, block_n, block_t, warps


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, D, z, delta_bias, h0, reset, mask, softplus, blocks):
        batch, channels, length = u.shape
        d_state = A.shape[1]
        gb, gc = Bm.shape[1], Cm.shape[1]
        block_d, block_n, block_t, warps = blocks or _blocks(channels, d_state, (gb, gc))
        n_chunks = triton.cdiv(length, block_t)
        acc_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
        ins = [x.contiguous() if x is not None else None for x in (u, delta, A, Bm, Cm, D, z)]
        u_, delta_, A_, B_, C_, D_, z_ = ins
        bias_ = delta_bias.contiguous() if delta_bias is not None else None
        h0_ = h0.contiguous() if h0 is not None else None
        flags = [f.to(torch.int8).contiguous() if f is not None else None for f in (reset, mask)]
        store = any(ctx.needs_input_grad)
        out = torch.empty_like(u_)
        last = u_.new_empty(batch, channels, d_state, dtype=acc_dtype)
        states = u_.new_empty(
            (batch, channels, d_state, n_chunks) if store else (1,), dtype=acc_dtype
        )
        dummy = u_
        _ss_fwd_kernel[(batch, triton.cdiv(channels, block_d))](
            u_, delta_, z_ if z_ is not None else dummy, A_, B_, C_,
            D_ if D_ is not None else dummy, bias_ if bias_ is not None else dummy,
            h0_ if h0_ is not None else dummy,
            flags[0] if flags[0] is not None else dummy, flags[1] if flags[1] is not None else dummy,
            out, last, states, channels, d_state, length, gb, gc, n_chunks,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=softplus, HAS_H0=h0 is not None, HAS_RESET=reset is not None,
            HAS_MASK=mask is not None, STORE=store,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_T=block_t, ACC=_acc(u.dtype), num_warps=warps,
        )  # fmt: skip
        if store:
            ctx.save_for_backward(u_, delta_, A_, B_, C_, D_, z_, bias_, h0_, *flags, states)
            ctx.meta = (softplus, (block_d, block_n, block_t, warps))
            ctx.dtypes = [x.dtype if x is not None else None for x in (D, z, delta_bias, h0)]
        ctx.set_materialize_grads(False)
        return out, last

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        u, delta, A, Bm, Cm, D, z, bias, h0, reset, mask, states = ctx.saved_tensors
        softplus, (block_d, block_n, block_t, warps) = ctx.meta
        batch, channels, length = u.shape
        d_state = A.shape[1]
        gb, gc = Bm.shape[1], Cm.shape[1]
        n_chunks = states.shape[-1]
        n_blocks = triton.cdiv(channels, block_d)
        acc_dtype = states.dtype
        grad_out = torch.zeros_like(u) if grad_out is None else grad_out.contiguous()
        glast = grad_last.contiguous() if grad_last is not None else None
        gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
        gz = torch.empty_like(z) if z is not None else None
        gb_part = u.new_empty(n_blocks, batch, d_state, length, dtype=acc_dtype)
        gc_part = u.new_empty(n_blocks, batch, d_state, length, dtype=acc_dtype)
        ga_part = u.new_empty(batch, channels, d_state, dtype=acc_dtype)
        gd_part = u.new_empty(batch, channels, dtype=acc_dtype)
        gbias_part = u.new_empty(batch, channels, dtype=acc_dtype)
        gh0 = torch.empty_like(h0) if h0 is not None else None
        dummy = u
        _ss_bwd_kernel[(batch, n_blocks)](
            u, delta, z if z is not None else dummy, A, Bm, Cm,
            D if D is not None else dummy, bias if bias is not None else dummy,
            reset if reset is not None else dummy, mask if mask is not None else dummy, states,
            grad_out, glast if glast is not None else dummy,
            gu, gdelta, gz if gz is not None else dummy, gb_part, gc_part, ga_part, gd_part,
            gbias_part, gh0 if gh0 is not None else dummy,
            channels, d_state, length, gb, gc, n_chunks,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None,
            SOFTPLUS=softplus, HAS_H0=h0 is not None, HAS_RESET=reset is not None,
            HAS_MASK=mask is not None, HAS_GLAST=glast is not None,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_T=block_t, ACC=_acc(u.dtype), num_warps=warps,
        )  # fmt: skip

        def per_group(part: torch.Tensor, groups: int, like: torch.Tensor) -> torch.Tensor:
            # Channel blocks are consecutive and never straddle a group.
            summed = part.view(groups, n_blocks // groups, batch, d_state, length).sum(1)
            return summed.transpose(0, 1).to(like.dtype)

        d_dtype, z_dtype, bias_dtype, h0_dtype = ctx.dtypes
        grads = (
            gu,
            gdelta,
            ga_part.sum(0).to(A.dtype),
            per_group(gb_part, gb, Bm),
            per_group(gc_part, gc, Cm),
            gd_part.sum(0).to(d_dtype) if D is not None else None,
            gz,
            gbias_part.sum(0).to(bias_dtype) if bias is not None else None,
            gh0,
        )
        return (*grads, None, None, None, None)


def _check(u, delta, A, B, C, D, z, delta_bias, h0, reset, mask) -> tuple[torch.Tensor, ...]:
    """Shapes and dtypes, before any launch; returns ``B`` and ``C`` as ``[B, G, N, L]`` views."""
    where = "selective_scan (triton)"
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z,
             "delta_bias": delta_bias, "h0": h0}  # fmt: skip
    for name, x in named.items():
        if x is None:
            continue
        if not isinstance(x, torch.Tensor) or x.dtype not in SUPPORTED_DTYPES:
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(
                f"{where}: {name} must be a float16, bfloat16, float32 or float64 tensor, got "
                f"{got} (use backend='chunk' for other inputs)"
            )
    if u.dim() != 3:
        raise ValueError(f"{where}: u must be [B, D, L], got shape {tuple(u.shape)}")
    batch, channels, length = u.shape
    if length < 1:
        raise ValueError(f"{where}: needs L >= 1, got shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"{where}: A must be [D, N] with D = {channels}, got {tuple(A.shape)}")
    d_state = A.shape[1]
    expect = {"delta": (delta, (batch, channels, length)), "z": (z, (batch, channels, length)),
              "D": (D, (channels,)), "delta_bias": (delta_bias, (channels,)),
              "h0": (h0, (batch, channels, d_state))}  # fmt: skip
    for name, (x, shape) in expect.items():
        if x is not None and tuple(x.shape) != shape:
            raise ValueError(f"{where}: {name} must have shape {shape}, got {tuple(x.shape)}")
    grouped = []
    for name, x in (("B", B), ("C", C)):
        x4 = x.unsqueeze(1) if x.dim() == 3 else x
        ok = x4.dim() == 4 and x4.shape[0] == batch and x4.shape[2:] == (d_state, length)
        if not ok or channels % x4.shape[1]:
            raise ValueError(
                f"{where}: {name} must be [B, N, L] or [B, G, N, L] with B = {batch}, "
                f"N = {d_state}, L = {length} and G dividing D = {channels}; got {tuple(x.shape)}"
            )
        grouped.append(x4)
    for name, x in (("reset", reset), ("mask", mask)):
        if x is not None and (x.dtype != torch.bool or tuple(x.shape) != (batch, length)):
            raise ValueError(
                f"{where}: {name} must be a bool [B, L] = {(batch, length)} tensor, got "
                f"{tuple(x.shape)} {x.dtype}"
            )
    tensors = [x for x in (*named.values(), reset, mask) if x is not None]
    devices = {x.device for x in tensors}
    if len(devices) > 1:
        raise ValueError(f"{where}: inputs are on different devices: {sorted(map(str, devices))}")
    check_device(u, "selective_scan")
    return tuple(grouped)


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    h0: torch.Tensor | None = None,
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    blocks: tuple[int, int, int, int] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fused selective scan; same arguments and results as
    :func:`mixerzoo.core.ops.selective_scan.naive.selective_scan_naive`.

    Args:
        blocks: ``(BLOCK_D, BLOCK_N, BLOCK_T, warps)`` to override the heuristic (tests use it to
            cover several chunks and channel blocks at small sizes); ``BLOCK_N`` must be a power
            of two >= N, and ``BLOCK_D`` must divide the channels per group of grouped ``B``/``C``.

    Returns:
        ``out [B, D, L]`` in ``u``'s dtype, and ``last_state [B, D, N]`` (float32, float64 for
        float64 ``u``) when ``return_last_state``.
    """
    Bm, Cm = _check(u, delta, A, B, C, D, z, delta_bias, h0, reset, mask)
    channels, length, d_state = u.shape[1], u.shape[2], A.shape[1]
    if max(channels, d_state) * length >= 2**31:
        raise ValueError(
            f"selective_scan (triton): D * L and N * L must stay below 2^31 per batch row (32-bit "
            f"offsets within a row), got D = {channels}, N = {d_state}, L = {length}"
        )
    if blocks is not None:
        block_d, block_n, block_t, _ = blocks
        per_group = [u.shape[1] // g for g in (Bm.shape[1], Cm.shape[1]) if g > 1]
        if block_n < A.shape[1] or any(p % block_d for p in per_group) or block_t < 1:
            raise ValueError(
                f"selective_scan (triton): blocks {blocks} do not fit N = {A.shape[1]} and "
                f"{per_group} channels per group"
            )
        for size in (block_d, block_n, block_t):
            if size & (size - 1):
                raise ValueError(
                    f"selective_scan (triton): block sizes must be powers of two, got {blocks}"
                )
    out, last = _SelectiveScanTriton.apply(
        u, delta, A, Bm, Cm, D, z, delta_bias, h0, reset, mask, bool(delta_softplus), blocks
    )
    return (out, last) if return_last_state else out
