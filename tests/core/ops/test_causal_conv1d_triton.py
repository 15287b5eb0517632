"""causal_conv1d: the fused Triton kernels (on the GPU, or interpreted on the CPU:
tests/conftest.py) and the PyTorch path against the step-by-step reference (outputs and the
gradients of x, weight, bias and state; SiLU or none; dilation; resets at t = 0, in the middle
and at the end; T shorter than the kernel; non-contiguous and half-precision inputs); the
reference against a closed form; bad input refused; real sizes on a GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core.ops.causal_conv1d import causal_conv1d
from mixerzoo.core.ops.causal_conv1d.naive import causal_conv1d_naive
from mixerzoo.core.testing import assert_close

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
NAMES = ["x", "weight", "bias", "state"]


def _inputs(batch, length, channels, taps, dilation, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    return {
        "x": rnd(batch, length, channels),
        "weight": rnd(channels, taps),
        "bias": rnd(channels),
        "state": rnd(batch, dilation * (taps - 1), channels),
    }


def _reset(batch, length):
    reset = torch.zeros(batch, length, dtype=torch.bool)
    reset[0, 0] = True
    reset[-1, -1] = True
    reset[-1, length // 2] = True
    return reset


def _run(inputs, backend, device, weight_out, **kw):
    leaves = {k: v.to(device).requires_grad_() for k, v in inputs.items() if v is not None}
    flags = {k: v.to(device) for k, v in kw.items() if isinstance(v, torch.Tensor)}
    rest = {k: v for k, v in kw.items() if not isinstance(v, torch.Tensor)}
    y = causal_conv1d(**leaves, **flags, **rest, backend=backend)
    grads = torch.autograd.grad((y * weight_out.to(device)).sum(), list(leaves.values()))
    named = dict(zip(leaves, grads))
    return [y.detach().cpu()] + [named[k].cpu() if k in named else None for k in NAMES]


# (B, T, C, K, dilation): odd sizes, several channel tiles are not needed at these sizes but T
# shorter than the kernel is; batch 1; dilation 2 (FSMN); a single tap.
CASES = [(2, 13, 5, 4, 1), (1, 3, 3, 4, 1), (2, 9, 6, 3, 2), (1, 7, 2, 1, 1)]


@pytest.mark.parametrize("backend", ["triton", "chunk"])
@pytest.mark.parametrize("batch,length,channels,taps,dilation", CASES)
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_state,with_reset", [(False, False), (True, True)])
def test_equals_naive_with_gradients(backend, batch, length, channels, taps, dilation,
                                     activation, with_state, with_reset):  # fmt: skip
    inputs = _inputs(batch, length, channels, taps, dilation, seed=length * channels)
    if not with_state:
        inputs["state"] = None
        inputs["bias"] = None
    kw = {"dilation": dilation, "activation": activation}
    if with_reset:
        kw["reset"] = _reset(batch, length)
    w = torch.randn(batch, length, channels, dtype=torch.float64)
    device = DEVICE if backend == "triton" else torch.device("cpu")
    got = _run(inputs, backend, device, w, **kw)
    want = _run(inputs, "naive", torch.device("cpu"), w, **kw)
    for label, x, y in zip(["y"] + [f"grad {n}" for n in NAMES], got, want):
        if y is None:
            assert x is None, label
        else:
            assert_close(x, y, msg=f"{label} ({backend})")


def test_naive_closed_form():
    """K = 2, dilation 1: y_t = w0 x_{t-1} + w1 x_t + bias with x_{-1} from the state, and the
    tap at a reset reading zero."""
    x = torch.arange(1.0, 7.0, dtype=torch.float64).view(1, 6, 1)
    weight = torch.tensor([[10.0, 1.0]], dtype=torch.float64)
    state = torch.tensor([[[100.0]]], dtype=torch.float64)
    reset = torch.tensor([[False, False, False, True, False, False]])
    y = causal_conv1d_naive(x, weight, torch.tensor([0.5], dtype=torch.float64), state,
                            segments=reset.long().cumsum(1))  # fmt: skip
    want = [1000 + 1, 10 + 2, 20 + 3, 0 + 4, 40 + 5, 50 + 6]
    assert y.flatten().tolist() == [v + 0.5 for v in want]
    y_silu = causal_conv1d_naive(x, weight, None, state, activation="silu")
    assert_close(y_silu.flatten(), F.silu(torch.tensor([1001.0, 12, 23, 34, 45, 56]).double()))


def test_non_contiguous_and_no_grad():
    inputs = _inputs(2, 11, 6, 4, 1, seed=3)
    x_view = inputs["x"].transpose(1, 2).contiguous().transpose(1, 2)
    w_view = inputs["weight"].t().contiguous().t()
    assert not x_view.is_contiguous() and not w_view.is_contiguous()
    reset = _reset(2, 11)
    with torch.no_grad():
        y = causal_conv1d(x_view.to(DEVICE), w_view.to(DEVICE), inputs["bias"].to(DEVICE),
                          inputs["state"].to(DEVICE), reset=reset.to(DEVICE), activation="silu",
                          backend="triton")  # fmt: skip
    want = causal_conv1d(**inputs, reset=reset, activation="silu", backend="naive")
    assert_close(y.cpu(), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lower_precision_inputs(dtype):
    inputs = _inputs(2, 10, 5, 4, 1, dtype=dtype, seed=5)
    w = torch.randn(2, 10, 5)
    reset = _reset(2, 10)
    got = _run(inputs, "triton", DEVICE, w, reset=reset, activation="silu")
    rounded = {k: v.float() for k, v in inputs.items()}
    want = _run(rounded, "naive", torch.device("cpu"), w, reset=reset, activation="silu")
    for label, x, y in zip(["y"] + [f"grad {n}" for n in NAMES], got, want):
        assert x.dtype == dtype, label
        assert_close(x.float(), y, dtype=dtype, msg=label)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda x: x.update(x=x["x"].long()), TypeError, "x must be a floating-point"),
        (lambda x: x.update(weight=x["weight"][:-1]), ValueError, "weight must have shape"),
        (lambda x: x.update(bias=x["bias"][:-1]), ValueError, "bias must have shape"),
        (lambda x: x.update(state=x["state"][:, :-1]), ValueError, "state must have shape"),
        (lambda x: x.update(reset=torch.zeros(2, 4, dtype=torch.bool)), ValueError, "reset must"),
        (lambda x: x.update(reset=torch.zeros(2, 5)), TypeError, "reset must be a torch.bool"),
        (lambda x: x.update(activation="gelu"), ValueError, "activation must be one of"),
        (lambda x: x.update(dilation=0), ValueError, "dilation >= 1"),
    ],
)
def test_bad_input_is_refused_before_launch(change, error, match):
    kw = _inputs(2, 5, 3, 4, 1, dtype=torch.float32)
    change(kw)
    kw = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    with pytest.raises(error, match=match):
        causal_conv1d(**kw, backend="triton")


def test_triton_refuses_float8_style_dtypes_and_cpu_without_interpreter(monkeypatch):
    kw = _inputs(1, 4, 2, 3, 1, dtype=torch.float32)
    with pytest.raises(TypeError, match="weight must be float16"):
        from mixerzoo.core.ops.causal_conv1d.triton import causal_conv1d_triton

        causal_conv1d_triton(kw["x"], kw["weight"].to(torch.complex64))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="needs CUDA tensors.*backend='chunk'"):
        causal_conv1d_triton(kw["x"], kw["weight"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("shape", [(8, 2048, 1536, 4), (4, 1000, 768, 4)])
def test_real_sizes_on_gpu(shape):
    batch, length, channels, taps = shape
    inputs = _inputs(batch, length, channels, taps, 1, dtype=torch.float32, seed=2)
    w = torch.randn(batch, length, channels)
    reset = _reset(batch, length)
    got = _run(inputs, "triton", DEVICE, w, reset=reset, activation="silu")
    want = _run(inputs, "chunk", DEVICE, w, reset=reset, activation="silu")
    for label, x, y in zip(["y"] + [f"grad {n}" for n in NAMES], got, want):
        assert_close(x, y, rtol=1e-3, atol=1e-3, msg=label)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dilation", [1, 2])
def test_layer_on_gpu_dispatches_to_the_kernel_and_matches_the_cpu_layer(dilation):
    """core.layers.CausalDepthwiseConv1d on CUDA (fused kernel, with resets and padding) gives
    what the same layer gives on the CPU (its PyTorch path), outputs, states and gradients."""
    from mixerzoo.core.layers import CausalDepthwiseConv1d

    torch.manual_seed(0)
    conv = CausalDepthwiseConv1d(96, 4, dilation=dilation).double()
    x = torch.randn(3, 300, 96, dtype=torch.float64)
    state = torch.randn(3, dilation * 3, 96, dtype=torch.float64)
    reset = _reset(3, 300)
    mask = torch.ones(3, 300, dtype=torch.bool)
    mask[1, 250:] = False
    mask[2, 17] = False
    out = {}
    for device in ("cpu", "cuda"):
        layer = conv.to(device)
        xs = x.to(device).requires_grad_()
        y, new_state = layer(xs, state.to(device), reset=reset.to(device), mask=mask.to(device))
        loss = (y * torch.arange(300, device=device).view(1, -1, 1)).sum() + new_state.sum()
        grads = torch.autograd.grad(loss, [xs, layer.weight, layer.bias])
        out[device] = [t.detach().cpu() for t in (y, new_state, *grads)]
    for label, got, want in zip(["y", "state", "grad x", "grad w", "grad b"], *out.values()):
        assert_close(got, want, msg=label)
