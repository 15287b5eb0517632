"""2-D selective SSM scan: loop+scan (both loop axes) and the fused Triton kernels (on the GPU, or
interpreted on the CPU) vs the naive double loop (outputs, final states, gradients of every
input), gradcheck, the decoupled closed form (A2 = A3 = 0 gives two
1-D selective SSMs), a 2 x 2 grid written out by hand (the coupling neighbours), causality in time
and across variates, state carried over time, and padding masks over time (every backend vs the
real time steps alone, and vs naive with the gradients of every input)."""

from __future__ import annotations

import math

import pytest
import torch

from mixerzoo.core.ops.ssm2d import ssm2d_scan
from mixerzoo.core.ops.ssm2d.chunk import ssm2d_scan_chunk
from mixerzoo.core.ops.ssm2d.naive import ssm2d_scan_naive
from mixerzoo.core.ops.ssm2d.triton import ssm2d_scan_triton
from mixerzoo.core.testing import assert_close

# The Triton backend runs on the GPU when there is one, else interpreted (tests/conftest.py).
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

SHAPES = [(1, 1, 1, 1, 1), (2, 5, 3, 3, 2), (1, 7, 4, 2, 3), (2, 3, 6, 5, 1)]  # (B, T, V, E, N)
NAMES = ["x", "dt1", "dt2", "A1", "A2", "A3", "A4", "B1", "B2", "C1", "C2", "h1_0", "h2_0"]


def _inputs(b, t, v, e, n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=dtype)

    x = rnd(b, t, v, e)
    dt1 = torch.nn.functional.softplus(rnd(b, t, v, e)) * 0.5
    dt2 = torch.nn.functional.softplus(rnd(b, t, v, e)) * 0.5
    A1 = -torch.rand(e, n, generator=g, dtype=dtype) - 0.5
    A4 = -torch.rand(e, n, generator=g, dtype=dtype) - 0.5
    A2, A3 = rnd(e, n, scale=0.5), rnd(e, n, scale=0.5)
    B1, B2, C1, C2 = (rnd(b, t, v, n) for _ in range(4))
    h1_0, h2_0 = rnd(b, v, e, n), rnd(b, v, e, n)
    return [x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, h1_0, h2_0]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("loop_over", ["variates", "time", None])
def test_chunk_equals_naive_with_gradients(shape, loop_over):
    inputs = [p.requires_grad_() for p in _inputs(*shape, seed=sum(shape))]
    wy = torch.randn(*shape[:4], dtype=torch.float64)
    wh = torch.randn(shape[0], shape[2], shape[3], shape[4], dtype=torch.float64)
    out = {}
    for name, fn, kw in (
        ("naive", ssm2d_scan_naive, {}),
        ("chunk", ssm2d_scan_chunk, {"loop_over": loop_over}),
    ):
        y, h1, h2 = fn(*inputs, **kw)
        loss = (y * wy).sum() + (h1 * wh).sum() + (h2 * wh.flip(1)).sum()
        out[name] = (y, h1, h2, *torch.autograd.grad(loss, inputs, materialize_grads=True))
    labels = ["y", "h1_last", "h2_last"] + [f"grad {n}" for n in NAMES]
    for label, got, want in zip(labels, out["chunk"], out["naive"]):
        assert_close(got, want, msg=label)


# (B, T, V, E, N): the shapes above, and one whose channels span three kernel blocks with padded
# lanes in both the channel and the state tile (N = 5 pads to 8, E = 40 to 48).
TRITON_SHAPES = SHAPES + [(2, 4, 3, 40, 5)]


