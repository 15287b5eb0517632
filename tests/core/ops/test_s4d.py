"""S4D operators: Vandermonde kernel vs explicit matrix powers, FFT vs direct convolution, the
parallel scan vs the recurrence (outputs, final states, gradients), and discretisation identities."""

from __future__ import annotations

import math

import pytest
import torch

from mixerzoo.core.ops.s4d import causal_conv, s4d_discretize, s4d_kernel, s4d_scan
from mixerzoo.core.testing import assert_close

SHAPES = [(1, 1, 3, 1), (2, 7, 5, 3), (1, 13, 4, 4), (3, 16, 2, 5)]  # (B, T, H, N2)


def _ssm(h: int, n2: int, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    A = torch.complex(
        -0.5 * torch.ones(h, n2, dtype=dtype), math.pi * torch.arange(n2, dtype=dtype).repeat(h, 1)
    )
    B = torch.randn(h, n2, generator=g, dtype=cdtype)
    dt = torch.exp(torch.empty(h, dtype=dtype).uniform_(math.log(1e-2), math.log(0.5), generator=g))
    log_dA, dB = s4d_discretize(A, B, dt)
    C = torch.randn(h, n2, generator=g, dtype=cdtype)
    return log_dA, dB, C


def _real_block_form(log_dA, dB, C):
    """Each complex mode as a real 2x2 rotation-scaling block: K_l = c^T M^l b, conj pair folded."""
    lam = torch.exp(log_dA)
    n2 = lam.shape[-1]
    m = torch.zeros(2 * n2, 2 * n2, dtype=lam.real.dtype)
    b = torch.zeros(2 * n2, dtype=lam.real.dtype)
    c = torch.zeros(2 * n2, dtype=lam.real.dtype)
    for i in range(n2):
        m[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor(
            [[lam[i].real, -lam[i].imag], [lam[i].imag, lam[i].real]]
        )
        b[2 * i], b[2 * i + 1] = dB[i].real, dB[i].imag
        c[2 * i], c[2 * i + 1] = 2 * C[i].real, -2 * C[i].imag
    return m, b, c


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_kernel_matches_real_matrix_powers(backend):
    log_dA, dB, C = _ssm(3, 4)
    length = 9
    k = s4d_kernel(log_dA, dB, C, length, backend=backend)
    for h in range(3):
        m, b, c = _real_block_form(log_dA[h], dB[h], C[h])
        expected = torch.stack([c @ torch.linalg.matrix_power(m, i) @ b for i in range(length)])
        assert_close(k[h], expected)


@pytest.mark.parametrize("b,t,h,n2", SHAPES)
def test_kernel_vandermonde_equals_naive_with_gradients(b, t, h, n2):
    log_dA, dB, C = (p.requires_grad_() for p in _ssm(h, n2, seed=t))
    weights = torch.randn(h, t, dtype=torch.float64)
    grads = {}
    for backend in ("naive", "chunk"):
        k = s4d_kernel(log_dA, dB, C, t, backend=backend)
        grads[backend] = (
            k,
            *torch.autograd.grad((k * weights).sum(), (log_dA, dB, C), materialize_grads=True),
        )
    for got, want in zip(grads["chunk"], grads["naive"]):
        assert_close(got, want)


@pytest.mark.parametrize("b,t,h,n2", SHAPES)
def test_fft_conv_equals_direct_sum(b, t, h, n2):
    u = torch.randn(b, t, h, dtype=torch.float64, requires_grad=True)
    k = torch.randn(h, t + 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(b, t, h, dtype=torch.float64)
    out = {}
    for backend in ("naive", "chunk"):
        y = causal_conv(u, k, backend=backend)
        out[backend] = (y, *torch.autograd.grad((y * w).sum(), (u, k)))
    for got, want in zip(out["chunk"], out["naive"]):
        assert_close(got, want)
    # Independent check: conv1d with a flipped kernel and left padding is the same causal conv.
    ref = torch.nn.functional.conv1d(
        torch.nn.functional.pad(u.transpose(1, 2), (t - 1, 0)),
        k[:, :t].flip(-1).unsqueeze(1),
        groups=h,
    ).transpose(1, 2)
    assert_close(out["chunk"][0], ref)


@pytest.mark.parametrize("b,t,h,n2", SHAPES)
@pytest.mark.parametrize("with_h0", [False, True])
def test_scan_chunk_equals_recurrence(b, t, h, n2, with_h0):
    log_dA, dB, C = (p.requires_grad_() for p in _ssm(h, n2, seed=b + t))
    u = torch.randn(b, t, h, dtype=torch.float64, requires_grad=True)
    inputs = [u, log_dA, dB, C]
    h0 = None
    if with_h0:
        h0 = torch.randn(b, h, n2, dtype=torch.complex128, requires_grad=True)
        inputs.append(h0)
    wy = torch.randn(b, t, h, dtype=torch.float64)
    wh = torch.randn(b, h, n2, dtype=torch.complex128)
    out = {}
    for backend in ("naive", "chunk"):
        y, h_last = s4d_scan(u, log_dA, dB, C, h0=h0, backend=backend)
        loss = (y * wy).sum() + (h_last * wh).real.sum()
        out[backend] = (y, h_last, *torch.autograd.grad(loss, inputs, materialize_grads=True))
    for got, want in zip(out["chunk"], out["naive"]):
        assert_close(got, want)


def test_scan_in_pieces_equals_whole_float32():
    log_dA, dB, C = _ssm(4, 3, dtype=torch.float32)
    u = torch.randn(2, 21, 4)
    y, h = s4d_scan(u, log_dA, dB, C, backend="chunk")
    y1, h1 = s4d_scan(u[:, :8], log_dA, dB, C, backend="chunk")
    y2, h2 = s4d_scan(u[:, 8:], log_dA, dB, C, h0=h1, backend="chunk")
    assert y.dtype == torch.float32
    assert_close(torch.cat([y1, y2], 1), y)
    assert_close(h2, h)


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_gradcheck(backend):
    log_dA, dB, C = (p.requires_grad_() for p in _ssm(2, 2))
    u = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 2, dtype=torch.complex128, requires_grad=True)
    k = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: s4d_scan(*a, backend=backend), (u, log_dA, dB, C, h0)
    )
    assert torch.autograd.gradcheck(lambda *a: s4d_kernel(*a, 4, backend=backend), (log_dA, dB, C))
    assert torch.autograd.gradcheck(lambda *a: causal_conv(*a, backend=backend), (u, k))


def test_zoh_matches_matrix_exponential():
    """ZOH: [[A, B], [0, 0]] dt exponentiated holds (dA, dB) in its first row."""
    A = torch.tensor([[-0.5 + 3.0j, -0.2 + 0.1j]], dtype=torch.complex128)
    B = torch.tensor([[1.0 - 0.5j, 0.3 + 2.0j]], dtype=torch.complex128)
    dt = torch.tensor([0.37], dtype=torch.float64)
    log_dA, dB = s4d_discretize(A, B, dt, "zoh")
    for n in range(2):
        aug = torch.tensor([[A[0, n], B[0, n]], [0, 0]], dtype=torch.complex128) * dt[0]
        e = torch.linalg.matrix_exp(aug)
        assert_close(torch.exp(log_dA[0, n]), e[0, 0])
        assert_close(dB[0, n], e[0, 1])


def test_bilinear_satisfies_trapezoid_rule():
    """Bilinear: x1 - x0 = dt A (x0 + x1) / 2 + dt B u, i.e. dA - 1 = dt A (1 + dA) / 2 and
    dB = dt A dB / 2 + dt B."""
    A = torch.tensor([[-0.5 + 3.0j, -1.5 + 0.0j]], dtype=torch.complex128)
    B = torch.tensor([[1.0 - 0.5j, 0.3 + 2.0j]], dtype=torch.complex128)
    dt = torch.tensor([0.21], dtype=torch.float64)
    log_dA, dB = s4d_discretize(A, B, dt, "bilinear")
    dA = torch.exp(log_dA)
    assert_close(dA - 1, dt * A * (1 + dA) / 2)
    assert_close(dB, dt * A * dB / 2 + dt * B)


def test_errors_name_the_argument():
    log_dA, dB, C = _ssm(3, 2)
    u = torch.randn(2, 5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"log_dA must have shape \[H=4"):
        s4d_scan(torch.randn(2, 5, 4, dtype=torch.float64), log_dA, dB, C)
    with pytest.raises(TypeError, match="dB must be a complex tensor"):
        s4d_scan(u, log_dA, dB.real, C)
    with pytest.raises(TypeError, match="u must be a floating-point"):
        s4d_scan(u.long(), log_dA, dB, C)
    with pytest.raises(ValueError, match=r"h0 must have shape \[2, 3, 2\]"):
        s4d_scan(u, log_dA, dB, C, h0=torch.zeros(1, 3, 2, dtype=torch.complex128))
    with pytest.raises(ValueError, match="at least T=5 taps"):
        causal_conv(u, torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown method"):
        s4d_discretize(torch.exp(log_dA), dB, torch.ones(3, dtype=torch.float64), "euler")
