"""selective_scan: chunked scan vs the step-by-step loop (every input's gradient), closed form,
continuation from h0, gradcheck and argument errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core.ops import linear_scan, selective_scan
from mixerzoo.core.ops.selective_scan import chunk as chunk_module
from mixerzoo.core.testing import assert_close


def _inputs(
    batch, dim, d_state, length, groups=None, dtype=torch.float64, full=True, c_groups=None
):
    """Inputs in the ranges Mamba sees (negative A, small positive steps)."""
    bc_shape = (batch, groups, d_state, length) if groups else (batch, d_state, length)
    c_shape = (batch, c_groups, d_state, length) if c_groups else bc_shape
    args = {
        "u": torch.randn(batch, dim, length, dtype=dtype),
        "delta": torch.rand(batch, dim, length, dtype=dtype) * 0.5,
        "A": -torch.rand(dim, d_state, dtype=dtype) * 3 - 0.1,
        "B": torch.randn(bc_shape, dtype=dtype),
        "C": torch.randn(c_shape, dtype=dtype),
    }
    if full:
        args.update(
            D=torch.randn(dim, dtype=dtype),
            z=torch.randn(batch, dim, length, dtype=dtype),
            delta_bias=torch.randn(dim, dtype=dtype) * 0.5,
            h0=torch.randn(batch, dim, d_state, dtype=dtype),
        )
    return args


def _compare(args, softplus, dtype=None, **tol):
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    results = {}
    for backend in ("naive", "chunk"):
        out, last = selective_scan(
            **leaves, delta_softplus=softplus, return_last_state=True, backend=backend
        )
        gen = torch.Generator().manual_seed(3)
        loss = (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum()
        loss = loss + (last * torch.randn(last.shape, generator=gen, dtype=last.dtype)).sum()
        grads = torch.autograd.grad(loss, list(leaves.values()))
        results[backend] = (out, last, dict(zip(leaves, grads)))
    (out_n, last_n, grads_n), (out_c, last_c, grads_c) = results["naive"], results["chunk"]
    assert_close(out_c, out_n, dtype=dtype, msg="out", **tol)
    assert_close(last_c, last_n, dtype=dtype, msg="last state", **tol)
    for name in leaves:
        assert_close(grads_c[name], grads_n[name], dtype=dtype, msg=f"grad of {name}", **tol)
    return out_c, last_c


# (batch, D, N, L, groups): L=1, odd L, L not a multiple of the chunk size, L long enough for the
# chunked kernel to recurse; batch 1; non-power-of-two D and N; grouped B/C.
CASES = [
    (2, 3, 1, 1, None),
    (1, 5, 3, 17, None),
    (2, 6, 4, 37, 3),
    (1, 4, 2, 100, 2),
    (2, 3, 5, 300, None),
]


@pytest.mark.parametrize("batch,dim,d_state,length,groups", CASES)
@pytest.mark.parametrize("full", [False, True], ids=["plain", "D-z-bias-softplus-h0"])
def test_chunk_matches_naive(batch, dim, d_state, length, groups, full):
    args = _inputs(batch, dim, d_state, length, groups, full=full)
    _compare(args, softplus=full)


@pytest.mark.parametrize("segment_elements", [1, 7, 64])
def test_chunk_matches_naive_across_segments(monkeypatch, segment_elements):
    # Tiny segments: many segments, remainders, states and gradients carried across them.
    monkeypatch.setattr(chunk_module, "SEGMENT_ELEMENTS", segment_elements)
    args = _inputs(2, 3, 2, 23, full=True)
    _compare(args, softplus=True)


def test_chunk_matches_naive_float32():
    args = _inputs(2, 8, 4, 70, groups=2, dtype=torch.float32)
    out, last = _compare(args, softplus=True, rtol=1e-4, atol=1e-4)
    assert out.dtype == torch.float32 and last.dtype == torch.float32


def test_b_and_c_with_different_groups():
    args = _inputs(2, 6, 3, 25, groups=None, c_groups=3)
    _compare(args, softplus=True)


def test_output_dtype_follows_u_and_state_is_float32():
    args = {k: v.to(torch.bfloat16) for k, v in _inputs(1, 4, 2, 20, dtype=torch.float32).items()}
    for backend in ("naive", "chunk"):
        out, last = selective_scan(**args, return_last_state=True, backend=backend)
        assert out.dtype == torch.bfloat16 and last.dtype == torch.float32


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_closed_form_single_state(backend):
    # N = 1, constant step and A, B = C = 1: y_t = sum_{s<=t} exp(d a)^(t-s) d u_s (+ D u_t).
    length, d, a = 30, 0.3, -0.7
    u = torch.randn(1, 1, length, dtype=torch.float64)
    ones = torch.ones(1, 1, length, dtype=torch.float64)
    D = torch.tensor([0.5], dtype=torch.float64)
    y = selective_scan(
        u,
        torch.full_like(u, d),
        torch.tensor([[a]], dtype=torch.float64),
        ones,
        ones,
        D=D,
        backend=backend,
    )
    t = torch.arange(length, dtype=torch.float64)
    kernel = torch.tril(torch.exp(d * a * (t[:, None] - t[None, :])))
    assert_close(y[0, 0], kernel @ (d * u[0, 0]) + 0.5 * u[0, 0])


def test_matches_linear_scan_formulation():
    # The same recurrence written as an elementwise linear scan over [B, L, D, N].
    args = _inputs(2, 3, 4, 29, full=False)
    delta = F.softplus(args["delta"])
    decay = torch.exp(delta.transpose(1, 2)[..., None] * args["A"])
    drive = (delta * args["u"]).transpose(1, 2)[..., None] * args["B"].transpose(1, 2)[:, :, None]
    states, last = linear_scan(decay, drive, backend="naive")
    expect = (states * args["C"].transpose(1, 2)[:, :, None]).sum(-1).transpose(1, 2)
    for backend in ("naive", "chunk"):
        out, got_last = selective_scan(
            **args, delta_softplus=True, return_last_state=True, backend=backend
        )
        assert_close(out, expect)
        assert_close(got_last, last)


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_h0_continues_a_sequence(backend):
    args = _inputs(2, 4, 3, 41, full=True)
    args["h0"] = None
    whole, last = selective_scan(
        **args, delta_softplus=True, return_last_state=True, backend=backend
    )
    cut = 17
    first = {
        k: (v[..., :cut] if k in ("u", "delta", "z", "B", "C") else v) for k, v in args.items()
    }
    second = {
        k: (v[..., cut:] if k in ("u", "delta", "z", "B", "C") else v) for k, v in args.items()
    }
    y1, h1 = selective_scan(**first, delta_softplus=True, return_last_state=True, backend=backend)
    second["h0"] = h1
    y2, h2 = selective_scan(**second, delta_softplus=True, return_last_state=True, backend=backend)
    assert_close(torch.cat([y1, y2], dim=-1), whole)
    assert_close(h2, last)


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_gradcheck(monkeypatch, backend):
    # Small segments so the chunk backward also carries gradients between segments.
    monkeypatch.setattr(chunk_module, "SEGMENT_ELEMENTS", 40)
    args = _inputs(1, 2, 2, 19 if backend == "chunk" else 4, groups=2, full=True)
    names = list(args)
    leaves = tuple(v.requires_grad_() for v in args.values())

    def fn(*values):
        out, last = selective_scan(
            **dict(zip(names, values)), delta_softplus=True, return_last_state=True, backend=backend
        )
        return out, last

    assert torch.autograd.gradcheck(fn, leaves)


def test_backend_choice(monkeypatch):
    args = _inputs(1, 2, 2, 9, full=False)
    monkeypatch.setenv("MIXERZOO_BACKEND", "naive")
    assert_close(selective_scan(**args), selective_scan(**args, backend="chunk"))
    with pytest.raises(ValueError, match="not implemented"):
        selective_scan(**args, backend="triton")


def test_clear_errors():
    args = _inputs(2, 6, 3, 10, full=False)

    def call(**override):
        return selective_scan(**{**args, **override})

    with pytest.raises(ValueError, match=r"delta must have shape \[2, 6, 10\]"):
        call(delta=torch.rand(2, 6, 9, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"A must have shape \[6, N\]"):
        call(A=-torch.rand(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"B must have shape \[2, 3, 10\]"):
        call(B=torch.randn(2, 4, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="groups of C .* must divide"):
        call(C=torch.randn(2, 4, 3, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="time-invariant B"):
        call(B=torch.randn(6, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="complex A is not supported"):
        call(A=torch.randn(6, 3, dtype=torch.complex128))
    with pytest.raises(TypeError, match="u must be a floating-point"):
        call(u=torch.ones(2, 6, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"h0 must have shape \[2, 6, 3\]"):
        call(h0=torch.zeros(2, 6, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"D must have shape \[6\]"):
        call(D=torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least one time step"):
        selective_scan(
            torch.randn(1, 2, 0),
            torch.randn(1, 2, 0),
            -torch.rand(2, 3),
            torch.randn(1, 3, 0),
            torch.randn(1, 3, 0),
        )


def test_segment_length_bounds_memory():
    assert (
        chunk_module._segment_length(2, 256, 16, 4096) * 2 * 256 * 16
        <= chunk_module.SEGMENT_ELEMENTS
    )
    assert chunk_module._segment_length(64, 4096, 64, 10) == 1
    assert chunk_module._segment_length(1, 2, 2, 7) == 7
