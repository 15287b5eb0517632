"""FSMN mixers: the memory block against an explicit FIR loop, streaming, look-ahead, and
MossFormer2's dilated dense FSMN against the official Conv2d/InstanceNorm2d layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mixerzoo.core import create_mixer
from mixerzoo.core.mixers.fsmn import (
    FSMN,
    DilatedDenseFSMN,
    GatedFSMN,
    fsmn_memory,
    fsmn_side_by_side,
)
from mixerzoo.core.testing import assert_close


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _explicit_fir(p, weight, lorder, rorder, dilation):
    """sum_i a_i p[t - s i] + sum_j c_j p[t + s j] with a_i = w[lorder-1-i], c_j = w[lorder-1+j]."""
    b, t_len, c = p.shape
    out = torch.zeros_like(p)
    for t in range(t_len):
        for i in range(lorder):
            if t - dilation * i >= 0:
                out[:, t] += weight[:, lorder - 1 - i] * p[:, t - dilation * i]
        for j in range(1, rorder + 1):
            if t + dilation * j < t_len:
                out[:, t] += weight[:, lorder - 1 + j] * p[:, t + dilation * j]
    return out


@pytest.mark.parametrize("lorder,rorder,dilation", [(1, 0, 1), (4, 0, 1), (3, 2, 2), (5, 3, 3)])
def test_memory_equals_explicit_fir(lorder, rorder, dilation):
    p = _randn(2, 9, 3, seed=1)
    weight = _randn(3, lorder + rorder, seed=2)
    assert_close(
        fsmn_memory(p, weight, lorder, rorder, dilation),
        _explicit_fir(p, weight, lorder, rorder, dilation),
    )


@pytest.mark.parametrize("rorder,dilation,residual", [(0, 1, True), (0, 2, False), (3, 2, True)])
def test_mixer_equals_explicit_deep_fsmn(rorder, dilation, residual):
    torch.manual_seed(0)
    mixer = FSMN(
        6, lorder=4, rorder=rorder, dilation=dilation, hidden_size=5, residual=residual
    ).double()
    x = _randn(2, 10, 6, seed=3)
    p = torch.relu(x @ mixer.linear.weight.T + mixer.linear.bias) @ mixer.project.weight.T
    expected = p + _explicit_fir(p, mixer.memory_weight, 4, rorder, dilation)
    if residual:
        expected = expected + x
    assert_close(mixer(x)[0], expected)


@pytest.mark.parametrize("lorder,dilation", [(4, 3), (20, 1), (2, 1)])
def test_step_and_pieces_equal_forward(lorder, dilation):
    torch.manual_seed(0)
    mixer = FSMN(5, lorder=lorder, dilation=dilation).double()
    assert mixer.causal
    x = _randn(2, 13, 5, seed=4)
    with torch.no_grad():
        y_full, final = mixer(x)
        state = mixer.init_state(2, dtype=torch.float64)
        ys = []
        for t in range(13):
            y_t, state = mixer.step(x[:, t], state)
            ys.append(y_t)
        y1, mid = mixer(x[:, :4])
        y2, end = mixer(x[:, 4:], mid)
    assert_close(torch.stack(ys, 1), y_full)
    assert_close(torch.cat([y1, y2], 1), y_full)
    assert_close(state, final)
    assert_close(end, final)
    assert final.shape == (2, dilation * (lorder - 1), 5)


def test_look_ahead_makes_it_bidirectional():
    torch.manual_seed(0)
    mixer = create_mixer("fsmn", d_model=4, lorder=3, rorder=2).double()
    assert not mixer.causal and mixer.init_state(2) is None
    x = _randn(1, 8, 4, seed=5)
    x2 = x.clone()
    x2[:, 5] += 1.0
    with torch.no_grad():
        y, y2 = mixer(x)[0], mixer(x2)[0]
    # Step 5 is seen by steps 3..7 (two steps of look-ahead, three of look-back), no others.
    changed = (y - y2).abs().amax(dim=-1)[0] > 0
    assert changed.tolist() == [False, False, False, True, True, True, True, True]
    with pytest.raises(NotImplementedError):
        mixer.step(x[:, 0], None)
    with pytest.raises(ValueError, match="takes no state"):
        mixer(x, torch.zeros(1, 2, 4, dtype=torch.float64))


def test_gradcheck_memory():
    p = _randn(2, 7, 3, seed=6).requires_grad_()
    w = _randn(3, 5, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, w: fsmn_memory(p, w, 3, 2, 2), (p, w))


def _official_dense_fsmn(net: DilatedDenseFSMN, x: torch.Tensor) -> torch.Tensor:
    """The official UniDeepFsmn_dilated layout: [B, C, T, 1] maps, Conv2d with (2l-1, 1) kernels,
    ConstantPad2d over time, InstanceNorm2d(affine) and PReLU, with the same weights."""
    lorder = net.lorder
    p = net.project(torch.relu(net.linear(x)))
    skip = p.unsqueeze(1).permute(0, 3, 2, 1)  # [B, C, T, 1]
    for i, (conv, norm, act) in enumerate(zip(net.convs, net.norms, net.acts)):
        dil = 2**i
        pad = lorder + (dil - 1) * (lorder - 1) - 1
        conv2d = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            (2 * lorder - 1, 1),
            dilation=(dil, 1),
            groups=conv.groups,
            bias=False,
        ).double()
        conv2d.weight.data.copy_(conv.weight.data.unsqueeze(-1))
        inorm = nn.InstanceNorm2d(conv.out_channels, affine=True).double()
        inorm.weight.data.copy_(norm.weight.data)
        inorm.bias.data.copy_(norm.bias.data)
        out = act(inorm(conv2d(F.pad(skip, (0, 0, pad, pad)))))
        skip = torch.cat([out, skip], dim=1)
    return x + out.permute(0, 3, 2, 1).squeeze(1)


def test_dilated_dense_fsmn_matches_official_layout():
    torch.manual_seed(0)
    net = DilatedDenseFSMN(4, lorder=3, depth=3).double()
    for prm in net.parameters():  # move the norm/PReLU parameters off their defaults
        prm.data.add_(0.1 * torch.randn_like(prm))
    x = _randn(2, 11, 4, seed=8)
    assert_close(net(x), _official_dense_fsmn(net, x))


def test_dilated_dense_fsmn_layer_equals_explicit_grouped_fir():
    torch.manual_seed(0)
    net = DilatedDenseFSMN(2, lorder=2, depth=2).double()
    x = _randn(1, 6, 2, seed=9)
    p = net.project(torch.relu(net.linear(x)))[0].T  # [C, T]
    skip, c_size, t_len = p, 2, 6
    for i, (conv, norm, act) in enumerate(zip(net.convs, net.norms, net.acts)):
        dil, width = 2**i, i + 1
        out = torch.zeros(c_size, t_len, dtype=torch.float64)
        for c in range(c_size):
            # Output channel c reads the c-th group of (i + 1) consecutive concatenated channels.
            for r in range(width):
                for tap in range(3):  # 2 * lorder - 1 taps centred on t
                    for t in range(t_len):
                        src = t + dil * (tap - 1)
                        if 0 <= src < t_len:
                            out[c, t] += conv.weight[c, r, tap] * skip[c * width + r, src]
        mean, var = out.mean(1, keepdim=True), out.var(1, unbiased=False, keepdim=True)
        out = (out - mean) / torch.sqrt(var + 1e-5) * norm.weight[:, None] + norm.bias[:, None]
        out = torch.where(out >= 0, out, act.weight[:, None] * out)
        skip = torch.cat([out, skip], dim=0)
    assert_close(net(x), x + out.T.unsqueeze(0))


def test_gated_fsmn_residual_bidirectional_and_length_one():
    torch.manual_seed(0)
    with_res = GatedFSMN(8, inner_channels=12, lorder=3).double().eval()
    without = GatedFSMN(8, inner_channels=12, lorder=3, residual=False).double().eval()
    without.load_state_dict(with_res.state_dict())
    x = _randn(2, 9, 8, seed=10)
    with torch.no_grad():
        assert_close(with_res(x)[0] - without(x)[0], x)
        x2 = x.clone()
        x2[:, -1] += 1.0
        # The last step reaches the first one (centred filters, instance norm over time).
        assert not torch.allclose(without(x2)[0][:, 0], without(x)[0][:, 0])
        y1, _ = without(x[:, :1])
    assert torch.isfinite(y1).all() and y1.shape == (2, 1, 8)
    assert not with_res.causal


@pytest.mark.parametrize("rorder,dilation,residual", [(0, 1, True), (2, 2, False)])
def test_side_by_side_equals_each_mixer_alone(rorder, dilation, residual):
    # Several FSMNs on one input as one wider pass: values and gradients (input and every
    # mixer's parameters) equal the concatenation of each mixer's own forward.
    torch.manual_seed(0)
    mixers = [
        FSMN(
            5, lorder=3, rorder=rorder, dilation=dilation, hidden_size=7, residual=residual
        ).double()
        for _ in range(3)
    ]
    for m in mixers:
        for p in m.parameters():
            p.data.normal_(0, 0.5)
    x = torch.randn(2, 11, 5, dtype=torch.float64, requires_grad=True)
    got = fsmn_side_by_side(mixers, x)
    want = torch.cat([m(x)[0] for m in mixers], dim=-1)
    assert_close(got, want)
    inputs = [x] + [p for m in mixers for p in m.parameters()]
    probe = torch.randn_like(want)
    for g, e in zip(
        torch.autograd.grad((got * probe).sum(), inputs),
        torch.autograd.grad((want * probe).sum(), inputs),
    ):
        assert_close(g, e)


def test_side_by_side_refuses_mixers_of_different_shapes():
    with pytest.raises(ValueError, match="must share"):
        fsmn_side_by_side([FSMN(4, lorder=3), FSMN(4, lorder=5)], torch.randn(1, 6, 4))
