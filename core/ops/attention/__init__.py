"""Scaled dot-product attention with a faster CPU path.

:func:`dot_product_attention` has the arguments and result of PyTorch's
``scaled_dot_product_attention`` (fused kernels), which computes it on accelerators. On the CPU,
for short sequences or with dropout, an explicit softmax attention over contiguous per-head
matrices is faster: PyTorch's CPU path with dropout draws a Bernoulli sample per weight, and its
backward multiplies the many tiny per-head matrices one by one (about 5 ms per call for
iTransformer's 11 tokens x 8 heads x 32 windows, against 1.4 ms here); the explicit form uses
:func:`mixerzoo.core.dropout.dropout_multiplier` for the weights and batched products in
BLAS-friendly layouts, forward and backward (:class:`_SoftmaxAttention`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixerzoo.core.dropout import dropout_multiplier, multiplier_applies

__all__ = ["dot_product_attention"]

# On the CPU without dropout, PyTorch's fused (flash) kernel wins once the score matrix is larger
# than about 128 x 128 per head (measured on 2 cores: 11 tokens 4.5 ms vs 1.1 ms, 96 tokens
# 27.7 ms vs 18.8 ms, 256 tokens 29.8 ms vs 39.7 ms, forward + backward); with dropout the explicit
# form is never slower (its CPU dropout path materialises the scores too).
_EXPLICIT_MAX_SCORES = 128 * 128


class _SoftmaxAttention(torch.autograd.Function):
    """``softmax(q k^T * scale + bias) * dropout @ v`` on ``[N, T, d]`` contiguous tensors.

    ``bias`` is an additive ``[N | 1, Tq, Tk]`` tensor (``-inf`` where masked) or ``None``;
    ``multiplier`` the dropout multiplier of the weights or ``None``. Every batched product in
    forward and backward takes contiguous (or plainly transposed) operands, which keeps PyTorch's
    CPU ``bmm`` on its batched BLAS path.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, multiplier, scale: float):
        scores = torch.bmm(q, k.transpose(1, 2).contiguous()).mul_(scale)
        if bias is not None:
            scores.add_(bias)
        weights = torch.softmax(scores, dim=-1)
        dropped = weights if multiplier is None else weights * multiplier
        ctx.save_for_backward(q, k, v, weights, dropped, multiplier)
        ctx.scale = scale
        return torch.bmm(dropped, v)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, weights, dropped, multiplier = ctx.saved_tensors
        grad = grad.contiguous()
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        grad_q = grad_k = grad_v = None
        if need_v:
            grad_v = torch.bmm(dropped.transpose(1, 2).contiguous(), grad)
        if need_q or need_k:
            grad_weights = torch.bmm(grad, v.transpose(1, 2).contiguous())
            if multiplier is not None:
                grad_weights.mul_(multiplier)
            grad_scores = torch._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
            grad_scores.mul_(ctx.scale)
            if need_q:
                grad_q = torch.bmm(grad_scores, k)
            if need_k:
                grad_k = torch.bmm(grad_scores.transpose(1, 2).contiguous(), q)
        return grad_q, grad_k, grad_v, None, None, None


def dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` with a faster CPU path.

    Same arguments and result (``attn_mask`` boolean, True = attend, or additive; ``is_causal``
    aligned top-left; dropout on the weights). On the CPU, in float32/float64, with dropout or a
    score matrix of at most 128 x 128 per head, the explicit form (see the module docstring)
    computes it; its dropout is :func:`mixerzoo.core.dropout.dropout_multiplier` (``p`` rounded to
    a multiple of ``2**-16``). Elsewhere PyTorch's kernel does.

    Shapes:
        ``q [..., Tq, E], k [..., Tk, E], v [..., Tk, Ev] -> [..., Tq, Ev]`` (same batch shape).
    """
    t_q, t_k = q.shape[-2], k.shape[-2]
    explicit = (
        q.device.type == "cpu"
        and q.dtype in (torch.float32, torch.float64)
        and q.dim() >= 3
        and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
        and (dropout_p > 0 or t_q * t_k <= _EXPLICIT_MAX_SCORES)
        # dropout the multiplier cannot serve, and learned (differentiable) masks: PyTorch's
        and (dropout_p == 0 or multiplier_applies(dropout_p, q.dtype))
        and not (attn_mask is not None and attn_mask.requires_grad)
    )
    if not explicit:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
        )
    batch = q.shape[:-2]
    n = batch.numel()
    bias = None
    if is_causal:
        if attn_mask is not None:
            raise ValueError("dot_product_attention: give attn_mask or is_causal, not both")
        attn_mask = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device)
            bias.masked_fill_(~attn_mask, float("-inf"))
        else:
            bias = attn_mask.to(q.dtype)
        try:
            full = torch.broadcast_shapes(bias.shape, batch + (t_q, t_k))
        except RuntimeError:
            full = None
        if full is None or full[:-2] != batch:
            raise ValueError(
                f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to the scores "
                f"{tuple(batch + (t_q, t_k))}"
            )
        if bias.dim() <= 2 or bias.shape[:-2].numel() == 1:
            bias = bias.reshape(1, *bias.shape[-2:]).expand(1, t_q, t_k)
        else:
            bias = bias.expand(full).reshape(n, t_q, t_k)
    multiplier = None
    if dropout_p > 0:
        multiplier = dropout_multiplier((n, t_q, t_k), dropout_p, q.dtype)
    y = _SoftmaxAttention.apply(
        q.reshape(n, t_q, -1).contiguous(),
        k.reshape(n, t_k, -1).contiguous(),
        v.reshape(n, t_k, -1).contiguous(),
        bias,
        multiplier,
        q.shape[-1] ** -0.5 if scale is None else scale,
    )
    return y.view(*batch, t_q, y.shape[-1])
