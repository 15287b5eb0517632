"""Companion SSM mixer: reproduces an AR(2) process exactly (open loop with a = AR coefficients,
and closed-loop forecasting from its state), closed loop == feeding predictions back through
``step``, carried state from a non-zero start, heads, and the L1 projection of ``a``."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core import create_mixer
from mixerzoo.core.testing import assert_close

PHI = (0.6, 0.3)  # AR(2): s_t = 0.6 s_{t-1} + 0.3 s_{t-2} + e_t


def _ar2(noise: torch.Tensor, s_prev=(0.0, 0.0)) -> torch.Tensor:
    s1, s2 = s_prev
    out = []
    for e in noise:
        s = PHI[0] * s1 + PHI[1] * s2 + e
        out.append(s)
        s1, s2 = s, s1
    return torch.stack(out)


def _ar2_mixer(n_channels: int = 1, **kw):
    """N = 2 companion SSM whose impulse response is that of 1 / (1 - phi_1 z - phi_2 z^2)."""
    m = create_mixer("companion_ssm", d_model=n_channels, d_state=2, skip=False, **kw).double()
    with torch.no_grad():
        # Characteristic polynomial l^2 - a_1 l - a_0 = l^2 - phi_1 l - phi_2.
        m.a.copy_(torch.tensor([[PHI[1], PHI[0]]], dtype=torch.float64).repeat(n_channels, 1))
        m.b.copy_(torch.tensor([[1.0, 0.0]]).repeat(n_channels, 1))  # A^0 b = e1, A b = e2
        m.c.copy_(
            torch.tensor([[1.0, PHI[0]]], dtype=torch.float64).repeat(n_channels, 1)
        )  # K_0 = 1, K_1 = phi_1
    return m


def test_open_loop_reproduces_ar2_process():
    torch.manual_seed(0)
    noise = torch.randn(40, dtype=torch.float64)
    m = _ar2_mixer()
    y, _ = m(noise.view(1, 40, 1))
    assert_close(y[0, :, 0], _ar2(noise))


def test_free_response_continues_the_ar_recursion():
    """After driving with noise, the zero-input continuation is the AR recursion from the last two
    values (closed loop with k = 0)."""
    torch.manual_seed(1)
    noise = torch.randn(25, dtype=torch.float64)
    m = _ar2_mixer()
    series = _ar2(noise)
    _, state = m(noise.view(1, 25, 1))
    forecast, u = m.closed_loop(state, 10)
    expected = _ar2(torch.zeros(10, dtype=torch.float64), (series[-1].item(), series[-2].item()))
    assert_close(forecast[0, :, 0], expected)
    assert torch.all(u == 0)


def test_closed_loop_feedback_forecasts_an_observed_ar_series():
    """Feed the AR series itself: a = 0, b = e1 keeps the last N inputs in the state, and the
    feedback k = (phi_1, phi_2, 0, ...) predicts the next input; with c = e1 the closed loop
    forecast is exactly the AR recursion (predicted inputs equal the outputs)."""
    torch.manual_seed(2)
    n = 4
    m = create_mixer("companion_ssm", d_model=1, d_state=n, skip=False, feedback=True).double()
    with torch.no_grad():
        m.a.zero_()
        m.b.zero_()
        m.b[0, 0] = 1.0
        m.c.zero_()
        m.c[0, 0] = 1.0
        m.k.zero_()
        m.k[0, :2] = torch.tensor(PHI, dtype=torch.float64)
    series = _ar2(torch.randn(30, dtype=torch.float64))
    y, state = m(series.view(1, 30, 1))
    assert_close(y[0, :, 0], series)  # c = e1 reads the newest input back
    assert_close(state[0, 0], series.flip(0)[:n])  # the state holds the last N inputs
    forecast, u = m.closed_loop(state, 12)
    expected = _ar2(torch.zeros(12, dtype=torch.float64), (series[-1].item(), series[-2].item()))
    assert_close(forecast[0, :, 0], expected)
    assert_close(u[0, :, 0], expected)


def test_closed_loop_equals_stepping_with_predicted_inputs():
    torch.manual_seed(3)
    m = create_mixer("companion_ssm", d_model=6, d_state=5, n_heads=3, feedback=True).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    with torch.no_grad():
        _, state = m(x)
        y_cl, u_cl = m.closed_loop(state, 7)
        heads = m.head_of_channel
        ys, us = [], []
        for _ in range(7):
            u_t = (m.k[heads] * state).sum(-1)
            y_t, state = m.step(u_t, state)
            ys.append(y_t)
            us.append(u_t)
    assert_close(y_cl, torch.stack(ys, 1))
    assert_close(u_cl, torch.stack(us, 1))


def test_pieces_and_steps_from_a_nonzero_state():
    torch.manual_seed(4)
    m = create_mixer("companion_ssm", d_model=4, d_state=6, n_heads=2).double()
    x = torch.randn(2, 13, 4, dtype=torch.float64)
    s0 = torch.randn(2, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        y, s = m(x, s0)
        y1, s1 = m(x[:, :4], s0)
        y2, s2 = m(x[:, 4:], s1)
        m.backend = "naive"
        y_naive, s_naive = m(x, s0)
        st = s0
        ys = []
        for t in range(13):
            y_t, st = m.step(x[:, t], st)
            ys.append(y_t)
    assert_close(torch.cat([y1, y2], 1), y)
    assert_close(s2, s)
    assert_close(torch.stack(ys, 1), y)
    assert_close(st, s)
    assert_close(y_naive, y)
    assert_close(s_naive, s)


def test_heads_share_kernels_and_a_is_projected():
    m = create_mixer("companion_ssm", d_model=6, d_state=3, n_heads=2)
    kern = m.kernel(8)
    assert_close(kern[0], kern[2])
    assert not torch.allclose(kern[2], kern[3])
    with torch.no_grad():
        m.a.copy_(torch.tensor([[2.0, -1.0, 1.0], [0.1, 0.2, -0.3]]))
    col = m.last_column()
    assert_close(col[0], torch.tensor([0.5, -0.25, 0.25]))
    assert_close(col[1], torch.tensor([0.1, 0.2, -0.3]))  # inside the ball: unchanged


def test_errors():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        create_mixer("companion_ssm", d_model=6, n_heads=4)
    m = create_mixer("companion_ssm", d_model=4, d_state=3)
    with pytest.raises(ValueError, match=r"state must have shape \[B, 4, 3\]"):
        m.closed_loop(torch.zeros(1, 4, 2), 3)
    with pytest.raises(ValueError, match="horizon must be a positive int"):
        m.closed_loop(torch.zeros(1, 4, 3), 0)


def test_reset_and_mask_path_reproduces_the_ar2_process():
    """The step-by-step path taken with resets or padding: on the AR(2) mixer a reset restarts
    the AR recursion from zero, and padded steps are skipped (the recursion runs over the real
    steps only, and the returned state forecasts from them)."""
    torch.manual_seed(5)
    noise = torch.randn(2, 20, dtype=torch.float64)
    m = _ar2_mixer()
    reset = torch.zeros(2, 20, dtype=torch.bool)
    reset[0, 8] = True
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, [3, 4, 11]] = False
    mask[1, 17:] = False
    with torch.no_grad():
        y, state = m(noise.unsqueeze(-1), reset=reset, mask=mask)
        # Row 0: two AR(2) runs, the second from rest.
        assert_close(y[0, :8, 0], _ar2(noise[0, :8]))
        assert_close(y[0, 8:, 0], _ar2(noise[0, 8:]))
        # Row 1: the AR recursion over the real steps only.
        real = _ar2(noise[1, mask[1]])
        assert_close(y[1, mask[1], 0], real)
        forecast, _ = m.closed_loop(state[1:], 4)
        expected = _ar2(torch.zeros(4, dtype=torch.float64), (real[-1].item(), real[-2].item()))
        assert_close(forecast[0, :, 0], expected)
        # Without anything flagged the FFT path runs; a reset at t = 0 from a zero state
        # changes nothing, so the slow path must agree with it.
        first = torch.zeros(2, 20, dtype=torch.bool)
        first[:, 0] = True
        m6 = create_mixer("companion_ssm", d_model=4, d_state=5, n_heads=2).double()
        x = torch.randn(2, 20, 4, dtype=torch.float64)
        y_fft, s_fft = m6(x)
        y_rec, s_rec = m6(x, m6.init_state(2, dtype=torch.float64) + 1.0, reset=first)
    assert_close(y_rec, y_fft)
    assert_close(s_rec, s_fft)
