"""Fused Triton kernels for the causal depthwise convolution (+ SiLU), forward and backward.

The short convolution of Mamba and ViL blocks (kernel 4) and of FSMN's memory (dilated):
``y_t = act(bias + sum_i w_i x_{t - d (K - 1 - i)})`` over ``x [B, T, C]``, continuing from a
carried ``state [B, d (K - 1), C]`` (the previous inputs) and reading zero across a reset
(segment ids, see :func:`mixerzoo.core.layers.sequence.segment_ids`). With ``x`` channel-last, a
program owns a ``[BLOCK_T, BLOCK_C]`` tile of outputs and reads the ``K`` shifted input tiles it
needs (coalesced rows of channels; the overlap between taps and neighbouring tiles is served by
the caches), adds the bias, applies the SiLU and writes the tile: one read of ``x`` and one write
of ``y`` from memory, where the PyTorch path concatenates the state, transposes for cuDNN's
grouped convolution, transposes back and applies the activation in further passes.

The backward owns a tile of *input* positions ``s`` (the state's positions included, so the
state's gradient comes out of the same launch): ``grad x_s = sum_i w_i g_{s + d (K - 1 - i)}``
with ``g = dL/d(pre-activation)``; for the SiLU's derivative the forward keeps the pre-activation
(in ``x``'s dtype, only when a gradient is needed: recomputing it at the ``K`` shifted positions
unrolls ``K^2`` tap loads, which ptxas could only compile with a 7.7 KB spill stack). The weight and bias gradients are summed per tile and the
partial sums added afterwards: no atomics, deterministic.

Arithmetic is float32 (float64 for float64 ``x``); ``y`` and the gradients are written in their
inputs' dtypes. On the CPU the kernels run only under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mixerzoo.core.ops.linear_scan.triton import check_device

__all__ = ["causal_conv1d_triton", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@triton.jit
def _value_at(x_row, state_row, q, c, rows, mc, T, S, C, HAS_STATE: tl.constexpr):
    """``[BLOCK_T, BLOCK_C]`` inputs at positions ``q`` of one batch row (``x_row``, ``state_row``
    point at its start): ``x`` for ``q >= 0``, the carried state for ``-S <= q < 0``, zero
    elsewhere and where ``rows`` is false."""
    inside = rows & (q >= 0) & (q < T)
    v = tl.load(x_row + (q * C)[:, None] + c[None, :], mask=inside[:, None] & mc[None, :],
                other=0.0)  # fmt: skip
    if HAS_STATE:
        before = rows & (q < 0) & (q >= -S)
        v += tl.load(state_row + ((S + q) * C)[:, None] + c[None, :],
                     mask=before[:, None] & mc[None, :], other=0.0)  # fmt: skip
    return v


@triton.jit
def _conv_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, state_ptr, seg_ptr,
    y_ptr,  # [B, T, C] output
    pre_ptr,  # [B, T, C] pre-activation, kept for the backward (STORE_PRE)
    T, C, S, DIL,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_STATE: tl.constexpr, HAS_SEG: tl.constexpr,
    SILU: tl.constexpr, STORE_PRE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
):  # fmt: skip
    bid = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    mt = t < T
    mc = c < C
    # 64-bit offsets once per row, 32-bit offsets within it (the wrapper checks T * C < 2^31).
    x_row = x_ptr + bid * T * C
    state_row = state_ptr + bid * S * C
    seg_row = seg_ptr + bid * T
    if HAS_SEG:
        seg_t = tl.load(seg_row + t, mask=mt, other=0)
    if HAS_BIAS:
        acc = (
            tl.zeros([BLOCK_T, BLOCK_C], dtype=ACC)
            + tl.load(bias_ptr + c, mask=mc, other=0.0).to(ACC)[None, :]
        )
    else:
        acc = tl.zeros([BLOCK_T, BLOCK_C], dtype=ACC)
    for i in tl.static_range(K):
        q = t - DIL * (K - 1 - i)
        v = _value_at(x_row, state_row, q, c, mt, mc, T, S, C, HAS_STATE).to(ACC)
        if HAS_SEG:
            # A tap in an earlier segment (a reset in between) reads zero.
            seg_q = tl.load(seg_row + q, mask=mt & (q >= 0), other=0)
            v = tl.where((seg_q == seg_t)[:, None], v, 0.0)
        acc += tl.load(w_ptr + c * K + i, mask=mc, other=0.0).to(ACC)[None, :] * v
    tile = (t * C)[:, None] + c[None, :]
    m2 = mt[:, None] & mc[None, :]
    if STORE_PRE:
        tl.store(pre_ptr + bid * T * C + tile, acc.to(pre_ptr.dtype.element_ty), mask=m2)
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    tl.store(y_ptr + bid * T * C + tile, acc.to(y_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _conv_bwd_kernel(
    x_ptr, w_ptr, state_ptr, seg_ptr, pre_ptr, gy_ptr,
    gx_ptr, gstate_ptr,  # [B, T, C], [B, S, C]
    gw_part_ptr,  # [B, NP, K, C]
    gbias_part_ptr,  # [B, NP, C]
    T, C, S, DIL,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_STATE: tl.constexpr, HAS_SEG: tl.constexpr,
    SILU: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    bid = tl.program_id(0).to(tl.int64)
    pblock = tl.program_id(1)
    n_p = tl.num_programs(1)
    # Input positions s in [-S, T): the state's, then the sequence's.
    s = pblock * BLOCK_T - S + tl.arange(0, BLOCK_T)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    ms = s < T
    mc = c < C
    m2 = ms[:, None] & mc[None, :]
    x_row = x_ptr + bid * T * C
    state_row = state_ptr + bid * S * C
    seg_row = seg_ptr + bid * T
    xs = _value_at(x_row, state_row, s, c, ms, mc, T, S, C, HAS_STATE).to(ACC)
    if HAS_SEG:
        seg_s = tl.load(seg_row + s, mask=ms & (s >= 0), other=0)
    gx = tl.zeros([BLOCK_T, BLOCK_C], dtype=ACC)
    part = (bid * n_p + pblock) * K * C
    for i in tl.static_range(K):
        # Output p reads input s through tap i.
        p = s + DIL * (K - 1 - i)
        mp = ms & (p >= 0) & (p < T)
        if HAS_SEG:
            mp = mp & (tl.load(seg_row + p, mask=mp, other=0) == seg_s)
        at = (p * C)[:, None] + c[None, :]
        mpc = mp[:, None] & mc[None, :]
        g = tl.load(gy_ptr + bid * T * C + at, mask=mpc, other=0.0).to(ACC)
        if SILU:
            pre = tl.load(pre_ptr + bid * T * C + at, mask=mpc, other=0.0).to(ACC)
            sig = 1.0 / (1.0 + tl.exp(-pre))
            g = g * sig * (1.0 + pre * (1.0 - sig))
        gx += tl.load(w_ptr + c * K + i, mask=mc, other=0.0).to(ACC)[None, :] * g
        tl.store(gw_part_ptr + part + i * C + c, tl.sum(g * xs, axis=0), mask=mc)
        if i == K - 1:
            if HAS_BIAS:
                # Tap K-1 has no lag: g here is dL/d(pre-activation) at s itself.
                tl.store(gbias_part_ptr + (bid * n_p + pblock) * C + c, tl.sum(g, axis=0),
                         mask=mc)  # fmt: skip
    tile = (s * C)[:, None] + c[None, :]
    tl.store(gx_ptr + bid * T * C + tile, gx.to(gx_ptr.dtype.element_ty),
             mask=(s >= 0)[:, None] & m2)  # fmt: skip
    if HAS_STATE:
        tl.store(gstate_ptr + bid * S * C + S * C + tile, gx.to(gstate_ptr.dtype.element_ty),
                 mask=(s < 0)[:, None] & m2)  # fmt: skip


def _blocks(length: int, channels: int) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_C, warps): 16 x 64 tiles, smaller for small inputs. Untuned (no GPU at
    hand); 64 x 64 needed about 240 registers in the backward, 16 x 64 needs 112 (sm_90)."""
    block_c = min(64, triton.next_power_of_2(channels))
    block_t = min(16, triton.next_power_of_2(length))
    return block_t, block_c, 4 if block_t * block_c >= 1024 else 1


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


