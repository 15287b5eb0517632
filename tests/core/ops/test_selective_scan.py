"""selective_scan: chunked scan vs the step-by-step loop (every input's gradient), closed form,
continuation from h0, gradcheck and argument errors; both backends against values written from
the definition (mamba-ssm's reference semantics: a hand-computed case and a scalar double loop);
resets and padding masks (vs naive with every gradient, vs the pieces / real steps run alone);
the optional mamba-ssm backend's dispatch (with a stand-in module)."""

from __future__ import annotations

import math

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
    with pytest.raises(ValueError, match="unknown backend"):
        selective_scan(**args, backend="cuda")


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


# --- expected values from the definition (mamba-ssm's selective_scan_ref semantics) -------------
#
# mamba-ssm's pure-PyTorch reference defines, for u, delta [B, D, L], A [D, N], B, C [B, N, L] or
# [B, G, N, L] (channel d reads group d // (D / G)), D [D], z [B, D, L], delta_bias [D]:
#   dt = softplus(delta + delta_bias) (bias and softplus each when given / asked for),
#   h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t from h = 0, y_t = C_t . h_t,
#   out = (y + D u) * silu(z), last_state = h after the last step.
# The tests below write expected values from that definition, not from either backend.

LN2, LN3 = math.log(2.0), math.log(3.0)


def _hand_case():
    """One channel, N = 1, L = 2, chosen so that every quantity has a closed form:
    delta + delta_bias = (0, ln 3) -> softplus = (ln 2, ln 4) -> decays exp(-dt) = (1/2, 1/4)."""
    f64 = dict(dtype=torch.float64)
    return dict(
        u=torch.tensor([[[1.0, 2.0]]], **f64),
        delta=torch.tensor([[[-0.5, LN3 - 0.5]]], **f64),
        A=torch.tensor([[-1.0]], **f64),
        B=torch.tensor([[[1.0, 2.0]]], **f64),
        C=torch.tensor([[[3.0, -1.0]]], **f64),
        D=torch.tensor([0.5], **f64),
        z=torch.tensor([[[LN3, -LN3]]], **f64),
        delta_bias=torch.tensor([0.5], **f64),
    )


def _silu(v: float) -> float:
    return v / (1.0 + math.exp(-v))


@pytest.mark.parametrize("backend", ["naive", "chunk"])
@pytest.mark.parametrize("start", ["zero", "h0", "reset", "padded"])
def test_hand_computed_two_steps(backend, start):
    """h_1 = dt_1 B_1 u_1 + decay_1 h_0 = ln 2 (+ 4/2), h_2 = h_1 / 4 + ln 4 * 2 * 2;
    out_t = (C_t h_t + 0.5 u_t) silu(z_t); a reset at t = 1 drops h_1; a padded t = 0 keeps h_0."""
    args = _hand_case()
    h0 = 4.0 if start in ("h0", "reset", "padded") else 0.0
    extra = {"h0": torch.full((1, 1, 1), h0, dtype=torch.float64)} if h0 else {}
    if start == "reset":
        extra["reset"] = torch.tensor([[False, True]])
    if start == "padded":
        extra["mask"] = torch.tensor([[False, True]])
    out, last = selective_scan(
        **args, **extra, delta_softplus=True, return_last_state=True, backend=backend
    )
    h1 = h0 / 2 + LN2 * 1.0 * 1.0
    if start == "padded":
        h1 = h0  # the padded step leaves the state as it was
    carried = 0.0 if start == "reset" else h1
    h2 = carried / 4 + 2 * LN2 * 2.0 * 2.0
    out1 = (3.0 * h1 + 0.5 * 1.0) * _silu(LN3)
    out2 = (-1.0 * h2 + 0.5 * 2.0) * _silu(-LN3)
    assert_close(out, torch.tensor([[[out1, out2]]], dtype=torch.float64))
    assert_close(last, torch.tensor([[[h2]]], dtype=torch.float64))


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_hand_computed_groups_and_no_softplus(backend):
    """Two channels, G = 2 groups (channel d reads group d), N = 2, L = 1, raw step sizes:
    h[d, n] = delta_d B[d, n] u_d, out_d = sum_n C[d, n] h[d, n] (no D, no gate)."""
    f64 = dict(dtype=torch.float64)
    u = torch.tensor([[[2.0], [-1.0]]], **f64)
    delta = torch.tensor([[[0.5], [0.25]]], **f64)
    A = -torch.ones(2, 2, **f64)
    B = torch.tensor([[[[1.0], [2.0]], [[3.0], [4.0]]]], **f64)  # [1, G=2, N=2, 1]
    C = torch.tensor([[[[1.0], [-1.0]], [[0.5], [2.0]]]], **f64)
    out, last = selective_scan(u, delta, A, B, C, return_last_state=True, backend=backend)
    # channel 0: h = 0.5 * (1, 2) * 2 = (1, 2), out = 1 - 2 = -1
    # channel 1: h = 0.25 * (3, 4) * -1 = (-0.75, -1), out = -0.375 - 2 = -2.375
    assert_close(out, torch.tensor([[[-1.0], [-2.375]]], **f64))
    assert_close(last, torch.tensor([[[1.0, 2.0], [-0.75, -1.0]]], **f64))