@pytest.mark.parametrize("shape", TRITON_SHAPES)
def test_triton_equals_naive_with_gradients(shape):
    inputs = _inputs(*shape, seed=sum(shape))
    wy = torch.randn(*shape[:4], dtype=torch.float64)
    wh = torch.randn(shape[0], shape[2], shape[3], shape[4], dtype=torch.float64)
    out = {}
    for name, fn, device in (
        ("naive", ssm2d_scan_naive, torch.device("cpu")),
        ("triton", ssm2d_scan_triton, DEVICE),
    ):
        leaves = [p.to(device).requires_grad_() for p in inputs]
        y, h1, h2 = fn(*leaves)
        loss = (y * wy.to(device)).sum() + (h1 * wh.to(device)).sum()
        loss = loss + (h2 * wh.flip(1).to(device)).sum()
        grads = torch.autograd.grad(loss, leaves)
        out[name] = [t.cpu() for t in (y, h1, h2, *grads)]
    labels = ["y", "h1_last", "h2_last"] + [f"grad {n}" for n in NAMES]
    for label, got, want in zip(labels, out["triton"], out["naive"]):
        assert_close(got, want, msg=label)
    # Without gradients the kernel keeps no states; the outputs are the same.
    with torch.no_grad():
        y, h1, h2 = ssm2d_scan_triton(*(p.to(DEVICE) for p in inputs))
    for got, want in zip((y, h1, h2), out["naive"]):
        assert_close(got.cpu(), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_low_precision_inputs(dtype):
    """float32 arithmetic inside whatever the input dtype; outputs and gradients keep it."""
    inputs = _inputs(2, 6, 3, 4, 3, seed=2, dtype=torch.float32)
    leaves = [p.to(DEVICE, dtype).requires_grad_() for p in inputs]
    y, (h1, h2) = ssm2d_scan(*leaves[:11], state=tuple(leaves[11:]), backend="triton")
    assert y.dtype == h1.dtype == h2.dtype == dtype
    (y.float().sum() + h1.float().sum()).backward()
    assert all(p.grad.dtype == dtype for p in leaves)
    # Against the float32 reference on the (rounded) inputs the kernel saw.
    rounded = [p.detach().float().cpu() for p in leaves]
    y_ref, (h1_ref, _) = ssm2d_scan(*rounded[:11], state=tuple(rounded[11:]), backend="naive")
    assert_close(y.float().cpu(), y_ref, dtype=dtype)
    assert_close(h1.float().cpu(), h1_ref, dtype=dtype)


def test_triton_on_cpu_without_interpreter_says_what_to_do(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    inputs = _inputs(1, 2, 2, 2, 1)
    with pytest.raises(RuntimeError, match="needs CUDA tensors.*backend='chunk'"):
        ssm2d_scan(*inputs[:11], backend="triton")


@pytest.mark.parametrize("backend", ["naive", "chunk", "triton"])
def test_gradcheck(backend):
    device = DEVICE if backend == "triton" else torch.device("cpu")
    inputs = [p.to(device).requires_grad_() for p in _inputs(1, 2, 2, 2, 1, seed=5)]

    def fn(*args):
        y, (h1, h2) = ssm2d_scan(*args[:11], state=(args[11], args[12]), backend=backend)
        return y, h1, h2

    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def _selective_1d(a, inp):
    """h_k = a_k h_{k-1} + inp_k along dim 0 (a plain loop), from a zero state."""
    h, out = torch.zeros_like(inp[0]), []
    for k in range(inp.shape[0]):
        h = a[k] * h + inp[k]
        out.append(h)
    return torch.stack(out)


def test_decoupled_closed_form():
    """With A2 = A3 = 0 the grid splits into a ZOH selective SSM along time (h1, per variate) and
    one along variates (h2, per time step)."""
    x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, _, _ = _inputs(2, 6, 4, 3, 2, seed=7)
    A2, A3 = torch.zeros_like(A2), torch.zeros_like(A3)
    y, _ = ssm2d_scan(x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, backend="chunk")
    expected = torch.zeros_like(y)
    for b in range(2):
        for v in range(4):  # along time
            a = torch.exp(dt1[b, :, v, :, None] * A1)
            inp = (a - 1) / A1 * B1[b, :, v, None, :] * x[b, :, v, :, None]
            expected[b, :, v] += (_selective_1d(a, inp) * C1[b, :, v, None, :]).sum(-1)
        for t in range(6):  # across variates
            a = torch.exp(dt2[b, t, :, :, None] * A4)
            inp = (a - 1) / A4 * B2[b, t, :, None, :] * x[b, t, :, :, None]
            expected[b, t] += (_selective_1d(a, inp) * C2[b, t, :, None, :]).sum(-1)
    assert_close(y, expected)


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_two_by_two_grid_by_hand(backend):
    """The neighbour structure the paper describes, written out cell by cell on a 2 x 2 grid
    (one channel, one state): h1 from the previous time step of the same variate (A1 on h1, A2
    on h2), h2 from the previous variate at the same time step (A3 on h1, A4 on h2)."""
    x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, _, _ = _inputs(1, 2, 2, 1, 1, seed=11)
    y, (h1_last, h2_last) = ssm2d_scan(x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, backend=backend)
    a1_, a2_, a3_, a4_ = (float(m) for m in (A1, A2, A3, A4))

    def cell(t, v):
        e1, e4 = math.exp(float(dt1[0, t, v, 0]) * a1_), math.exp(float(dt2[0, t, v, 0]) * a4_)
        return e1, (e1 - 1) / a1_, e4, (e4 - 1) / a4_, float(x[0, t, v, 0])

    def b1(t, v):
        return float(B1[0, t, v, 0])

    def b2(t, v):
        return float(B2[0, t, v, 0])

    e1, g1, e4, g4, u = cell(0, 0)
    h1_00, h2_00 = g1 * b1(0, 0) * u, g4 * b2(0, 0) * u
    e1, g1, e4, g4, u = cell(0, 1)
    h1_01 = g1 * b1(0, 1) * u
    h2_01 = e4 * h2_00 + g4 * (a3_ * h1_00 + b2(0, 1) * u)
    e1, g1, e4, g4, u = cell(1, 0)
    h1_10 = e1 * h1_00 + g1 * (a2_ * h2_00 + b1(1, 0) * u)
    h2_10 = g4 * b2(1, 0) * u
    e1, g1, e4, g4, u = cell(1, 1)
    h1_11 = e1 * h1_01 + g1 * (a2_ * h2_01 + b1(1, 1) * u)
    h2_11 = e4 * h2_10 + g4 * (a3_ * h1_10 + b2(1, 1) * u)
    h1 = {(0, 0): h1_00, (0, 1): h1_01, (1, 0): h1_10, (1, 1): h1_11}
    h2 = {(0, 0): h2_00, (0, 1): h2_01, (1, 0): h2_10, (1, 1): h2_11}
    want = torch.tensor(
        [
            [float(C1[0, t, v, 0]) * h1[t, v] + float(C2[0, t, v, 0]) * h2[t, v] for v in (0, 1)]
            for t in (0, 1)
        ],
        dtype=torch.float64,
    )
    assert_close(y[0, :, :, 0], want)
    assert_close(h1_last.flatten(), torch.tensor([h1_10, h1_11], dtype=torch.float64))
    assert_close(h2_last.flatten(), torch.tensor([h2_10, h2_11], dtype=torch.float64))


def test_causal_in_time_and_across_variates():
    inputs = _inputs(1, 6, 5, 2, 2, seed=3)
    y, _ = ssm2d_scan(*inputs[:11])
    changed = [p.clone() for p in inputs[:11]]
    changed[0][:, 4:] += 1.0  # future time steps
    changed[0][:, 2, 3:] += 1.0  # later variates at t = 2
    y2, _ = ssm2d_scan(*changed)
    assert_close(y2[:, :2], y[:, :2])
    assert_close(y2[:, 2, :3], y[:, 2, :3])
    assert not torch.allclose(y2[:, 2, 3:], y[:, 2, 3:])


def test_state_continues_over_time_pieces():
    x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, h1_0, h2_0 = _inputs(2, 9, 3, 2, 2, seed=4)

    def run(times: slice, state):
        per_token = [p[:, times] for p in (x, dt1, dt2)]
        vectors = [p[:, times] for p in (B1, B2, C1, C2)]
        return ssm2d_scan(*per_token, A1, A2, A3, A4, *vectors, state=state)

    y, state = run(slice(0, 9), (h1_0, h2_0))
    y1, st = run(slice(0, 4), (h1_0, h2_0))
    y2, st = run(slice(4, 9), st)
    assert_close(torch.cat([y1, y2], 1), y)
    assert_close(st[0], state[0])
    assert_close(st[1], state[1])


def test_float32_matches_float64():
    inputs = _inputs(2, 8, 3, 4, 3, seed=9)
    y64, _ = ssm2d_scan(*inputs[:11])
    y32, _ = ssm2d_scan(*(p.float() for p in inputs[:11]))
    assert y32.dtype == torch.float32
    assert_close(y32, y64, dtype=torch.float32)


def test_errors_name_the_argument():
    inputs = _inputs(2, 4, 3, 2, 2)
    bad = list(inputs[:11])
    bad[7] = bad[7][..., :1]
    with pytest.raises(ValueError, match=r"B1 must have shape \[2, 4, 3, 2\]"):
        ssm2d_scan(*bad)
    bad = list(inputs[:11])
    bad[4] = bad[4][:1]
    with pytest.raises(ValueError, match=r"A2 must have shape \[2, 2\]"):
        ssm2d_scan(*bad)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        ssm2d_scan(inputs[0].long(), *inputs[1:11])
    with pytest.raises(TypeError, match="state must be a pair"):
        ssm2d_scan(*inputs[:11], state=inputs[11])
    with pytest.raises(ValueError, match=r"state\[1\] must have shape"):
        ssm2d_scan(*inputs[:11], state=(inputs[11], inputs[12][:, :2]))


# --- padding masks over time ---------------------------------------------------------------------


def _time_mask():
    """Row 0: padded at t = 0 (the initial state carries over), holes at 3 and 4; row 1: trailing
    padding from t = 5."""
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, [0, 3, 4]] = False
    mask[1, 5:] = False
    return mask


@pytest.mark.parametrize("backend", ["naive", "chunk", "triton"])
def test_padded_time_steps_equal_the_real_steps_alone(backend):
    """With junk at the padded time steps, each row's real outputs and final states equal a scan
    over its real time steps only (from the same initial state)."""
    device = DEVICE if backend == "triton" else torch.device("cpu")
    inputs = _inputs(2, 7, 3, 2, 2, seed=13)
    mask = _time_mask()
    per_token = (0, 1, 2, 7, 8, 9, 10)  # x, dt1, dt2, B1, B2, C1, C2
    for i in per_token:
        inputs[i] = torch.where(mask.view(2, 7, 1, 1), inputs[i], 30 * inputs[i].abs())
    moved = [p.to(device) for p in inputs]
    y, (h1, h2) = ssm2d_scan(
        *moved[:11], state=tuple(moved[11:]), backend=backend, mask=mask.to(device)
    )
    for b in range(2):
        real = []
        for i, p in enumerate(inputs):
            if i in per_token:
                real.append(p[b : b + 1, mask[b]])  # the real time steps of row b
            else:
                real.append(p[b : b + 1] if i >= 11 else p)  # its initial states; A1 .. A4
        y_ref, (h1_ref, h2_ref) = ssm2d_scan(*real[:11], state=tuple(real[11:]), backend="naive")
        assert_close(y[b, mask[b]].cpu(), y_ref[0], msg=f"row {b} outputs")
        assert_close(h1[b].cpu(), h1_ref[0], msg=f"row {b} h1")
        assert_close(h2[b].cpu(), h2_ref[0], msg=f"row {b} h2")


@pytest.mark.parametrize("backend", ["chunk-variates", "chunk-time", "triton"])
def test_masked_backends_equal_naive_with_gradients(backend):
    shape = (2, 7, 3, 2, 2)
    inputs = _inputs(*shape, seed=17)
    mask = _time_mask()
    wy = torch.randn(*shape[:4], dtype=torch.float64) * mask.view(2, 7, 1, 1)
    wh = torch.randn(shape[0], shape[2], shape[3], shape[4], dtype=torch.float64)
    device = DEVICE if backend == "triton" else torch.device("cpu")
    runs = {
        "naive": (lambda *a: ssm2d_scan_naive(*a, mask=mask), torch.device("cpu")),
        "chunk-variates": (
            lambda *a: ssm2d_scan_chunk(*a, loop_over="variates", mask=mask),
            torch.device("cpu"),
        ),
        "chunk-time": (
            lambda *a: ssm2d_scan_chunk(*a, loop_over="time", mask=mask),
            torch.device("cpu"),
        ),
        "triton": (lambda *a: ssm2d_scan_triton(*a, mask=mask.to(device)), device),
    }
    out = {}
    for name in ("naive", backend):
        fn, dev = runs[name]
        leaves = [p.to(dev).requires_grad_() for p in inputs]
        y, h1, h2 = fn(*leaves)
        loss = (y * wy.to(dev)).sum() + (h1 * wh.to(dev)).sum() + (h2 * wh.flip(1).to(dev)).sum()
        grads = torch.autograd.grad(loss, leaves, materialize_grads=True)
        out[name] = [t.detach().cpu() for t in (y, h1, h2, *grads)]
    labels = ["y", "h1_last", "h2_last"] + [f"grad {n}" for n in NAMES]
    for label, got, want in zip(labels, out[backend], out["naive"]):
        assert_close(got, want, msg=label)
    # Padded steps' per-token inputs get no gradient from real outputs or the final states.
    for i in (0, 1, 2, 7, 8):  # x, dt1, dt2, B1, B2 (C at a padded step reads out only there)
        assert out["naive"][3 + i][~mask].abs().max() == 0, NAMES[i]


def test_mask_errors():
    inputs = _inputs(2, 4, 3, 2, 2)
    with pytest.raises(TypeError, match=r"mask must be a torch.bool tensor"):
        ssm2d_scan(*inputs[:11], mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"mask must have shape \[B, T\] = \[2, 4\]"):
        ssm2d_scan(*inputs[:11], mask=torch.ones(2, 3, dtype=torch.bool))
