"""Mamba and bidirectional Mamba mixers: initialisation, a reference forward, streaming, backends."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core import create_mixer
from mixerzoo.core.mixers.mamba import BiMamba, Mamba
from mixerzoo.core.ops.selective_scan import selective_scan_naive
from mixerzoo.core.testing import assert_close


def _reference_forward(m: Mamba, x: torch.Tensor) -> torch.Tensor:
    """mamba-ssm's reference path: zero-padded causal conv, then the step-by-step scan."""
    length = x.shape[1]
    xs, z = m.in_proj(x).transpose(1, 2).chunk(2, dim=1)
    conv = F.conv1d(xs, m.conv1d.weight, m.conv1d.bias, padding=m.d_conv - 1, groups=m.d_inner)
    xs = F.silu(conv[..., :length])
    dt, B, C = m.x_proj(xs.transpose(1, 2)).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = torch.einsum("dr,blr->bdl", m.dt_proj.weight, dt)
    y = selective_scan_naive(
        xs,
        delta,
        -torch.exp(m.A_log),
        B.transpose(1, 2),
        C.transpose(1, 2),
        D=m.D,
        z=z,
        delta_bias=m.dt_proj.bias,
        delta_softplus=True,
    )
    return m.out_proj(y.transpose(1, 2))


def _mamba(**kw) -> Mamba:
    torch.manual_seed(0)
    return create_mixer("mamba", **{"d_model": 20, "d_state": 5, **kw}).double()


def test_initialisation_follows_the_paper():
    m = Mamba(40, d_state=6, expand=2, dt_min=0.002, dt_max=0.05)
    assert m.d_inner == 80 and m.dt_rank == math.ceil(40 / 16)
    assert m.in_proj.weight.shape == (160, 40) and m.in_proj.bias is None
    assert m.conv1d.weight.shape == (80, 1, 4) and m.conv1d.bias is not None
    assert m.x_proj.weight.shape == (m.dt_rank + 12, 80) and m.x_proj.bias is None
    assert m.out_proj.weight.shape == (40, 80) and m.out_proj.bias is None
    # S4D-real A = -[1..N] for every channel, D = 1.
    assert_close(-torch.exp(m.A_log), -torch.arange(1, 7, dtype=torch.float32).expand(80, 6))
    assert_close(m.D, torch.ones(80))
    # softplus(bias) recovers step sizes in [dt_min, dt_max]; weights within +-dt_rank^-0.5.
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.002 * (1 - 1e-4) and dt.max() <= 0.05 * (1 + 1e-4)
    assert m.dt_proj.weight.abs().max() <= m.dt_rank**-0.5
    assert m.A_log._no_weight_decay and m.D._no_weight_decay
    # Parameter count of mamba-ssm's Mamba(d_model=40, d_state=6) block.
    di, r = 80, m.dt_rank
    expected = 40 * 2 * di + di * 4 + di + di * (r + 12) + r * di + di + di * 6 + di + di * 40
    assert sum(p.numel() for p in m.parameters()) == expected


@pytest.mark.parametrize("d_conv", [1, 4])
def test_forward_matches_reference(d_conv):
    m = _mamba(d_conv=d_conv, dt_rank=3)
    x = torch.randn(2, 13, 20, dtype=torch.float64)
    y, (conv_state, ssm_state) = m(x)
    assert_close(y, _reference_forward(m, x))
    assert conv_state.shape == (2, d_conv - 1, m.d_inner)  # core.layers' [B, K - 1, C] layout
    assert ssm_state.shape == (2, m.d_inner, 5)
    assert_close(conv_state, m.in_proj(x)[:, x.shape[1] - (d_conv - 1) :, : m.d_inner])


def test_backends_agree_on_outputs_and_parameter_gradients():
    naive, chunk = _mamba(backend="naive"), _mamba(backend="chunk")
    x = torch.randn(2, 37, 20, dtype=torch.float64)
    outs = []
    for m in (naive, chunk):
        y, (_, h) = m(x)
        (y.square().mean() + h.sum()).backward()
        outs.append(y)
    assert_close(outs[1], outs[0])
    for (name, p_n), p_c in zip(naive.named_parameters(), chunk.parameters()):
        assert_close(p_c.grad, p_n.grad, msg=name)


def test_streaming_in_pieces_and_steps_equals_whole():
    m = _mamba().eval()
    x = torch.randn(2, 16, 20, dtype=torch.float64)
    with torch.no_grad():
        whole, whole_state = m(x)
        state, ys, start = m.init_state(2, dtype=torch.float64), [], 0
        for size in (1, 2, 5, 3):  # pieces shorter than the conv window, then token steps
            y, state = m(x[:, start : start + size], state)
            ys.append(y)
            start += size
        while start < x.shape[1]:
            y_t, state = m.step(x[:, start], state)
            ys.append(y_t[:, None])
            start += 1
    assert_close(torch.cat(ys, dim=1), whole, rtol=1e-6, atol=1e-8)
    assert_close(state[0], whole_state[0])
    assert_close(state[1], whole_state[1], rtol=1e-6, atol=1e-8)


