"""ProbSparse attention (Informer): closed forms against full softmax attention, lazy queries,
the sparsity measurement, reproducibility and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from mixerzoo.core import create_mixer
from mixerzoo.core.mixers.attention import Attention
from mixerzoo.core.mixers.probsparse_attention import ProbSparseAttention
from mixerzoo.core.ops.probsparse import prob_sparse_attention, probsparse_counts
from mixerzoo.core.testing import assert_close


def _qkv(b=2, h=3, lq=9, lk=9, e=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, e, generator=g, dtype=torch.float64)
    k = torch.randn(b, h, lk, e, generator=g, dtype=torch.float64)
    v = torch.randn(b, h, lk, d, generator=g, dtype=torch.float64)
    return q, k, v


def _full_attention(q, k, v, causal=False):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        lq, lk = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(lq, lk, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def test_counts_follow_the_formula():
    # U_part = u = c * ceil(ln L), capped at L.
    assert probsparse_counts(5, 96, 96) == (25, 25)
    assert probsparse_counts(5, 11, 11) == (11, 11)
    assert probsparse_counts(1, 40, 100) == (5, 4)
    # L_Q = 1: no active query (official); at least one sampled key.
    assert probsparse_counts(5, 1, 1) == (1, 0)


@pytest.mark.parametrize("masked", [False, True])
def test_all_queries_active_equals_full_attention(masked):
    q, k, v = _qkv()
    context, index = prob_sparse_attention(q, k, v, factor=10, masked=masked)
    assert sorted(index[0, 0].tolist()) == list(range(9))
    assert_close(context, _full_attention(q, k, v, causal=masked))


def test_cross_attention_all_active_equals_full_attention():
    q, k, v = _qkv(lq=6, lk=13)
    context, _ = prob_sparse_attention(q, k, v, factor=20)
    assert_close(context, _full_attention(q, k, v))
    with pytest.raises(ValueError, match="masked=True needs as many queries as keys"):
        prob_sparse_attention(q, k, v, masked=True)


@pytest.mark.parametrize("masked", [False, True])
def test_lazy_queries_get_mean_or_cumsum_of_values(masked):
    q, k, v = _qkv(lq=40, lk=40)
    context, index = prob_sparse_attention(q, k, v, factor=1, masked=masked)
    assert index.shape == (2, 3, 4)  # u = ceil(ln 40) = 4 active queries of 40
    full = _full_attention(q, k, v, causal=masked)
    lazy_value = v.cumsum(dim=2) if masked else v.mean(dim=2, keepdim=True).expand_as(v)
    for b in range(2):
        for h in range(3):
            active = set(index[b, h].tolist())
            for i in range(40):
                want = full[b, h, i] if i in active else lazy_value[b, h, i]
                assert_close(context[b, h, i], want, msg=f"b={b} h={h} query {i}")


def test_active_queries_maximise_the_sparsity_measurement():
    q, k, v = _qkv(b=2, h=2, lq=30, lk=30)
    u_part, u = probsparse_counts(1, 30, 30)
    _, index = prob_sparse_attention(q, k, v, factor=1, generator=torch.Generator().manual_seed(7))
    # Replay the same draw and score every query by hand: M = max - sum / L_K over its samples.
    sample = torch.randint(30, (30, u_part), generator=torch.Generator().manual_seed(7))
    for b in range(2):
        for h in range(2):
            measure = []
            for i in range(30):
                dots = [float(q[b, h, i] @ k[b, h, j]) for j in sample[i].tolist()]
                measure.append(max(dots) - sum(dots) / 30)
            expected = sorted(range(30), key=lambda i: -measure[i])[:u]
            assert sorted(index[b, h].tolist()) == sorted(expected)


def test_sampling_is_reproducible_with_manual_seed():
    torch.manual_seed(0)
    mixer = ProbSparseAttention(16, n_heads=2, factor=1).double()
    x = torch.randn(2, 50, 16, dtype=torch.float64)
    torch.manual_seed(123)
    y1, _ = mixer(x)
    torch.manual_seed(123)
    y2, _ = mixer(x)
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("masked", [False, True])
def test_mixer_with_all_queries_active_equals_attention_mixer(masked):
    torch.manual_seed(0)
    sparse = ProbSparseAttention(12, n_heads=3, factor=20, masked=masked).double().eval()
    dense = Attention(12, n_heads=3, causal=masked).double().eval()
    dense.load_state_dict(sparse.state_dict())
    x = torch.randn(2, 10, 12, dtype=torch.float64)
    assert_close(sparse(x)[0], dense(x)[0])


def test_mix_reads_the_head_major_context():
    torch.manual_seed(0)
    mixer = ProbSparseAttention(12, n_heads=3, factor=20, mix=True).double().eval()
    x = torch.randn(2, 7, 12, dtype=torch.float64)

    def heads(t):
        return t.view(2, 7, 3, 4).transpose(1, 2)

    context = _full_attention(
        heads(mixer.q_proj(x)), heads(mixer.k_proj(x)), heads(mixer.v_proj(x))
    )
    # Informer's mix=True: the [B, H, L, d] buffer is reinterpreted as [B, L, H * d].
    expected = mixer.out_proj(context.reshape(2, 7, 12))
    assert_close(mixer(x)[0], expected)


def test_attend_cross_shapes_and_errors():
    mixer = create_mixer("probsparse_attention", d_model=16, n_heads=4).double()
    q = torch.randn(2, 5, 16, dtype=torch.float64)
    kv = torch.randn(2, 9, 16, dtype=torch.float64)
    assert mixer.attend(q, kv, kv).shape == (2, 5, 16)
    with pytest.raises(ValueError, match="values must have shape"):
        mixer.attend(q, kv, kv[:, :4])
    with pytest.raises(ValueError, match="takes no state"):
        mixer(q, state=torch.zeros(1))
    assert not mixer.causal


def test_masked_variant_shapes_and_gradients():
    torch.manual_seed(0)
    mixer = ProbSparseAttention(16, n_heads=4, factor=1, masked=True, dropout=0.1).double().train()
    x = torch.randn(2, 30, 16, dtype=torch.float64, requires_grad=True)
    y, state = mixer(x)
    assert y.shape == x.shape and state is None and torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mixer.parameters())
    with pytest.raises(NotImplementedError):
        mixer.step(x[:, 0].detach(), None)


@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck(masked):
    q, k, v = _qkv(b=1, h=2, lq=6, lk=6, e=3, d=2)
    inputs = tuple(t.requires_grad_() for t in (q, k, v))

    def fn(q, k, v):
        # A fresh generator each call: the same keys are sampled for every perturbation.
        gen = torch.Generator().manual_seed(1)
        return prob_sparse_attention(q, k, v, factor=1, masked=masked, generator=gen)[0]

    assert torch.autograd.gradcheck(fn, inputs)