class _CausalConv1dTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, state, seg, dilation, silu):
        batch, length, channels = x.shape
        taps = weight.shape[1]
        context = dilation * (taps - 1)
        x_, w_ = x.contiguous(), weight.contiguous()
        bias_ = bias.contiguous() if bias is not None else None
        state_ = state.contiguous() if state is not None else None
        y = torch.empty_like(x_)
        # The SiLU's derivative needs the pre-activation: kept (in x's dtype) when a gradient is.
        store_pre = silu and any(ctx.needs_input_grad)
        pre = torch.empty_like(x_) if store_pre else None
        block_t, block_c, warps = _blocks(length, channels)
        grid = (batch, triton.cdiv(length, block_t), triton.cdiv(channels, block_c))
        _conv_fwd_kernel[grid](
            x_, w_, bias_ if bias_ is not None else x_, state_ if state_ is not None else x_,
            seg if seg is not None else x_, y, pre if pre is not None else y,
            length, channels, context, dilation,
            K=taps, HAS_BIAS=bias is not None, HAS_STATE=state is not None,
            HAS_SEG=seg is not None, SILU=silu, STORE_PRE=store_pre, BLOCK_T=block_t,
            BLOCK_C=block_c, ACC=_acc(x.dtype), num_warps=warps,
        )  # fmt: skip
        ctx.save_for_backward(x_, w_, bias_, state_, seg, pre)
        ctx.meta = (dilation, silu)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, bias, state, seg, pre = ctx.saved_tensors
        dilation, silu = ctx.meta
        batch, length, channels = x.shape
        taps = weight.shape[1]
        context = dilation * (taps - 1)
        block_t, block_c, warps = _blocks(length + context, channels)
        n_p = triton.cdiv(length + context, block_t)
        acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        gx = torch.empty_like(x)
        gstate = torch.empty_like(state) if state is not None else None
        gw_part = x.new_empty(batch, n_p, taps, channels, dtype=acc_dtype)
        gbias_part = x.new_empty(batch, n_p, channels, dtype=acc_dtype)
        _conv_bwd_kernel[(batch, n_p, triton.cdiv(channels, block_c))](
            x, weight, state if state is not None else x, seg if seg is not None else x,
            pre if pre is not None else x, grad_y.contiguous(), gx,
            gstate if gstate is not None else x, gw_part, gbias_part,
            length, channels, context, dilation,
            K=taps, HAS_BIAS=bias is not None, HAS_STATE=state is not None,
            HAS_SEG=seg is not None, SILU=silu, BLOCK_T=block_t, BLOCK_C=block_c,
            ACC=_acc(x.dtype), num_warps=warps,
        )  # fmt: skip
        gw = gw_part.sum((0, 1)).t().to(weight.dtype)
        gbias = gbias_part.sum((0, 1)).to(bias.dtype) if bias is not None else None
        return gx, gw, gbias, gstate, None, None, None


def causal_conv1d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
    dilation: int = 1,
    *,
    segments: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """Fused causal depthwise convolution; same arguments and result as
    :func:`mixerzoo.core.ops.causal_conv1d.naive.causal_conv1d_naive` (inputs checked by the
    public op, plus the dtypes and the device here)."""
    for name, value in (("x", x), ("weight", weight), ("bias", bias), ("state", state)):
        if value is not None and value.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"causal_conv1d (triton): {name} must be float16, bfloat16, float32 or float64, "
                f"got {value.dtype} (use backend='chunk')"
            )
    check_device(x, "causal_conv1d")
    batch, length, channels = x.shape
    if (length + dilation * (weight.shape[1] - 1)) * channels >= 2**31:
        raise ValueError(
            f"causal_conv1d (triton): T * C must stay below 2^31 per batch row (32-bit offsets "
            f"within a row), got T = {length}, C = {channels}; split the sequence"
        )
    seg = segments.to(torch.int32).contiguous() if segments is not None else None
    return _CausalConv1dTriton.apply(x, weight, bias, state, seg, dilation, activation == "silu")
