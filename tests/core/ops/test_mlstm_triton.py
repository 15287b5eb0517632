"""mlstm's fused Triton kernels (on the GPU, or interpreted on the CPU: tests/conftest.py) against
the stabilised step-by-step recurrence: outputs, the final (C, n, m) and the gradients of q, k, v,
both gates and the whole initial state, several chunks and value blocks, resets at t = 0, in the
middle and at the end, padding, input gates of exactly 0 (log i = -inf), lower precision; the
chunked stabiliser on its own; bad input refused; real sizes on a GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core.ops.mlstm import chunk_mlstm
from mixerzoo.core.ops.mlstm.naive import naive_mlstm
from mixerzoo.core.ops.mlstm.triton import mlstm_triton, stabilizer
from mixerzoo.core.testing import assert_close

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
LABELS = ["h", "C", "n", "m"] + [f"grad {x}" for x in ("q", "k", "v", "log_i", "log_f", "C0",
                                                        "n0", "m0")]  # fmt: skip


def _inputs(batch, heads, length, dk, dv, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift

    x = {
        "q": rnd(batch, heads, length, dk),
        "k": rnd(batch, heads, length, dk, scale=dk**-0.5),
        "v": rnd(batch, heads, length, dv),
        "log_i": rnd(batch, heads, length, scale=2.0),
        "log_f": F.logsigmoid(rnd(batch, heads, length, shift=2.0)),
        "C0": rnd(batch, heads, dk, dv),
        "n0": rnd(batch, heads, dk),
        "m0": rnd(batch, heads),
    }
    return {k: v.to(dtype) for k, v in x.items()}


def _flags(batch, length):
    reset = torch.zeros(batch, length, dtype=torch.bool)
    reset[0, 0] = True
    reset[-1, -1] = True
    reset[-1, length // 2] = True
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, -min(3, length - 1) :] = False
    mask[-1, length // 3] = False
    return reset, mask


def _run(fn, inputs, flags, device, seed=1, **kw):
    leaves = {k: v.to(device).requires_grad_() for k, v in inputs.items()}
    state = (leaves["C0"], leaves["n0"], leaves["m0"])
    h, (c, n, m) = fn(leaves["q"], leaves["k"], leaves["v"], leaves["log_i"], leaves["log_f"],
                      state, 1e-6, **{k: v.to(device) for k, v in flags.items()}, **kw)  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    outs = (h, c, n, m)
    loss = sum(
        (x * torch.randn(x.shape, generator=g, dtype=x.dtype).to(device)).sum() for x in outs
    )
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return [x.detach().cpu() for x in (*outs, *grads)]


# (B, H, T, dk, dv): one step; odd sizes over several chunks; dk above 16; dv + 1 above 32 (two
# value blocks; the normaliser column is the 41st).
CASES = [(1, 1, 1, 1, 1), (2, 3, 19, 5, 6), (1, 2, 9, 20, 3), (2, 1, 17, 3, 40)]


@pytest.mark.parametrize("batch,heads,length,dk,dv", CASES)
@pytest.mark.parametrize("with_flags", [True, False])
def test_triton_equals_naive_with_gradients(batch, heads, length, dk, dv, with_flags):
    inputs = _inputs(batch, heads, length, dk, dv, seed=length + dk)
    reset, mask = _flags(batch, length)
    flags = {"reset": reset, "mask": mask} if with_flags else {}
    got = _run(mlstm_triton, inputs, flags, DEVICE)
    want = _run(naive_mlstm, inputs, flags, torch.device("cpu"))
    for label, x, y in zip(LABELS, got, want):
        assert_close(x, y, msg=f"{label} (flags {with_flags})")


def test_input_gates_of_zero_and_large_gates():
    """log i = -inf at some steps (input gate 0) and large log i (a stabiliser far from 0, where
    the eps term of the normaliser matters)."""
    inputs = _inputs(2, 2, 13, 4, 5, seed=3)
    inputs["log_i"][0, 0, 2:5] = float("-inf")
    inputs["log_i"][1, 1, :] += 8.0
    got = _run(mlstm_triton, inputs, {}, DEVICE)
    want = _run(naive_mlstm, inputs, {}, torch.device("cpu"))
    for label, x, y in zip(LABELS, got, want):
        assert_close(x, y, msg=label)


def test_stabilizer_is_the_recurrent_one():
    inputs = _inputs(2, 3, 150, 1, 1, seed=6)
    reset, mask = _flags(2, 150)
    log_i = torch.where(mask[:, None], inputs["log_i"], float("-inf"))
    log_f = torch.where(mask[:, None], inputs["log_f"], 0.0)
    m = stabilizer(log_i, log_f, inputs["m0"], reset, chunk=16)
    want = []
    prev = inputs["m0"]
    for t in range(150):
        prev = torch.where(reset[:, t, None], 0.0, prev)
        prev = torch.maximum(log_f[..., t] + prev, log_i[..., t])
        want.append(prev)
    assert_close(m, torch.stack(want, -1))


def test_lower_precision_and_no_grad():
    inputs = _inputs(2, 2, 12, 4, 6, dtype=torch.bfloat16, seed=5)
    reset, mask = _flags(2, 12)
    flags = {"reset": reset, "mask": mask}
    got = _run(mlstm_triton, inputs, flags, DEVICE)
    assert all(x.dtype == torch.bfloat16 for x in got[4:])
    want = _run(naive_mlstm, {k: v.float() for k, v in inputs.items()}, flags, torch.device("cpu"))
    for label, x, y in zip(LABELS, got, want):
        assert_close(x.float(), y, dtype=torch.bfloat16, msg=label)
    with torch.no_grad():
        x = {k: v.float().to(DEVICE) for k, v in inputs.items()}
        h, _ = mlstm_triton(x["q"], x["k"], x["v"], x["log_i"], x["log_f"])
    h_ref, _ = naive_mlstm(*(v.float() for v in list(inputs.values())[:5]))
    assert_close(h.cpu(), h_ref)


def test_bad_input_is_refused_before_launch(monkeypatch):
    x = {k: v.float() for k, v in _inputs(1, 1, 4, 3, 3).items()}
    args = [x["q"], x["k"], x["v"], x["log_i"], x["log_f"]]
    with pytest.raises(TypeError, match="log_i must be float16"):
        mlstm_triton(*args[:3], x["log_i"].to(torch.complex64), args[4])
    big = torch.zeros(1, 1, 2, 300)
    with pytest.raises(ValueError, match="dk = 300 > 256"):
        mlstm_triton(big, big, big[..., :4], big[..., 0], big[..., 0])
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="needs CUDA tensors.*backend='chunk'"):
        mlstm_triton(*args)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("shape", [(4, 8, 2048, 64, 64), (2, 4, 1000, 128, 128)])
def test_real_sizes_on_gpu(shape):
    inputs = _inputs(*shape, dtype=torch.float32, seed=2)
    reset, mask = _flags(shape[0], shape[2])
    flags = {"reset": reset, "mask": mask}
    got = _run(mlstm_triton, inputs, flags, DEVICE)
    want = _run(chunk_mlstm, inputs, flags, DEVICE)
    for label, x, y in zip(LABELS, got, want):
        assert_close(x, y, rtol=1e-3, atol=1e-3, msg=label)
