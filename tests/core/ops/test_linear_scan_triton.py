"""linear_scan's fused Triton kernels (on the GPU, or interpreted on the CPU: tests/conftest.py)
against the step-by-step loop: outputs, last states and the gradients of a, b and h0, real and
complex, one chunk and several (the parallel carry), resets at t = 0 and at the end, non-contiguous
inputs; half precision; bad input refused before any launch; real sizes on a GPU."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core.ops.linear_scan.naive import linear_scan_naive
from mixerzoo.core.ops.linear_scan.triton import linear_scan_triton
from mixerzoo.core.testing import assert_close

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


# (B, T, trailing): T = 1, odd T, trailing dims none / one / two (not powers of two), batch 1.
SHAPES = [(2, 1, (3,)), (1, 7, ()), (2, 13, (3, 5))]


def _inputs(batch, length, rest, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
    # Decays in (-1.1, 1.1), negative and slightly expanding ones too, and exact zeros.
    a = torch.rand(batch, length, *rest, generator=g, dtype=real) * 2.2 - 1.1
    if dtype.is_complex:
        a = torch.polar(a.abs(), torch.rand(a.shape, generator=g, dtype=real) * 6.3)
    a = a.masked_fill(torch.rand(a.shape, generator=g) < 0.05, 0.0).to(dtype)
    b = torch.randn(batch, length, *rest, generator=g, dtype=real)
    h0 = torch.randn(batch, *rest, generator=g, dtype=real)
    if dtype.is_complex:
        b = torch.complex(b, torch.randn(b.shape, generator=g, dtype=real))
        h0 = torch.complex(h0, torch.randn(h0.shape, generator=g, dtype=real))
    return a, b.to(dtype), h0.to(dtype)


def _resets(batch, length):
    """Resets at t = 0 (row 0), at the last step (last row) and one in the middle."""
    reset = torch.zeros(batch, length, dtype=torch.bool)
    reset[0, 0] = True
    reset[-1, -1] = True
    reset[-1, length // 2] = True
    return reset


def _run(fn, a, b, h0, reset, device, weights):
    leaves = [x.to(device).requires_grad_() for x in (a, b, h0) if x is not None]
    h0_leaf = leaves[2] if h0 is not None else None
    out, last = fn(leaves[0], leaves[1], h0_leaf, None if reset is None else reset.to(device))
    loss = sum((x * w.to(device)).sum().real for x, w in zip((out, last), weights))
    grads = torch.autograd.grad(loss, leaves)
    return [t.detach().cpu() for t in (out, last, *grads)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("batch,length,rest", SHAPES)
@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("with_h0,with_reset", [(False, False), (True, True)])
def test_triton_equals_naive_with_gradients(dtype, batch, length, rest, chunk_size, with_h0,
                                            with_reset):  # fmt: skip
    a, b, h0 = _inputs(batch, length, rest, dtype, seed=length)
    h0 = h0 if with_h0 else None
    reset = _resets(batch, length) if with_reset else None
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(a.shape, generator=g).to(dtype), torch.randn(b[:, 0].shape).to(dtype)]

    def kernel(*args):
        return linear_scan_triton(*args, chunk_size=chunk_size)

    got = _run(kernel, a, b, h0, reset, DEVICE, weights)
    want = _run(linear_scan_naive, a, b, h0, reset, torch.device("cpu"), weights)
    labels = ["h", "h_last", "grad a", "grad b", "grad h0"]
    for label, x, y in zip(labels, got, want):
        assert x.dtype == y.dtype, label
        assert_close(x, y, msg=f"{label} ({dtype}, chunk {chunk_size})")


def test_non_contiguous_inputs_and_no_grad():
    """Transposed views in, and the no-gradient path, give the loop's values."""
    a, b, h0 = _inputs(3, 11, (4, 6), torch.float64, seed=3)
    # Same values, other memory layouts: a transposed buffer and every other step of a longer one.
    a_t = a.transpose(2, 3).contiguous().transpose(2, 3)
    b_t = torch.stack([b, torch.zeros_like(b)], dim=2).flatten(1, 2)[:, ::2]
    assert not a_t.is_contiguous() and not b_t.is_contiguous()
    reset = _resets(3, 11)
    with torch.no_grad():
        out, last = linear_scan_triton(
            a_t.to(DEVICE), b_t.to(DEVICE), h0.to(DEVICE), reset.to(DEVICE), chunk_size=4
        )
    want, want_last = linear_scan_naive(a, b, h0, reset)
    assert_close(out.cpu(), want)
    assert_close(last.cpu(), want_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.complex64])