def test_float32_state_for_low_precision_models():
    m = Mamba(16, d_state=4)
    conv_state, ssm_state = m.init_state(3, dtype=torch.bfloat16)
    assert conv_state.dtype == torch.bfloat16 and ssm_state.dtype == torch.float32
    y, (_, h) = m(torch.randn(3, 5, 16))
    assert y.dtype == torch.float32 and h.dtype == torch.float32


def test_bad_state_is_a_clear_error():
    m = _mamba()
    x = torch.randn(2, 4, 20, dtype=torch.float64)
    conv_state, ssm_state = m.init_state(2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"ssm_state must have shape \[2, 40, 5\]"):
        m(x, (conv_state, ssm_state[..., :4]))
    with pytest.raises(ValueError, match=r"conv_state must have shape \[2, 3, 40\]"):
        m.step(x[:, 0], (conv_state[:, :2], ssm_state))
    with pytest.raises(TypeError, match=r"\(conv_state, ssm_state\)"):
        m(x, ssm_state)
    with pytest.raises(ValueError, match="dt_init"):
        Mamba(8, dt_init="nope")


def _bimamba() -> BiMamba:
    torch.manual_seed(0)
    return create_mixer("bimamba", d_model=12, d_state=3).double().eval()


def test_bimamba_sums_a_forward_and_a_time_reversed_mamba():
    m = _bimamba()
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    with torch.no_grad():
        y, state = m(x)
        assert state is None
        # Swapping the two directions' weights is the same as reversing time.
        swapped = _bimamba()
        swapped.forward_mamba.load_state_dict(m.backward_mamba.state_dict())
        swapped.backward_mamba.load_state_dict(m.forward_mamba.state_dict())
        assert_close(swapped(x.flip(1))[0].flip(1), y)
        # Silencing the backward branch leaves the causal forward Mamba.
        m.backward_mamba.out_proj.weight.zero_()
        assert_close(m(x)[0], m.forward_mamba(x)[0])


def test_bimamba_sees_the_future_and_takes_no_state():
    m = _bimamba()
    assert not m.causal
    x = torch.randn(1, 8, 12, dtype=torch.float64)
    x2 = x.clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(m(x)[0][:, 0], m(x2)[0][:, 0])
    with pytest.raises(ValueError, match="takes no state"):
        m(x, state=m.forward_mamba.init_state(1))


def test_state_dict_of_the_nn_conv1d_layout_loads():
    """The convolution keeps nn.Conv1d's parameter names and shapes: a state dict written with a
    depthwise nn.Conv1d (the earlier layout, and mamba-ssm's) loads and gives the same outputs as
    that convolution applied by hand."""
    m = _mamba()
    conv = torch.nn.Conv1d(m.d_inner, m.d_inner, m.d_conv, groups=m.d_inner).double()
    state = m.state_dict()
    state["conv1d.weight"], state["conv1d.bias"] = conv.weight.detach(), conv.bias.detach()
    m.load_state_dict(state)
    x = torch.randn(2, 9, 20, dtype=torch.float64)
    with torch.no_grad():
        assert_close(m(x)[0], _reference_forward(m, x))
        xs = m.in_proj(x)[..., : m.d_inner].transpose(1, 2)
        by_hand = conv(F.pad(xs, (m.d_conv - 1, 0))).transpose(1, 2)
        assert_close(m.conv1d(m.in_proj(x)[..., : m.d_inner])[0], by_hand)


def test_mamba_ssm_backend_only_when_asked_for(monkeypatch):
    """backend="mamba_ssm" sends the scan to mamba-ssm's selective_scan_fn (a stand-in module
    here: the real one needs CUDA) when there is no carried SSM state; the outputs are those of
    the chunk backend. Without the request, an installed mamba-ssm is not used."""
    import sys
    import types

    from mixerzoo.core.ops import backend as backend_module
    from mixerzoo.core.ops import selective_scan

    calls = []

    def fake_selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                               delta_softplus=False, return_last_state=False):  # fmt: skip
        calls.append(delta_softplus)
        return selective_scan(
            u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
            return_last_state=return_last_state, backend="naive",
        )  # fmt: skip

    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = fake_selective_scan_fn
    monkeypatch.setitem(sys.modules, "mamba_ssm", types.ModuleType("mamba_ssm"))
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops", types.ModuleType("mamba_ssm.ops"))
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", interface)
    monkeypatch.setattr(backend_module, "_is_cuda", lambda device: True)
    monkeypatch.delenv("MIXERZOO_BACKEND", raising=False)

    torch.manual_seed(0)
    fused = Mamba(16, d_state=4, backend="mamba_ssm")
    plain = Mamba(16, d_state=4, backend="chunk")
    plain.load_state_dict(fused.state_dict())
    automatic = Mamba(16, d_state=4)
    automatic.load_state_dict(fused.state_dict())
    x = torch.randn(2, 7, 16)
    y, state = fused(x)
    assert calls == [True]
    y_plain, state_plain = plain(x)
    assert_close(y, y_plain)
    assert_close(state[1], state_plain[1])
    automatic(x)
    assert calls == [True]  # installed, "on CUDA", not asked for: not used
    with pytest.raises(ValueError, match="takes no h0"):
        fused(x, state)  # mamba-ssm's kernel cannot continue from a carried SSM state
