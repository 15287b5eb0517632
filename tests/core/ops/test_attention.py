"""dot_product_attention (core.ops.attention): the explicit CPU path equals PyTorch's scaled_dot_product_attention
(values and gradients, with boolean, additive and causal masks), and with dropout it equals an
explicit softmax attention whose weights are multiplied by the same dropout draw."""

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core.dropout import dropout_mask, dropout_multiplier
from mixerzoo.core.mixers.attention import Attention
from mixerzoo.core.ops.attention import dot_product_attention


def _qkv(batch, t_q, t_k, e=8, ev=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, t_q, e, generator=g, dtype=torch.float64)
    k = torch.randn(*batch, t_k, e, generator=g, dtype=torch.float64)
    v = torch.randn(*batch, t_k, ev, generator=g, dtype=torch.float64)
    return [t.requires_grad_() for t in (q, k, v)]


def _grads(out, inputs, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize(
    "batch,t_q,t_k,mask",
    [
        ((2, 3), 5, 5, None),
        ((4,), 7, 3, None),
        ((2, 3), 5, 5, "causal"),
        ((2, 3), 4, 6, "bool"),
        ((2, 1), 4, 6, "bool-batched"),
        ((2, 3), 5, 5, "additive"),
    ],
)
def test_matches_torch_sdpa_values_and_gradients(batch, t_q, t_k, mask):
    q, k, v = _qkv(batch, t_q, t_k)
    kwargs = {}
    if mask == "causal":
        kwargs["is_causal"] = True
    elif mask == "bool":
        m = torch.rand(t_q, t_k, generator=torch.Generator().manual_seed(2)) > 0.4
        m[:, 0] = True  # every query sees at least one key
        kwargs["attn_mask"] = m
    elif mask == "bool-batched":
        m = torch.rand(batch[0], 1, t_q, t_k, generator=torch.Generator().manual_seed(3)) > 0.5
        m[..., 1] = True
        kwargs["attn_mask"] = m
    elif mask == "additive":
        kwargs["attn_mask"] = torch.randn(t_q, t_k, dtype=torch.float64)
    ours = dot_product_attention(q, k, v, **kwargs)
    ref = F.scaled_dot_product_attention(q, k, v, **kwargs)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(_grads(ours, (q, k, v)), _grads(ref, (q, k, v)), strict=True):
        torch.testing.assert_close(a, b)


def test_dropout_uses_the_multiplier_draw():
    q, k, v = _qkv((2, 4), 6, 9)
    p = 0.3
    torch.manual_seed(7)
    ours = dot_product_attention(q, k, v, dropout_p=p, scale=0.5)
    torch.manual_seed(7)
    multiplier = dropout_multiplier((8, 6, 9), p, torch.float64).view(2, 4, 6, 9)
    weights = torch.softmax(q @ k.transpose(-1, -2) * 0.5, dim=-1)
    ref = (weights * multiplier) @ v
    torch.testing.assert_close(ours, ref)
    for a, b in zip(_grads(ours, (q, k, v)), _grads(ref, (q, k, v)), strict=True):
        torch.testing.assert_close(a, b)
    assert (multiplier == 0).any()


def test_multiplier_is_the_mask_times_the_scale():
    torch.manual_seed(11)
    keep, scale = dropout_mask((1000, 7), 0.2)
    torch.manual_seed(11)
    multiplier = dropout_multiplier((1000, 7), 0.2)
    assert multiplier.dtype == torch.float32
    torch.testing.assert_close(multiplier, keep.float() * scale, rtol=0, atol=0)


def test_long_sequences_without_dropout_use_torch_kernel_and_agree():
    q, k, v = _qkv((1, 2), 200, 150)  # 200 x 150 scores: PyTorch's kernel
    torch.testing.assert_close(
        dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v)
    )


def test_mask_that_does_not_broadcast_is_refused():
    q, k, v = _qkv((2, 3), 4, 4)
    with pytest.raises(ValueError, match="does not broadcast"):
        dot_product_attention(q, k, v, attn_mask=torch.ones(5, 3, 4, 4, dtype=torch.bool))


def test_mixer_in_training_mode_matches_explicit_attention_with_the_same_draw():
    torch.manual_seed(0)
    mixer = Attention(16, n_heads=4, dropout=0.25).double().train()
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    torch.manual_seed(5)
    y, _ = mixer(x)
    torch.manual_seed(5)
    multiplier = dropout_multiplier((12, 5, 5), 0.25, torch.float64).view(3, 4, 5, 5)

    def heads(t):
        return t.view(3, 5, 4, 4).transpose(1, 2)

    q, k, v = heads(mixer.q_proj(x)), heads(mixer.k_proj(x)), heads(mixer.v_proj(x))
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) * multiplier
    ref = mixer.out_proj((weights @ v).transpose(1, 2).reshape(3, 5, 16))
    torch.testing.assert_close(y, ref)


def test_learned_mask_and_extreme_dropout_are_left_to_torch():
    q, k, v = _qkv((2,), 3, 3)
    bias = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    out = dot_product_attention(q, k, v, attn_mask=bias)
    (grad,) = torch.autograd.grad(out.sum(), bias)  # the mask gets its gradient
    (ref,) = torch.autograd.grad(
        F.scaled_dot_product_attention(q, k, v, attn_mask=bias).sum(), bias
    )
    torch.testing.assert_close(grad, ref)
    assert (dot_product_attention(q, k, v, dropout_p=1.0) == 0).all()