def _double_loop(u, delta, A, B, C, D, z, delta_bias, h0, reset, mask):
    """The definition with Python scalars, one (batch, channel, state, step) at a time."""
    batch, channels, length = u.shape
    d_state = A.shape[1]

    def group(M, b, d, n, t):
        if M.dim() == 3:
            return float(M[b, n, t])
        return float(M[b, d // (channels // M.shape[1]), n, t])

    out = torch.zeros(batch, channels, length, dtype=torch.float64)
    last = torch.zeros(batch, channels, d_state, dtype=torch.float64)
    for b in range(batch):
        for d in range(channels):
            h = [float(h0[b, d, n]) for n in range(d_state)]
            for t in range(length):
                raw = float(delta[b, d, t]) + float(delta_bias[d])
                dt = math.log1p(math.exp(raw))
                if bool(reset[b, t]):
                    h = [0.0] * d_state
                if bool(mask[b, t]):
                    for n in range(d_state):
                        decay = math.exp(dt * float(A[d, n]))
                        h[n] = decay * h[n] + dt * group(B, b, d, n, t) * float(u[b, d, t])
                y = sum(group(C, b, d, n, t) * h[n] for n in range(d_state))
                y += float(D[d]) * float(u[b, d, t])
                out[b, d, t] = y * _silu(float(z[b, d, t]))
            last[b, d] = torch.tensor(h, dtype=torch.float64)
    return out, last


@pytest.mark.parametrize("backend", ["naive", "chunk"])
@pytest.mark.parametrize("b_groups,c_groups", [(None, None), (2, 4), (4, None)])
def test_random_against_the_definition(backend, b_groups, c_groups):
    torch.manual_seed(21)
    args = _inputs(2, 4, 3, 11, groups=b_groups, c_groups=c_groups, full=True)
    if b_groups and not c_groups:
        args["C"] = torch.randn(2, 3, 11, dtype=torch.float64)
    reset = torch.zeros(2, 11, dtype=torch.bool)
    reset[0, [0, 6]] = True
    reset[1, 10] = True
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, [2, 3, 6]] = False
    mask[0, 6] = False  # a reset at a padded step still drops the state
    out, last = selective_scan(
        **args,
        reset=reset,
        mask=mask,
        delta_softplus=True,
        return_last_state=True,
        backend=backend,
    )
    want_out, want_last = _double_loop(**args, reset=reset, mask=mask)
    assert_close(out, want_out)
    assert_close(last, want_last)


# --- resets and padding masks: all backends vs naive, and vs the pieces run alone ---------------

# (batch, D, N, L, reset steps per row): at t = 0, at the end, several inside one chunk of the
# chunked scan (8 steps per chunk below 256 steps), exactly on chunk boundaries, odd L, batch 1.
RESET_CASES = [
    (1, 3, 2, 19, {0: [0, 18]}),
    (2, 5, 3, 37, {0: [1, 2, 5, 7], 1: [8, 16, 24, 32]}),
    (2, 4, 2, 9, {1: [0, 3, 4, 8]}),
    (1, 2, 4, 300, {0: [0, 7, 8, 9, 128, 256, 299]}),
]


def _reset(batch, length, steps):
    reset = torch.zeros(batch, length, dtype=torch.bool)
    for row, ts in steps.items():
        reset[row, ts] = True
    return reset


def _grads_of_everything(leaves, out, last):
    gen = torch.Generator().manual_seed(5)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum()
    loss = loss + (last * torch.randn(last.shape, generator=gen, dtype=last.dtype)).sum()
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


@pytest.mark.parametrize("batch,dim,d_state,length,steps", RESET_CASES)
@pytest.mark.parametrize("with_mask", [False, True], ids=["reset", "reset+mask"])
def test_reset_chunk_matches_naive(batch, dim, d_state, length, steps, with_mask):
    args = _inputs(batch, dim, d_state, length, groups=None, full=True)
    reset = _reset(batch, length, steps)
    mask = torch.rand(batch, length, generator=torch.Generator().manual_seed(1)) > 0.3
    flags = {"reset": reset, "mask": mask if with_mask else None}
    results = {}
    for backend in ("naive", "chunk"):
        leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
        out, last = selective_scan(
            **leaves, **flags, delta_softplus=True, return_last_state=True, backend=backend
        )
        results[backend] = (out, last, _grads_of_everything(leaves, out, last))
    (out_n, last_n, g_n), (out_c, last_c, g_c) = results["naive"], results["chunk"]
    assert_close(out_c, out_n, msg="out")
    assert_close(last_c, last_n, msg="last state")
    for name in g_n:
        assert_close(g_c[name], g_n[name], msg=f"grad of {name}")


@pytest.mark.parametrize("segment_elements", [1, 7, 64])
def test_reset_across_segments(monkeypatch, segment_elements):
    """Resets at segment starts and inside segments of the chunk path's bounded-memory walk."""
    monkeypatch.setattr(chunk_module, "SEGMENT_ELEMENTS", segment_elements)
    args = _inputs(2, 3, 2, 23, full=True)
    reset = _reset(2, 23, {0: [0, 5, 10, 11], 1: [3, 22]})
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    got = {}
    for backend in ("naive", "chunk"):
        out, last = selective_scan(
            **leaves, reset=reset, delta_softplus=True, return_last_state=True, backend=backend
        )
        got[backend] = (out, last, _grads_of_everything(leaves, out, last))
    for i, label in enumerate(["out", "last"]):
        assert_close(got["chunk"][i], got["naive"][i], msg=label)
    for name in leaves:
        assert_close(got["chunk"][2][name], got["naive"][2][name], msg=f"grad of {name}")


def _slice(args, t0, t1, row):
    per_step = ("u", "delta", "z", "B", "C")
    return {
        k: (v[row : row + 1, ..., t0:t1] if k in per_step else v[row : row + 1] if k == "h0" else v)
        for k, v in args.items()
    }


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_reset_equals_the_pieces_run_alone(backend):
    """Each row cut at its resets: the first piece from h0 (unless reset at 0), the rest from a
    zero state; outputs, the last state, and no gradient across a reset."""
    args = _inputs(2, 3, 2, 20, full=True)
    steps = {0: [0, 6, 7], 1: [13]}
    reset = _reset(2, 20, steps)
    u = args["u"].clone().requires_grad_()
    out, last = selective_scan(
        **{**args, "u": u},
        reset=reset,
        delta_softplus=True,
        return_last_state=True,
        backend=backend,
    )
    for row, ts in steps.items():
        cuts = [0, *[t for t in ts if t > 0], 20]
        for i, (t0, t1) in enumerate(zip(cuts[:-1], cuts[1:])):
            piece = _slice(args, t0, t1, row)
            if i > 0 or 0 in ts:
                piece["h0"] = None
            y, h = selective_scan(
                **piece, delta_softplus=True, return_last_state=True, backend=backend
            )
            assert_close(out[row : row + 1, :, t0:t1], y, msg=f"row {row} piece {i}")
        assert_close(last[row : row + 1], h, msg=f"row {row} last state")
    (grad,) = torch.autograd.grad(out[0, :, 6:].sum(), u)
    assert grad[0, :, :6].abs().max() == 0 and grad[0, :, 6:].abs().max() > 0


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_mask_equals_the_real_steps_alone(backend):
    """Padded steps (holes and trailing padding) with junk inputs: the real outputs and the last
    state equal a scan over the real steps only, and junk reaches no real output."""
    args = _inputs(2, 3, 2, 15, groups=None, full=True)
    mask = torch.ones(2, 15, dtype=torch.bool)
    mask[0, [2, 3, 9]] = False
    mask[1, 11:] = False
    for k in ("u", "delta", "z", "B", "C"):
        # Junk at the padded steps: large values that would dominate any leak.
        args[k] = torch.where(mask.view(2, *[1] * (args[k].dim() - 2), 15), args[k], 50 * args[k])
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    out, last = selective_scan(
        **leaves, mask=mask, delta_softplus=True, return_last_state=True, backend=backend
    )
    for row in range(2):
        keep = mask[row]
        real = {
            k: (v[row : row + 1][..., keep] if k in ("u", "delta", "z", "B", "C") else v)
            for k, v in args.items()
        }
        real["h0"] = args["h0"][row : row + 1]
        y, h = selective_scan(**real, delta_softplus=True, return_last_state=True, backend=backend)
        assert_close(out[row : row + 1][..., keep], y, msg=f"row {row}")
        assert_close(last[row : row + 1], h, msg=f"row {row} last state")
    real_out = (out * mask[:, None, :]).sum() + last.sum()
    grads = torch.autograd.grad(real_out, [leaves[k] for k in ("u", "delta", "z", "B", "C")])
    for grad in grads:
        padded = (~mask).view(2, *[1] * (grad.dim() - 2), 15).expand_as(grad)
        assert grad[padded].abs().max() == 0 and grad[~padded].abs().max() > 0


def test_reset_and_mask_argument_errors():
    args = _inputs(2, 3, 2, 6, full=False)
    with pytest.raises(TypeError, match=r"reset must be a torch.bool tensor of shape \[B, L\]"):
        selective_scan(**args, reset=torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"mask must have shape \[B, L\] = \[2, 6\]"):
        selective_scan(**args, mask=torch.ones(2, 5, dtype=torch.bool))


# --- the optional mamba-ssm backend: dispatch, tested with a stand-in module ---------------------


class _FakeMambaSSM:
    """Stands in for ``mamba_ssm.ops.selective_scan_interface``: records each call and answers with
    the naive scan (mamba-ssm's fused kernel needs CUDA, which the test machines lack)."""

    def __init__(self):
        self.calls = []

    def selective_scan_fn(self, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False):  # fmt: skip
        self.calls.append(
            dict(A=A, D=D, delta=delta, delta_bias=delta_bias, delta_softplus=delta_softplus)
        )
        return selective_scan(
            u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
            return_last_state=return_last_state, backend="naive",
        )  # fmt: skip


@pytest.fixture
def fake_mamba_ssm(monkeypatch):
    """An importable ``mamba_ssm`` package and a device check that says "CUDA"."""
    import sys
    import types

    from mixerzoo.core.ops import backend as backend_module

    fake = _FakeMambaSSM()
    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = fake.selective_scan_fn
    monkeypatch.setitem(sys.modules, "mamba_ssm", types.ModuleType("mamba_ssm"))
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops", types.ModuleType("mamba_ssm.ops"))
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", interface)
    monkeypatch.setattr(backend_module, "_is_cuda", lambda device: True)
    monkeypatch.delenv("MIXERZOO_BACKEND", raising=False)
    return fake


def test_mamba_ssm_only_when_asked_for(fake_mamba_ssm, monkeypatch):
    args = _inputs(2, 4, 3, 9, full=True, dtype=torch.float32)
    args.pop("h0")
    want = selective_scan(**args, delta_softplus=True, backend="naive")
    # Installed and "on CUDA", but not asked for: our own scan runs.
    assert_close(selective_scan(**args, delta_softplus=True), want)
    assert fake_mamba_ssm.calls == []
    # Asked for by argument, then by the environment switch.
    assert_close(selective_scan(**args, delta_softplus=True, backend="mamba_ssm"), want)
    monkeypatch.setenv("MIXERZOO_BACKEND", "mamba_ssm")
    assert_close(selective_scan(**args, delta_softplus=True), want)
    assert len(fake_mamba_ssm.calls) == 2
    call = fake_mamba_ssm.calls[0]
    assert call["A"].dtype == call["D"].dtype == call["delta_bias"].dtype == torch.float32
    assert call["delta_softplus"] is True


def test_mamba_ssm_with_a_mask_gets_zeroed_step_sizes(fake_mamba_ssm):
    args = _inputs(2, 4, 3, 9, full=True, dtype=torch.float32)
    args.pop("h0")
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 3:5] = False
    mask[1, 7:] = False
    out, last = selective_scan(
        **args, mask=mask, delta_softplus=True, return_last_state=True, backend="mamba_ssm"
    )
    want, want_last = selective_scan(
        **args, mask=mask, delta_softplus=True, return_last_state=True, backend="naive"
    )
    assert_close(out, want)
    assert_close(last, want_last)
    (call,) = fake_mamba_ssm.calls
    assert call["delta_bias"] is None and call["delta_softplus"] is False
    delta = call["delta"].transpose(1, 2)  # [B, L, D]
    assert torch.all(delta[~mask] == 0) and torch.all(delta[mask] > 0)


