"""S4D mixer: paper initialisation, the SSM part equals its kernel's convolution, recurrent step
and forward agree from a non-zero state, pieces equal the whole, and every option runs."""

from __future__ import annotations

import math

import pytest
import torch

from mixerzoo.core import create_mixer
from mixerzoo.core.ops.s4d import s4d_kernel
from mixerzoo.core.testing import assert_close


def _mixer(**kw):
    torch.manual_seed(0)
    return create_mixer("s4d", d_model=6, d_state=8, **kw).double().eval()


def test_initialisation_follows_the_paper():
    m = create_mixer("s4d", d_model=16, d_state=10)
    A = torch.complex(-torch.exp(m.log_A_real), m.A_imag)
    assert_close(A.real, torch.full((16, 5), -0.5))
    assert_close(A.imag, math.pi * torch.arange(5.0).repeat(16, 1))  # S4D-Lin
    assert torch.all(m.log_dt >= math.log(1e-3)) and torch.all(m.log_dt <= math.log(1e-1))
    assert_close(torch.view_as_complex(m.B), torch.ones(16, 5, dtype=torch.cfloat))
    inv = create_mixer("s4d", d_model=2, d_state=4, init="inv")
    n = torch.arange(2.0)
    assert_close(inv.A_imag[0], 4 / math.pi * (4 / (2 * n + 1) - 1))


def test_ssm_output_is_the_kernel_convolution():
    """With D = 0, the pre-activation SSM output is sum_j K_j x_{t-j}; compare to a direct sum."""
    m = _mixer()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    captured = {}
    m.out_proj.register_forward_hook(lambda mod, inp, out: captured.setdefault("pre", inp[0]))
    with torch.no_grad():
        m.D.zero_()
        m(x)
        log_dA, dB, C = m.discrete_parameters()
        k = s4d_kernel(log_dA, dB, C, 9, backend="naive")
    direct = torch.stack(
        [sum(k[:, j] * x[:, t - j] for j in range(t + 1)) for t in range(9)], dim=1
    )
    assert_close(captured["pre"], torch.nn.functional.gelu(direct))


@pytest.mark.parametrize("kw", [{}, {"discretization": "bilinear"}, {"init": "inv", "glu": False}])
def test_step_from_nonzero_state_equals_forward(kw):
    m = _mixer(**kw)
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    state0 = torch.randn(3, 6, 4, dtype=torch.complex128)
    with torch.no_grad():
        y, state = m(x, state0)
        s = state0
        ys = []
        for t in range(7):
            y_t, s = m.step(x[:, t], s)
            ys.append(y_t)
    assert_close(torch.stack(ys, 1), y)
    assert_close(s, state)


def test_three_pieces_equal_whole_and_backends_agree():
    m = _mixer()
    x = torch.randn(2, 20, 6, dtype=torch.float64)
    with torch.no_grad():
        y, s = m(x)
        y1, s1 = m(x[:, :5])
        y2, s2 = m(x[:, 5:6], s1)
        y3, s3 = m(x[:, 6:], s2)
        m.backend = "naive"
        y_naive, s_naive = m(x)
    assert_close(torch.cat([y1, y2, y3], 1), y)
    assert_close(s3, s)
    assert_close(y_naive, y)
    assert_close(s_naive, s)


def test_bad_arguments():
    with pytest.raises(ValueError, match="d_state must be an even"):
        create_mixer("s4d", d_model=4, d_state=5)
    with pytest.raises(ValueError, match="unknown discretization"):
        create_mixer("s4d", d_model=4, discretization="euler")
    with pytest.raises(ValueError, match="unknown init"):
        create_mixer("s4d", d_model=4, init="legs")


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_recurrence_path_equals_the_fft_path(backend):
    """With a reset at t = 0 (which drops the carried state) the mixer runs the recurrence
    through linear_scan; it must give the FFT path's outputs and state from a zero start, and
    with a mask of real tokens only at the front, the FFT path over those tokens."""
    m = _mixer(backend=backend)
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    state0 = torch.randn(2, 6, 4, dtype=torch.complex128)
    reset = torch.zeros(2, 9, dtype=torch.bool)
    reset[:, 0] = True
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        y_fft, s_fft = m(x)
        y_rec, s_rec = m(x, state0, reset=reset)
        y_mask, s_mask = m(x, state0, mask=mask)
        y_short, s_short = m(x[1:, :5], state0[1:])
        y_full, s_full = m(x[:1], state0[:1])
    assert_close(y_rec, y_fft)
    assert_close(s_rec, s_fft)
    assert_close(y_mask[1, :5], y_short[0])
    assert_close(s_mask[1], s_short[0])
    assert_close(y_mask[0], y_full[0])
    assert_close(s_mask[0], s_full[0])
