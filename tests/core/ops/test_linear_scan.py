"""linear_scan: chunked parallel scan vs the step-by-step loop, resets, closed forms, gradcheck."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core.ops import linear_scan
from mixerzoo.core.ops.linear_scan import chunk as chunk_module
from mixerzoo.core.testing import assert_close

# T=1, tiny, odd, just under / over the chunked threshold, not a multiple of the chunk size, and
# long enough for two recursion levels; trailing dims none, one and two (non-powers of two).
SHAPES = [
    (2, 1, (3,)),
    (1, 7, (5,)),
    (2, 17, ()),
    (1, 37, (2, 3)),
    (3, 100, (5,)),
    (1, 300, (3,)),
]


def _inputs(batch, length, rest, dtype, with_zeros=True):
    real = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
    # Decays in (-1.1, 1.1): negative and slightly expanding ones too, plus exact zeros.
    a = torch.rand(batch, length, *rest, dtype=real) * 2.2 - 1.1
    if dtype.is_complex:
        a = torch.polar(a.abs(), torch.rand_like(a) * 6.3)
    if with_zeros:
        a = a.masked_fill(torch.rand(a.shape) < 0.05, 0.0)
    a = a.to(dtype)
    b = torch.randn(batch, length, *rest, dtype=dtype)
    h0 = torch.randn(batch, *rest, dtype=dtype)
    return a, b, h0


def _grads(out, last, inputs, seed=1):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    w_last = torch.randn(last.shape, generator=gen, dtype=last.dtype)
    loss = (out * w).sum().real + (last * w_last).sum().real
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128, torch.float32])
@pytest.mark.parametrize("batch,length,rest", SHAPES)
@pytest.mark.parametrize("use_h0", [False, True])
def test_chunk_matches_naive(dtype, batch, length, rest, use_h0):
    a, b, h0 = _inputs(batch, length, rest, dtype)
    leaves = [a.requires_grad_(), b.requires_grad_()] + ([h0.requires_grad_()] if use_h0 else [])
    h0_arg = h0 if use_h0 else None
    out_n, last_n = linear_scan(a, b, h0_arg, backend="naive")
    out_c, last_c = linear_scan(a, b, h0_arg, backend="chunk")
    assert out_c.shape == (batch, length, *rest) and last_c.shape == (batch, *rest)
    assert out_c.dtype == dtype and last_c.dtype == dtype
    assert_close(out_c, out_n, msg="states")
    assert_close(last_c, last_n, msg="last state")
    assert_close(last_c, out_c[:, -1], msg="last == h[:, -1]")
    for name, g_c, g_n in zip(
        ["a", "b", "h0"], _grads(out_c, last_c, leaves), _grads(out_n, last_n, leaves)
    ):
        assert_close(g_c, g_n, msg=f"grad {name}")


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_resets_equal_separate_scans(backend):
    batch, length, dim = 3, 53, 4
    a, b, h0 = _inputs(batch, length, (dim,), torch.float64, with_zeros=False)
    reset = torch.rand(batch, length) < 0.1
    reset[0, 0] = True  # a reset at the very first step drops h0
    reset[1] = False  # one sequence without any reset
    out, last = linear_scan(a, b, h0, reset=reset, backend=backend)
    for i in range(batch):
        cuts = [0, *torch.nonzero(reset[i]).flatten().tolist(), length]
        for start, stop in zip(cuts[:-1], cuts[1:]):
            if start == stop:
                continue
            # A segment opened by a reset starts from nothing; the first one from h0.
            seg_h0 = h0[i : i + 1] if start == 0 and not reset[i, 0] else None
            expect, _ = linear_scan(
                a[i : i + 1, start:stop], b[i : i + 1, start:stop], seg_h0, backend="naive"
            )
            assert_close(out[i : i + 1, start:stop], expect, msg=f"row {i} segment {start}:{stop}")
    assert_close(last, out[:, -1])


def test_resets_gradients_match():
    a, b, h0 = _inputs(2, 45, (3,), torch.float64, with_zeros=False)
    reset = torch.rand(2, 45) < 0.15
    leaves = [a.requires_grad_(), b.requires_grad_(), h0.requires_grad_()]
    res_n = linear_scan(a, b, h0, reset=reset, backend="naive")
    res_c = linear_scan(a, b, h0, reset=reset, backend="chunk")
    grads_c = _grads(*res_c, leaves)
    for g_c, g_n in zip(grads_c, _grads(*res_n, leaves)):
        assert_close(g_c, g_n)
    # A decay at a reset step has no effect on anything.
    assert (grads_c[0][reset] == 0).all()


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_closed_forms(backend):
    # a = 1: a running sum from h0.
    b = torch.randn(2, 70, 3, dtype=torch.float64)
    h0 = torch.randn(2, 3, dtype=torch.float64)
    out, _ = linear_scan(torch.ones_like(b), b, h0, backend=backend)
    assert_close(out, h0[:, None] + b.cumsum(1))
    # constant scalar decay c: h_t = c^(t+1) h0 + sum_s c^(t-s) b_s.
    c, length = 0.9, 40
    b = torch.randn(1, length, 2, dtype=torch.float64)
    t = torch.arange(length, dtype=torch.float64)
    powers = torch.tril(c ** (t[:, None] - t[None, :]))
    h0 = torch.randn(1, 2, dtype=torch.float64)
    expect = torch.einsum("ts,bsd->btd", powers, b) + c ** (t + 1)[None, :, None] * h0[:, None]
    out, _ = linear_scan(torch.full_like(b, c), b, h0, backend=backend)
    assert_close(out, expect)


def test_underflowing_products_stay_exact():
    # Products of many small decays underflow to zero in float32: no NaN/Inf, same as the loop.
    a = torch.full((2, 200, 3), 1e-9)
    a[:, ::7] = 0.0
    b = torch.randn(2, 200, 3)
    out_c, _ = linear_scan(a, b, backend="chunk")
    out_n, _ = linear_scan(a, b, backend="naive")
    assert torch.isfinite(out_c).all()
    assert_close(out_c, out_n)


def test_gradcheck_chunk_real_and_complex():
    # T=19 goes through the chunked path (two chunks of 8 plus a remainder).
    for dtype in (torch.float64, torch.complex128):
        a, b, h0 = _inputs(1, 19, (), dtype)
        reset = torch.rand(1, 19) < 0.1
        args = (a.requires_grad_(), b.requires_grad_(), h0.requires_grad_())
        assert torch.autograd.gradcheck(
            lambda a, b, h0, reset=reset: linear_scan(a, b, h0, reset=reset, backend="chunk"), args
        )


def test_gradcheck_naive():
    a, b, h0 = _inputs(1, 6, (2,), torch.float64)
    args = (a.requires_grad_(), b.requires_grad_(), h0.requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, backend="naive"), args)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length,chunk", [(16, 8), (50, 8), (130, 4), (5, 2)])
def test_scan_sweep_kernel(reverse, length, chunk):
    a, b, h0 = _inputs(2, length, (3,), torch.float64)
    got = chunk_module.scan_sweep(a, b, h0, reverse=reverse, chunk_size=chunk)
    # Reverse is the forward recurrence on the time-flipped sequence.
    fa, fb = (a.flip(1), b.flip(1)) if reverse else (a, b)
    expect, _ = linear_scan(fa, fb, h0, backend="naive")
    assert_close(got, expect.flip(1) if reverse else expect)
    # In place into b.
    b2 = b.clone()
    chunk_module.scan_sweep(a, b2, h0, reverse=reverse, chunk_size=chunk, out=b2)
    assert_close(b2, got)


def test_half_precision_is_computed_in_float32():
    a, b, _ = _inputs(2, 40, (4,), torch.float32, with_zeros=False)
    out_n, _ = linear_scan(a, b, backend="naive")
    out_c, _ = linear_scan(a.bfloat16(), b.bfloat16(), backend="chunk")
    assert out_c.dtype == torch.bfloat16
    assert_close(out_c, out_n.bfloat16().float(), dtype=torch.bfloat16)


def test_backend_choice(monkeypatch):
    a, b, _ = _inputs(1, 20, (2,), torch.float64)
    monkeypatch.setenv("MIXERZOO_BACKEND", "naive")
    assert_close(linear_scan(a, b)[0], linear_scan(a, b, backend="chunk")[0])
    with pytest.raises(ValueError, match="not implemented"):
        linear_scan(a, b, backend="mamba_ssm")


def test_clear_errors():
    a = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"b must have shape \[2, 5, 3\]"):
        linear_scan(a, torch.randn(2, 5, 4))
    with pytest.raises(TypeError, match="same dtype"):
        linear_scan(a, a.double())
    with pytest.raises(TypeError, match="floating-point or complex"):
        linear_scan(a.long(), a.long())
    with pytest.raises(ValueError, match=r"h0 must have shape \[2, 3\]"):
        linear_scan(a, a, torch.randn(2, 5))
    with pytest.raises(TypeError, match="reset must be a torch.bool"):
        linear_scan(a, a, reset=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"reset must have shape \[B, T\]"):
        linear_scan(a, a, reset=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least 2 dims"):
        linear_scan(torch.randn(3), torch.randn(3))
    with pytest.raises(ValueError, match="at least one time step"):
        linear_scan(torch.randn(2, 0, 3), torch.randn(2, 0, 3))


def test_wide_steps_use_one_sequential_sweep(monkeypatch):
    # Above SEQUENTIAL_STEP_ELEMENTS values per step the kernel skips chunking; same results.
    monkeypatch.setattr(chunk_module, "SEQUENTIAL_STEP_ELEMENTS", 4)
    assert chunk_module._auto_chunk(300, 4) == 300
    a, b, h0 = _inputs(2, 300, (3,), torch.float64)
    leaves = [a.requires_grad_(), b.requires_grad_(), h0.requires_grad_()]
    res_c = linear_scan(a, b, h0, backend="chunk")
    res_n = linear_scan(a, b, h0, backend="naive")
    assert_close(res_c[0], res_n[0])
    for g_c, g_n in zip(_grads(*res_c, leaves), _grads(*res_n, leaves)):
        assert_close(g_c, g_n)
