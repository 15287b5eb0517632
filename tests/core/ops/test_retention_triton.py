"""retention on the fused GLA kernels (on the GPU, or interpreted on the CPU) against the
step-by-step recurrences: causal (initial state, resets, padding) and symmetric (padding), outputs,
final states and the gradients of q, k, v, gamma and the initial state."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core.ops.retention.naive import naive_bidirectional_retention, naive_retention
from mixerzoo.core.ops.retention.triton import bidirectional_retention_triton, retention_triton
from mixerzoo.core.testing import assert_close

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _inputs(batch, heads, length, dk, dv, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "q": torch.randn(batch, heads, length, dk, generator=g, dtype=torch.float64),
        "k": torch.randn(batch, heads, length, dk, generator=g, dtype=torch.float64) * dk**-0.5,
        "v": torch.randn(batch, heads, length, dv, generator=g, dtype=torch.float64),
        "gamma": 1.0 - torch.rand(heads, generator=g, dtype=torch.float64) * 0.5,
        "initial_state": torch.randn(batch, heads, dk, dv, generator=g, dtype=torch.float64),
    }


def _flags(batch, length):
    reset = torch.zeros(batch, length, dtype=torch.bool)
    reset[0, 0] = True
    reset[-1, -1] = True
    reset[-1, length // 2] = True
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, -2:] = False
    mask[-1, length // 3] = False
    return reset, mask


def _run(fn, inputs, flags, device):
    leaves = {k: v.to(device).requires_grad_() for k, v in inputs.items()}
    out = fn(**leaves, **{k: v.to(device) for k, v in flags.items()})
    outs = out if isinstance(out, tuple) else (out,)
    g = torch.Generator().manual_seed(1)
    loss = sum(
        (x * torch.randn(x.shape, generator=g, dtype=x.dtype).to(device)).sum() for x in outs
    )
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return [x.detach().cpu() for x in (*outs, *grads)]


@pytest.mark.parametrize("shape", [(2, 3, 19, 5, 6), (1, 2, 1, 3, 2)])
def test_causal_triton_equals_naive(shape):
    inputs = _inputs(*shape, seed=shape[2])
    reset, mask = _flags(shape[0], shape[2])
    flags = {"reset": reset, "mask": mask}
    got = _run(retention_triton, inputs, flags, DEVICE)
    want = _run(naive_retention, inputs, flags, torch.device("cpu"))
    labels = ["o", "final state", "grad q", "grad k", "grad v", "grad gamma", "grad state"]
    for label, x, y in zip(labels, got, want):
        assert_close(x, y, msg=label)


def test_bidirectional_triton_equals_naive():
    inputs = _inputs(2, 2, 13, 4, 3, seed=2)
    del inputs["initial_state"]
    _, mask = _flags(2, 13)
    got = _run(bidirectional_retention_triton, inputs, {"mask": mask}, DEVICE)
    want = _run(naive_bidirectional_retention, inputs, {"mask": mask}, torch.device("cpu"))
    for label, x, y in zip(["o", "grad q", "grad k", "grad v", "grad gamma"], got, want):
        assert_close(x, y, msg=label)
