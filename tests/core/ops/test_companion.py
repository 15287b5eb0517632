"""Companion-matrix ops: Krylov by squaring vs one structured step per power vs dense matrix
powers, gradients, and the fixed preprocessing kernels (differencing, moving-average residual)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mixerzoo.core.ops.companion import (
    companion_apply,
    companion_kernel,
    companion_krylov,
    companion_matrix,
    differencing_kernel,
    moving_average_residual_kernel,
)
from mixerzoo.core.ops.s4d import causal_conv
from mixerzoo.core.testing import assert_close

SHAPES = [(1, 1, 1), (3, 5, 7), (2, 4, 16), (1, 3, 13)]  # (K, N, L)


def _params(k: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(k, n, generator=g, dtype=torch.float64)
    a = a / a.abs().sum(-1, keepdim=True)  # keep powers bounded
    return (
        a,
        torch.randn(k, n, generator=g, dtype=torch.float64),
        torch.randn(k, n, generator=g, dtype=torch.float64),
    )


def test_companion_matrix_structure_and_apply():
    a = torch.tensor([0.1, -0.2, 0.3, 0.4], dtype=torch.float64)
    expected = torch.tensor(
        [[0, 0, 0, 0.1], [1, 0, 0, -0.2], [0, 1, 0, 0.3], [0, 0, 1, 0.4]], dtype=torch.float64
    )
    assert_close(companion_matrix(a), expected)
    v = torch.randn(4, dtype=torch.float64)
    assert_close(companion_apply(a, v), expected @ v)
    assert_close(companion_apply(a, v, transpose=True), expected.T @ v)
    # Characteristic polynomial lambda^N - sum_i a_i lambda^i (Cayley-Hamilton's closed form).
    poly = torch.from_numpy(np.poly(expected.numpy()))
    assert_close(poly, torch.cat([torch.ones(1, dtype=torch.float64), -a.flip(0)]))


@pytest.mark.parametrize("k,n,length", SHAPES)
@pytest.mark.parametrize("transpose", [False, True])
def test_krylov_backends_and_matrix_powers(k, n, length, transpose):
    a, v, _ = _params(k, n, seed=length)
    a.requires_grad_()
    v.requires_grad_()
    w = torch.randn(k, length, n, dtype=torch.float64)
    out = {}
    for backend in ("naive", "chunk"):
        x = companion_krylov(a, v, length, transpose=transpose, backend=backend)
        out[backend] = (x, *torch.autograd.grad((x * w).sum(), (a, v), materialize_grads=True))
    for got, want in zip(out["chunk"], out["naive"]):
        assert_close(got, want)
    with torch.no_grad():
        m = companion_matrix(a)
        m = m.transpose(-1, -2) if transpose else m
        dense = torch.stack(
            [
                (torch.linalg.matrix_power(m, j) @ v.unsqueeze(-1)).squeeze(-1)
                for j in range(length)
            ],
            1,
        )
    assert_close(out["naive"][0], dense)


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_gradcheck(backend):
    a, b, c = (p.requires_grad_() for p in _params(2, 3))
    assert torch.autograd.gradcheck(lambda *p: companion_kernel(*p, 6, backend=backend), (a, b, c))
    assert torch.autograd.gradcheck(
        lambda *p: companion_krylov(*p, 5, transpose=True, backend=backend), (a, b)
    )


def test_kernel_satisfies_the_characteristic_recursion():
    """Cayley-Hamilton: K_{j+N} = sum_i a_i K_{j+i} for every j."""
    a, b, c = _params(3, 4, seed=3)
    kern = companion_kernel(a, b, c, 20)
    n = 4
    for j in range(20 - n):
        assert_close(kern[:, j + n], (a * kern[:, j : j + n]).sum(-1))


def test_differencing_kernel_annihilates_polynomials():
    assert differencing_kernel(2, 5).tolist() == [1.0, -2.0, 1.0, 0.0, 0.0]
    t = torch.arange(12, dtype=torch.float64)
    for order in range(4):
        k = differencing_kernel(order, 12, dtype=torch.float64)
        # Order-p differencing of a degree-(p-1) polynomial vanishes once p past values exist.
        poly = 0.5 * t ** max(order - 1, 0) + 2.0 if order else torch.zeros_like(t)
        y = causal_conv(poly.view(1, 12, 1), k.view(1, 12))[0, :, 0]
        assert_close(y[order:], torch.zeros(12 - order, dtype=torch.float64))
        # It is a shift SSM (a = 0, b = e_1) with c = the taps.
        n = order + 1
        e1 = torch.zeros(1, n, dtype=torch.float64)
        e1[0, 0] = 1
        shift = companion_kernel(torch.zeros(1, n, dtype=torch.float64), e1, k[:n].view(1, n), 12)
        assert_close(shift[0], k)
    # Order 1 on a random walk recovers the increments exactly.
    steps = torch.randn(12, dtype=torch.float64)
    walk = steps.cumsum(0)
    y = causal_conv(walk.view(1, 12, 1), differencing_kernel(1, 12, torch.float64).view(1, 12))
    assert_close(y[0, 1:, 0], steps[1:])


def test_moving_average_residual_kernel():
    x = torch.randn(1, 15, 1, dtype=torch.float64)
    k = moving_average_residual_kernel(4, 15, dtype=torch.float64)
    y = causal_conv(x, k.view(1, 15))[0, :, 0]
    for t in range(3, 15):
        assert math.isclose(
            y[t].item(), (x[0, t, 0] - x[0, t - 3 : t + 1, 0].mean()).item(), abs_tol=1e-12
        )


def test_errors():
    a, b, _ = _params(2, 3)
    with pytest.raises(ValueError, match=r"v must have shape \[2, 3\]"):
        companion_krylov(a, b[:, :2], 4)
    with pytest.raises(ValueError, match="length must be a positive int"):
        companion_krylov(a, b, 0)
    with pytest.raises(TypeError, match="a must be a floating-point"):
        companion_krylov(a.long(), b, 3)
    with pytest.raises(ValueError, match="0 <= order < length"):
        differencing_kernel(3, 2)
