"""ProbSparse attention (Zhou et al., 2021, "Informer: Beyond Efficient Transformer for Long
Sequence Time-Series Forecasting", arXiv 2012.07436) on per-head tensors. The mixer is
``mixerzoo.core.mixers.probsparse_attention.ProbSparseAttention``; see its module docstring for the
steps and the deviations from the official code.
"""

from __future__ import annotations

import math

import torch

from mixerzoo.core.dropout import dropout
from mixerzoo.core.validation import check_tensor

__all__ = ["prob_sparse_attention", "probsparse_counts"]


def probsparse_counts(factor: int, length_q: int, length_k: int) -> tuple[int, int]:
    """Number of sampled keys per query and of active queries: ``(U_part, u)``.

    ``U_part = min(factor * ceil(ln L_K), L_K)`` (at least 1) and
    ``u = min(factor * ceil(ln L_Q), L_Q)``, as in the official ``ProbAttention.forward``.
    """
    u_part = factor * math.ceil(math.log(length_k))
    u = factor * math.ceil(math.log(length_q))
    return max(1, min(u_part, length_k)), min(u, length_q)


def prob_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    factor: int = 5,
    masked: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ProbSparse attention on per-head tensors.

    Args:
        q: queries ``[B, H, L_Q, E]``.
        k: keys ``[B, H, L_K, E]``.
        v: values ``[B, H, L_K, D]``.
        factor: sampling factor ``c`` of ``c * ln L``.
        masked: causal masking of the active queries and ``cumsum(V)`` for the lazy ones
            (needs ``L_Q == L_K``).
        scale: score scale; default ``1 / sqrt(E)``.
        dropout_p: dropout on the active queries' attention weights.
        generator: random generator for the key sampling, on the device of ``k`` (default:
            torch's global one, so ``torch.manual_seed`` makes it reproducible).

    Returns:
        ``(context [B, H, L_Q, D], index [B, H, u])`` where ``index`` lists the active queries.
    """
    where = "prob_sparse_attention"
    check_tensor("q", q, ("B", "H", "L_Q", "E"), where=where)
    b, h, l_q, e = q.shape
    check_tensor("k", k, (b, h, "L_K", e), where=where)
    l_k = k.shape[2]
    check_tensor("v", v, (b, h, l_k, "D"), where=where)
    d = v.shape[-1]
    if l_q == 0 or l_k == 0:
        raise ValueError(f"{where}: empty sequences are not supported (L_Q={l_q}, L_K={l_k})")
    if masked and l_q != l_k:
        raise ValueError(
            f"{where}: masked=True needs as many queries as keys (self-attention), "
            f"got L_Q={l_q} and L_K={l_k}"
        )
    if factor <= 0:
        raise ValueError(f"{where}: factor must be a positive int, got {factor}")
    u_part, u = probsparse_counts(factor, l_q, l_k)

    # Which queries are active is a discrete choice: no gradient flows through it.
    with torch.no_grad():
        sample = torch.randint(l_k, (l_q, u_part), device=k.device, generator=generator)
        k_sample = k[:, :, sample, :]  # [B, H, L_Q, U_part, E]
        qk_sample = torch.einsum("bhqe,bhque->bhqu", q, k_sample)
        sparsity = qk_sample.amax(dim=-1) - qk_sample.sum(dim=-1) / l_k
        index = sparsity.topk(u, dim=-1, sorted=False).indices  # [B, H, u]

    q_active = torch.gather(q, 2, index.unsqueeze(-1).expand(b, h, u, e))
    scores = torch.matmul(q_active, k.transpose(-2, -1)) * (scale or 1.0 / math.sqrt(e))
    if masked:
        # The active query at position i sees keys 0..i (the official ProbMask).
        future = torch.arange(l_k, device=k.device) > index.unsqueeze(-1)
        scores = scores.masked_fill(future, float("-inf"))
        context = v.cumsum(dim=2)
    else:
        context = v.mean(dim=2, keepdim=True).expand(b, h, l_q, d)
    attn = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        attn = dropout(attn, p=dropout_p, training=True)
    active = torch.matmul(attn, v).to(context.dtype)
    context = context.scatter(2, index.unsqueeze(-1).expand(b, h, u, d), active)
    return context, index