def test_lower_precision_inputs(dtype):
    """float32 arithmetic inside; outputs and gradients keep the input dtype and agree with the
    float32 loop on the same (rounded) inputs within that dtype's tolerance."""
    a, b, h0 = _inputs(2, 9, (5,), torch.complex64 if dtype.is_complex else torch.float32, seed=4)
    a, b, h0 = a.to(dtype), b.to(dtype), h0.to(dtype)
    reset = _resets(2, 9)
    wide = torch.complex64 if dtype.is_complex else torch.float32
    weights = [torch.randn(a.shape).to(wide), torch.randn(b[:, 0].shape).to(wide)]
    got = _run(lambda *x: linear_scan_triton(*x, chunk_size=4), a, b, h0, reset, DEVICE, weights)
    want = _run(
        linear_scan_naive, a.to(wide), b.to(wide), h0.to(wide), reset, torch.device("cpu"),
        weights,
    )  # fmt: skip
    for label, x, y in zip(["h", "h_last", "grad a", "grad b", "grad h0"], got, want):
        assert x.dtype == dtype, label
        assert_close(x.to(wide), y, dtype=dtype, msg=label)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda a, b, h0, r: (a.long(), b.long(), h0, r), TypeError, "dtype torch.int64"),
        (lambda a, b, h0, r: (a, b[:, :-1], h0, r), ValueError, "one shape and dtype"),
        (lambda a, b, h0, r: (a, b.double(), h0, r), ValueError, "one shape and dtype"),
        (lambda a, b, h0, r: (a, b, h0[:, :2], r), ValueError, "h0 must be"),
        (lambda a, b, h0, r: (a, b, h0, r.int()), ValueError, "reset must be a bool"),
        (lambda a, b, h0, r: (a, b, h0, r[:, 1:]), ValueError, "reset must be a bool"),
    ],
)
def test_bad_input_is_refused_before_launch(change, error, match):
    a, b, h0 = _inputs(2, 5, (3,), torch.float32)
    args = change(a, b, h0, _resets(2, 5))
    with pytest.raises(error, match=match):
        linear_scan_triton(*(x.to(DEVICE) for x in args))


def test_on_cpu_without_interpreter_says_what_to_do(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    a, b, _ = _inputs(1, 3, (2,), torch.float32)
    with pytest.raises(RuntimeError, match="needs CUDA tensors.*backend='chunk'"):
        linear_scan_triton(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
@pytest.mark.parametrize("shape", [(2, 4096, 256), (2, 1024, 256, 16), (8, 2048, 64)])
@pytest.mark.parametrize("with_reset", [False, True])
def test_real_sizes_on_gpu(dtype, shape, with_reset):
    """The compiled kernels (one chunk and the parallel carry, picked by size) at the issue's
    sizes, against the loop run on the same GPU."""
    a, b, h0 = _inputs(shape[0], shape[1], shape[2:], dtype, seed=7)
    # Contracting decays (|a| < 1): 4096 products of |a| up to 1.1 would overflow.
    a = a / 1.1
    reset = _resets(shape[0], shape[1]) if with_reset else None
    weights = [torch.randn(a.shape).to(dtype), torch.randn(b[:, 0].shape).to(dtype)]
    got = _run(linear_scan_triton, a, b, h0, reset, DEVICE, weights)
    want = _run(linear_scan_naive, a, b, h0, reset, DEVICE, weights)
    for label, x, y in zip(["h", "h_last", "grad a", "grad b", "grad h0"], got, want):
        assert_close(x, y, rtol=1e-3, atol=1e-4, msg=label)
