"""S5 mixer: HiPPO-N initialisation, parallel scan == recurrence (with and without resets, from a
non-zero state), resettable forward == separate forwards per episode, padded steps are identity
steps, block-diagonal init."""

from __future__ import annotations

import math

import pytest
import torch

from mixerzoo.core import create_mixer
from mixerzoo.core.mixers.s5 import hippo_n_eig
from mixerzoo.core.state import reset_state
from mixerzoo.core.testing import assert_close


def _mixer(**kw):
    torch.manual_seed(0)
    return create_mixer("s5", d_model=5, d_state=8, **kw).double().eval()


def test_hippo_n_eigendecomposition():
    n = 6
    lam, vecs = hippo_n_eig(n)
    # Rebuild HiPPO-LegS entry by entry and add the rank-one term p p^T, p_n = sqrt(n + 1/2).
    legs = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for k in range(n):
            if i > k:
                legs[i, k] = -math.sqrt(2 * i + 1) * math.sqrt(2 * k + 1)
            elif i == k:
                legs[i, k] = -(i + 1)
    p = torch.sqrt(torch.arange(n, dtype=torch.float64) + 0.5)
    normal = legs + torch.outer(p, p)
    assert_close(torch.diagonal(normal), torch.full((n,), -0.5, dtype=torch.float64))
    rebuilt = vecs @ torch.diag(lam) @ vecs.conj().T
    assert_close(rebuilt, normal.to(torch.complex128))
    # Conjugate pairs: the second half of the spectrum mirrors the first.
    assert_close(lam[: n // 2].conj(), lam[n // 2 :].flip(0))


def test_block_initialisation():
    m = create_mixer("s5", d_model=4, d_state=12, n_blocks=3)
    lam, _ = hippo_n_eig(4)
    assert_close(m.Lambda_im, lam.imag[:2].float().repeat(3))
    assert torch.all(m.Lambda_re == -0.5)
    assert torch.all(m.log_dt >= math.log(1e-3)) and torch.all(m.log_dt <= math.log(1e-1))
    with pytest.raises(ValueError, match="even"):
        create_mixer("s5", d_model=4, d_state=12, n_blocks=4)


def _recurrence(m, x, state, reset=None):
    """Independent step-by-step S5 recurrence (pre-activation output)."""
    lam_bar, b_bar, c = m.discrete_parameters()
    ys = []
    for t in range(x.shape[1]):
        carry = lam_bar * state
        if reset is not None:
            carry = carry * (~reset[:, t]).unsqueeze(-1)
        state = carry + x[:, t].to(b_bar.dtype) @ b_bar.T
        ys.append(2 * (state @ c.T).real + m.D * x[:, t])
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("use_reset", [False, True])
def test_forward_equals_recurrence_and_step(use_reset):
    m = _mixer(activation="none")
    torch.manual_seed(1)
    x = torch.randn(3, 10, 5, dtype=torch.float64)
    s0 = torch.randn(3, 4, dtype=torch.complex128)
    reset = (torch.rand(3, 10) < 0.3) if use_reset else None
    if use_reset:
        reset[0, 0] = True  # a reset on the very first token ignores the carried state
    with torch.no_grad():
        y, s = m(x, s0, reset=reset)
        y_ref, s_ref = _recurrence(m, x, s0, reset)
        st, ys = s0, []
        for t in range(10):
            if use_reset:
                # Between steps an episode start zeros the state (the core state helper).
                st = reset_state(st, reset[:, t])
            y_t, st = m.step(x[:, t], st)
            ys.append(y_t)
    assert_close(y, y_ref)
    assert_close(s, s_ref)
    assert_close(torch.stack(ys, 1), y)
    assert_close(st, s)


@pytest.mark.parametrize("activation", ["half_glu1", "half_glu2", "full_glu", "gelu"])
def test_resettable_forward_equals_separate_episodes(activation):
    m = _mixer(activation=activation)
    torch.manual_seed(2)
    x = torch.randn(2, 12, 5, dtype=torch.float64)
    s0 = torch.randn(2, 4, dtype=torch.complex128)
    starts = {0: [4, 9], 1: [7]}
    reset = torch.zeros(2, 12, dtype=torch.bool)
    for b, ts in starts.items():
        reset[b, ts] = True
    with torch.no_grad():
        y, s = m(x, s0, reset=reset)
        for b, ts in starts.items():
            bounds = [0, *ts, 12]
            for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                # The first segment continues the carried state; later ones start from zero.
                init = s0[b : b + 1] if i == 0 else None
                y_seg, s_seg = m(x[b : b + 1, lo:hi], init)
                assert_close(y[b : b + 1, lo:hi], y_seg)
            assert_close(s[b : b + 1], s_seg)


def test_gradients_equal_the_recurrence():
    # The parallel form (real matrix products on interleaved complex values) and the complex
    # step-by-step recurrence give the same gradients for the input, the state and every parameter.
    m = _mixer(activation="none")
    torch.manual_seed(3)
    x = torch.randn(2, 9, 5, dtype=torch.float64, requires_grad=True)
    s0 = torch.randn(2, 4, dtype=torch.complex128, requires_grad=True)
    reset = torch.rand(2, 9) < 0.3
    w = torch.randn(2, 9, 5, dtype=torch.float64)
    inputs = [x, s0, *m.parameters()]
    y, s = m(x, s0, reset=reset)
    grads = torch.autograd.grad((y * w).sum() + s.abs().sum(), inputs)
    y_ref, s_ref = _recurrence(m, x, s0, reset)
    grads_ref = torch.autograd.grad((y_ref * w).sum() + s_ref.abs().sum(), inputs)
    for got, ref in zip(grads, grads_ref):
        assert_close(got, ref)


def test_gradients_flow_through_resets():
    m = _mixer()
    x = torch.randn(2, 7, 5, dtype=torch.float64, requires_grad=True)
    reset = torch.zeros(2, 7, dtype=torch.bool)
    reset[:, 3] = True
    y, _ = m(x, None, reset=reset)
    (gx,) = torch.autograd.grad(y[:, 3:].sum(), x)
    # Outputs after the reset do not depend on inputs before it.
    assert torch.all(gx[:, :3] == 0)
    assert torch.all(gx[:, 3:].abs().sum(-1) > 0)


def test_bad_reset_and_state():
    m = _mixer()
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="reset must be a torch.bool tensor"):
        m(x, None, reset=torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"reset must have shape \[B, T\] = \[2, 6\]"):
        m(x, None, reset=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="positional"):
        m(x, None, torch.zeros(2, 6, dtype=torch.bool))  # reset is keyword-only now
    with pytest.raises(ValueError, match=r"state must have shape \[2, 4\]"):
        m(x, torch.zeros(2, 3, dtype=torch.complex128))
    with pytest.raises(ValueError, match="unknown activation"):
        create_mixer("s5", d_model=4, activation="relu")


def test_padded_steps_leave_the_state_unchanged():
    """Against the independent recurrence: a padded step neither reads its input nor moves the
    state, so the real outputs and the final state are those of the real steps alone."""
    m = _mixer(activation="none")
    torch.manual_seed(3)
    x = torch.randn(2, 9, 5, dtype=torch.float64)
    s0 = torch.randn(2, 4, dtype=torch.complex128)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, [1, 4, 5]] = False
    mask[1, 6:] = False
    with torch.no_grad():
        y, s = m(x, s0, mask=mask)
        for b in range(2):
            y_ref, s_ref = _recurrence(m, x[b : b + 1, mask[b]], s0[b : b + 1])
            assert_close(y[b, mask[b]], y_ref[0])
            assert_close(s[b], s_ref[0])
