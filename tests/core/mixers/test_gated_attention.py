"""MossFormer gated attention: joint quadratic/linear attention against an explicit group loop,
the relu^2 weights in closed form, padding, rotary embeddings, token shift, locality."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core import create_mixer
from mixerzoo.core.mixers.gated_attention import (
    GatedAttention,
    OffsetScale,
    apply_rotary,
    joint_group_attention,
    token_shift,
)
from mixerzoo.core.testing import assert_close


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("length,group", [(10, 4), (8, 4), (3, 5), (1, 256)])
def test_joint_attention_equals_explicit_group_loop(length, group):
    quad_q, lin_q, quad_k, lin_k = (_randn(2, length, 3, seed=s) for s in range(4))
    v, u = _randn(2, length, 5, seed=4), _randn(2, length, 5, seed=5)
    att_v, att_u = joint_group_attention(quad_q, lin_q, quad_k, lin_k, v, u, group)
    want_v, want_u = torch.zeros_like(v), torch.zeros_like(u)
    for b in range(2):
        lin_kv = sum(torch.outer(lin_k[b, j], v[b, j]) for j in range(length)) / length
        lin_ku = sum(torch.outer(lin_k[b, j], u[b, j]) for j in range(length)) / length
        for start in range(0, length, group):
            members = range(start, min(start + group, length))  # the last group is ragged
            for i in members:
                for j in members:
                    weight = torch.relu(quad_q[b, i] @ quad_k[b, j] / group) ** 2
                    want_v[b, i] += weight * v[b, j]
                    want_u[b, i] += weight * u[b, j]
                want_v[b, i] += lin_q[b, i] @ lin_kv
                want_u[b, i] += lin_q[b, i] @ lin_ku
    assert_close(att_v, want_v)
    assert_close(att_u, want_u)


def test_relu_squared_weights_closed_form():
    # One feature: q_i = 1, keys alternate +2 / -2, values 1, no linear part, groups of 4.
    # Weight relu(q k / g)^2 = (2 / 4)^2 = 1/4 for positive keys and 0 for negative ones.
    length, group = 10, 4
    q = torch.ones(1, length, 1, dtype=torch.float64)
    k = torch.tensor([2.0, -2.0] * 5, dtype=torch.float64).view(1, length, 1)
    zero = torch.zeros_like(q)
    ones = torch.ones(1, length, 1, dtype=torch.float64)
    att_v, _ = joint_group_attention(q, zero, k, zero, ones, ones, group)
    positives_per_group = [2, 2, 1]  # groups {0..3}, {4..7}, {8, 9}
    expected = torch.tensor([0.25 * positives_per_group[i // group] for i in range(length)])
    assert_close(att_v.view(-1), expected.double())


def test_rotary_is_relative_and_leaves_the_tail():
    x = _randn(1, 1, 10, seed=6).expand(1, 12, 10).clone()
    y = _randn(1, 1, 10, seed=7).expand(1, 12, 10).clone()
    rx, ry = apply_rotary(x, 6), apply_rotary(y, 6)
    assert torch.equal(rx[..., 6:], x[..., 6:])
    # Pairwise rotations keep norms, and <R_m x, R_n y> depends only on n - m.
    assert_close(rx.norm(dim=-1), x.norm(dim=-1))
    dots = torch.einsum("bme,bne->mn", rx[..., :6], ry[..., :6])
    for shift in range(1, 5):
        assert_close(dots[shift:, shift:], dots[:-shift, :-shift])
    # Position 0 is not rotated; position 1 rotates the first pair by one radian.
    assert_close(rx[:, 0], x[:, 0])
    c, s = (
        torch.cos(torch.tensor(1.0, dtype=torch.float64)),
        torch.sin(torch.tensor(1.0, dtype=torch.float64)),
    )
    assert_close(
        rx[0, 1, :2],
        torch.stack([x[0, 1, 0] * c - x[0, 1, 1] * s, x[0, 1, 1] * c + x[0, 1, 0] * s]),
    )


def test_token_shift_delays_the_first_half():
    x = _randn(2, 5, 7, seed=8)
    y = token_shift(x)
    assert torch.equal(y[:, 1:, :4], x[:, :-1, :4])  # ceil(7 / 2) = 4 shifted channels
    assert torch.equal(y[:, 0, :4], torch.zeros(2, 4, dtype=torch.float64))
    assert torch.equal(y[..., 4:], x[..., 4:])


def test_offset_scale_closed_form():
    layer = OffsetScale(3, heads=4).double()
    layer.beta.data.normal_()
    x = _randn(2, 5, 3, seed=9)
    views = layer(x)
    assert len(views) == 4
    for h, view in enumerate(views):
        assert_close(view, x * layer.gamma[h] + layer.beta[h])


def test_quadratic_part_is_local_to_groups():
    torch.manual_seed(0)
    mixer = (
        GatedAttention(8, group_size=4, query_key_dim=6, shift_tokens=False, conv=False)
        .double()
        .eval()
    )
    # Switch off the linear (global) queries: what is left mixes tokens only inside groups.
    mixer.qk_offset_scale.gamma.data[1] = 0.0
    mixer.qk_offset_scale.beta.data[1] = 0.0
    x = _randn(2, 10, 8, seed=10)
    x2 = x.clone()
    x2[:, 5] += 1.0
    with torch.no_grad():
        diff = (mixer(x)[0] - mixer(x2)[0]).abs().amax(dim=(0, 2))
    assert (diff[:4] == 0).all() and (diff[8:] == 0).all() and (diff[4:8] > 0).all()


@pytest.mark.parametrize("length", [1, 7, 300])
def test_mixer_shapes_padding_and_residual(length):
    torch.manual_seed(0)
    mixer = create_mixer("gated_attention", d_model=16, query_key_dim=8).double().eval()
    plain = GatedAttention(16, query_key_dim=8, residual=False).double().eval()
    plain.load_state_dict(mixer.state_dict())
    x = _randn(2, length, 16, seed=11)
    with torch.no_grad():
        y, state = mixer(x)
        assert y.shape == x.shape and state is None and torch.isfinite(y).all()
        assert_close(y - plain(x)[0], x)
    assert not mixer.causal
    with pytest.raises(ValueError, match="takes no state"):
        mixer(x, state=torch.zeros(1))


def test_gradcheck_joint_attention():
    inputs = tuple(_randn(1, 6, 2, seed=s).requires_grad_() for s in range(4))
    v, u = _randn(1, 6, 3, seed=5).requires_grad_(), _randn(1, 6, 3, seed=6).requires_grad_()

    def fn(*args):
        return torch.cat(joint_group_attention(*args, group_size=4), dim=-1)

    assert torch.autograd.gradcheck(fn, (*inputs, v, u))