def test_mamba_ssm_refuses_what_its_kernel_lacks(fake_mamba_ssm, monkeypatch):
    args = _inputs(1, 2, 2, 5, full=True, dtype=torch.float32)
    with pytest.raises(ValueError, match="takes no h0; use backend='chunk'"):
        selective_scan(**args, backend="mamba_ssm")
    args.pop("h0")
    reset = torch.zeros(1, 5, dtype=torch.bool)
    reset[0, 2] = True
    with pytest.raises(ValueError, match="takes no reset"):
        selective_scan(**args, reset=reset, backend="mamba_ssm")
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        selective_scan(**{k: v.double() for k, v in args.items()}, backend="mamba_ssm")
    # Chosen by the environment, a call with resets runs on our own scan instead.
    monkeypatch.setenv("MIXERZOO_BACKEND", "mamba_ssm")
    got = selective_scan(**args, reset=reset)
    assert_close(got, selective_scan(**args, reset=reset, backend="naive"))
    assert fake_mamba_ssm.calls == []


def test_mamba_ssm_errors_without_cuda_or_without_the_package(monkeypatch):
    import sys

    args = _inputs(1, 2, 2, 5, full=False, dtype=torch.float32)
    monkeypatch.delenv("MIXERZOO_BACKEND", raising=False)
    with pytest.raises(RuntimeError, match="needs CUDA tensors, got cpu tensors"):
        selective_scan(**args, backend="mamba_ssm")
    from mixerzoo.core.ops import backend as backend_module

    monkeypatch.setattr(backend_module, "_is_cuda", lambda device: True)
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # an import of it raises ImportError
    with pytest.raises(ImportError, match="pip install mamba-ssm"):
        selective_scan(**args, backend="mamba_ssm")
    monkeypatch.setenv("MIXERZOO_BACKEND", "mamba_ssm")
    with pytest.raises(ImportError, match="needs the optional package 'mamba_ssm'"):
        selective_scan(**args)


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_backward_under_activation_checkpointing(backend):
    """Inside torch.utils.checkpoint (timm's set_grad_checkpointing) the backward unpacks its saved
    tensors exactly once and gives the gradients of the plain run."""
    from torch.utils.checkpoint import checkpoint

    args = _inputs(2, 4, 3, 9)
    plain = {k: v.clone().requires_grad_() for k, v in args.items()}
    ckpt = {k: v.clone().requires_grad_() for k, v in args.items()}
    selective_scan(**plain, delta_softplus=True, backend=backend).square().sum().backward()

    def run(*values):
        return selective_scan(**dict(zip(ckpt, values)), delta_softplus=True, backend=backend)

    checkpoint(run, *ckpt.values(), use_reentrant=False).square().sum().backward()
    for name in args:
        assert_close(ckpt[name].grad, plain[name].grad, msg=f"grad of {name}")
