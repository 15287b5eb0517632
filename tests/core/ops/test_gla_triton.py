"""gla's fused Triton kernels (on the GPU, or interpreted on the CPU: tests/conftest.py) against
the step-by-step recurrence: outputs, final states and the gradients of q, k, v, the log gates and
the initial state, per-dimension and per-head gates (and a gate shared by the batch), several
chunks and value blocks, resets at t = 0, in the middle and at the end, padding masks,
non-contiguous and half-precision inputs; bad input refused before any launch; real sizes on a
GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core.ops.gla import chunk_gla
from mixerzoo.core.ops.gla.naive import naive_gla
from mixerzoo.core.ops.gla.triton import gla_triton
from mixerzoo.core.testing import assert_close

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
NAMES = ["q", "k", "v", "g", "initial_state"]


def _inputs(batch, heads, length, dk, dv, scalar, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    gate_shape = (batch, heads, length) if scalar else (batch, heads, length, dk)
    inputs = {
        "q": rnd(batch, heads, length, dk),
        "k": rnd(batch, heads, length, dk) * dk**-0.5,
        "v": rnd(batch, heads, length, dv),
        "g": F.logsigmoid(rnd(*gate_shape) + 1.0),
        "initial_state": rnd(batch, heads, dk, dv),
    }
    return {k: v.to(dtype) for k, v in inputs.items()}


def _flags(batch, length):
    reset = torch.zeros(batch, length, dtype=torch.bool)
    reset[0, 0] = True
    reset[-1, -1] = True
    reset[-1, length // 2] = True
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, -min(3, length - 1) :] = False
    mask[-1, length // 3] = False
    return reset, mask


def _run(fn, inputs, flags, device, weights, **kw):
    leaves = {k: v.to(device).requires_grad_() for k, v in inputs.items() if v is not None}
    flags = {k: v.to(device) for k, v in flags.items() if v is not None}
    o, state = fn(**leaves, **flags, **kw)
    loss = (o * weights[0].to(device)).sum() + (state * weights[1].to(device)).sum()
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
    return [o.detach().cpu(), state.detach().cpu()] + [
        grads[k].cpu() if k in grads else None for k in NAMES
    ]


def _compare(got, want, tag, dtype=None):
    for label, x, y in zip(["o", "final state"] + [f"grad {n}" for n in NAMES], got, want):
        if y is None:
            assert x is None, label
            continue
        if dtype is None:
            assert x.dtype == y.dtype, label
        assert_close(x.double(), y.double(), dtype=dtype or y.dtype, msg=f"{label} ({tag})")


# (B, H, T, dk, dv): one token; odd sizes over several chunks; dk above 16 (a 32-wide key tile);
# dv above 64 (two value blocks, whose key and gate gradients are summed).
CASES = [(1, 1, 1, 1, 1), (2, 3, 19, 5, 6), (1, 2, 9, 20, 3), (2, 1, 17, 3, 70)]


@pytest.mark.parametrize("batch,heads,length,dk,dv", CASES)
@pytest.mark.parametrize("scalar", [True, False], ids=["gate per head", "gate per dim"])
@pytest.mark.parametrize("with_options", [True, False])
def test_triton_equals_naive_with_gradients(batch, heads, length, dk, dv, scalar, with_options):
    inputs = _inputs(batch, heads, length, dk, dv, scalar, seed=length + dk)
    reset, mask = _flags(batch, length)
    flags = {"reset": reset, "mask": mask} if with_options else {}
    if not with_options:
        inputs["initial_state"] = None
    weights = [torch.randn(batch, heads, length, dv, dtype=torch.float64),
               torch.randn(batch, heads, dk, dv, dtype=torch.float64)]  # fmt: skip
    got = _run(gla_triton, inputs, flags, DEVICE, weights)
    want = _run(naive_gla, inputs, flags, torch.device("cpu"), weights)
    _compare(got, want, f"scalar {scalar}, options {with_options}")


def test_gate_shared_by_the_batch_and_single_chunk_blocks():
    """A [1, H, T] gate (retention's form) broadcast over the batch, and 16-token chunks."""
    inputs = _inputs(3, 2, 21, 4, 5, scalar=True, seed=8)
    inputs["g"] = inputs["g"][:1]
    reset, mask = _flags(3, 21)
    weights = [torch.randn(3, 2, 21, 5, dtype=torch.float64),
               torch.randn(3, 2, 4, 5, dtype=torch.float64)]  # fmt: skip
    got = _run(gla_triton, inputs, {"reset": reset}, DEVICE, weights, blocks=(16, 16, 16, 1))
    full = dict(inputs, g=inputs["g"].expand(3, -1, -1))
    want = _run(naive_gla, full, {"reset": reset}, torch.device("cpu"), weights)
    want[5] = want[5].sum(0, keepdim=True)  # the shared gate's gradient sums over the batch
    _compare(got, want, "shared gate")
    got = _run(gla_triton, inputs, {"mask": mask}, DEVICE, weights)
    want = _run(naive_gla, full, {"mask": mask}, torch.device("cpu"), weights)
    want[5] = want[5].sum(0, keepdim=True)
    _compare(got, want, "shared gate, mask")


def test_non_contiguous_inputs_and_no_grad():
    inputs = _inputs(2, 3, 13, 4, 5, scalar=False, seed=4)
    views = {k: v.transpose(-1, -2).contiguous().transpose(-1, -2) for k, v in inputs.items()}
    views["v"] = inputs["v"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not views["q"].is_contiguous() and not views["v"].is_contiguous()
    reset, mask = _flags(2, 13)
    with torch.no_grad():
        o, state = gla_triton(**{k: v.to(DEVICE) for k, v in views.items()},
                              reset=reset.to(DEVICE), mask=mask.to(DEVICE))  # fmt: skip
    want_o, want_state = naive_gla(**inputs, reset=reset, mask=mask)
    assert_close(o.cpu(), want_o)
    assert_close(state.cpu(), want_state)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lower_precision_inputs(dtype):
    inputs = _inputs(2, 2, 12, 4, 6, scalar=False, dtype=dtype, seed=5)
    reset, mask = _flags(2, 12)
    flags = {"reset": reset, "mask": mask}
    weights = [torch.randn(2, 2, 12, 6), torch.randn(2, 2, 4, 6)]
    got = _run(gla_triton, inputs, flags, DEVICE, weights)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert all(x.dtype == dtype for x in got[2:])
    rounded = {k: v.float() for k, v in inputs.items()}
    want = _run(naive_gla, rounded, flags, torch.device("cpu"), weights)
    _compare(got, want, str(dtype), dtype=dtype)


def test_bad_input_is_refused_before_launch(monkeypatch):
    inputs = {k: v.float() for k, v in _inputs(1, 1, 4, 3, 3, scalar=True).items()}
    with pytest.raises(TypeError, match="q must be float16"):
        gla_triton(**dict(inputs, q=inputs["q"].to(torch.complex64)))
    with pytest.raises(ValueError, match="need BLOCK_K >= dk"):
        gla_triton(**inputs, blocks=(8, 16, 8, 1))
    big = torch.zeros(1, 1, 2, 300)
    with pytest.raises(ValueError, match="dk = 300 > 256"):
        gla_triton(big, big, big[..., :4], big[..., 0])
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="needs CUDA tensors.*backend='chunk'"):
        gla_triton(**inputs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("scalar", [True, False], ids=["gate per head", "gate per dim"])
@pytest.mark.parametrize("shape", [(4, 8, 2048, 64, 64), (2, 4, 1000, 128, 128)])
def test_real_sizes_on_gpu(scalar, shape):
    batch, heads, length, dk, dv = shape
    inputs = _inputs(batch, heads, length, dk, dv, scalar, dtype=torch.float32, seed=3)
    inputs["g"] = inputs["g"] / 16  # the paper's gates: alpha mostly in 0.93 .. 0.99
    reset, mask = _flags(batch, length)
    flags = {"reset": reset, "mask": mask}
    weights = [torch.randn(batch, heads, length, dv), torch.randn(batch, heads, dk, dv)]
    got = _run(gla_triton, inputs, flags, DEVICE, weights)
    want = _run(chunk_gla, inputs, flags, DEVICE, weights)
    for label, x, y in zip(["o", "final state"] + [f"grad {n}" for n in NAMES], got, want):
        assert_close(x, y, rtol=1e-3, atol=1e-3, msg=label)
