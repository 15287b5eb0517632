"""GLA op: recurrent == parallel == chunkwise (outputs, states, gradients), closed forms, stability."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mixerzoo.core.ops.gla as gla_ops
from mixerzoo.core.ops.gla import chunk_gla, gla, naive_gla, parallel_gla
from mixerzoo.core.ops.retention import naive_retention
from mixerzoo.core.testing import assert_close, outputs_and_grads

F64 = torch.float64

# (B, H, T, dk, dv): T = 1, odd T, T not a multiple of the chunk, batch 1, non-power-of-two dims.
SHAPES = [(1, 1, 1, 3, 5), (2, 3, 13, 5, 7), (1, 2, 37, 6, 3), (2, 2, 32, 4, 4)]
# 1 and 5: sub-chunks of 1 token; 16: one sub-chunk; 24 and 32: 3 and 2 sub-chunks; 64 > T.
CHUNKS = [1, 5, 16, 24, 32, 64]


def _inputs(b, h, t, dk, dv, dtype=F64, with_state=True, gate_shift=0.0):
    q = torch.randn(b, h, t, dk, dtype=dtype)
    k = torch.randn(b, h, t, dk, dtype=dtype)
    v = torch.randn(b, h, t, dv, dtype=dtype)
    # Log gates spread from ~0 (keep) to strongly forgetting, as the mixer's logsigmoid gives.
    g = F.logsigmoid(2.0 * torch.randn(b, h, t, dk, dtype=dtype) + gate_shift)
    s0 = torch.randn(b, h, dk, dv, dtype=dtype) if with_state else None
    return q, k, v, g, s0


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_parallel_chunk_agree(shape, with_state):
    b, h, t, dk, dv = shape
    inputs = _inputs(*shape, with_state=with_state)
    o_w, s_w = torch.randn(b, h, t, dv, dtype=F64), torch.randn(b, h, dk, dv, dtype=F64)
    (ref_o, ref_s), ref_g = outputs_and_grads(naive_gla, inputs, (o_w, s_w))
    forms = {"parallel": parallel_gla}
    for c in CHUNKS:
        forms[f"chunk{c}"] = lambda *a, c=c: chunk_gla(*a, chunk_size=c)
    for name, fn in forms.items():
        (o, s), grads = outputs_and_grads(fn, inputs, (o_w, s_w))
        assert_close(o, ref_o, msg=f"{name}: output")
        assert_close(s, ref_s, msg=f"{name}: final state")
        for arg, g, g_ref in zip(("q", "k", "v", "g", "initial_state"), grads, ref_g):
            if g_ref is not None:
                assert_close(g, g_ref, msg=f"{name}: grad of {arg}")


def test_chunk_matches_naive_in_float32():
    inputs = _inputs(2, 2, 50, 8, 6, dtype=torch.float32)
    o_ref, s_ref = naive_gla(*inputs)
    o, s = chunk_gla(*inputs, chunk_size=32)
    assert_close(o, o_ref)
    assert_close(s, s_ref)


def test_chunk_is_stable_when_gates_close_hard():
    """Gates near 0 over a whole chunk: exp(-cumsum) would overflow float32 in the naive factoring
    (q e^b)(k e^-b)^T; the chunked form must stay finite and match the recurrence."""
    q, k, v, g, s0 = _inputs(1, 2, 64, 4, 3, dtype=torch.float32, gate_shift=-30.0)
    assert g.sum(2).min() < -1000  # far beyond exp's float32 range
    o_ref, s_ref = naive_gla(q, k, v, g, s0)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g)]
    o, s = chunk_gla(*leaves, s0, chunk_size=64)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    assert_close(o, o_ref)
    assert_close(s, s_ref)
    (o.sum() + s.sum()).backward()
    assert all(torch.isfinite(x.grad).all() for x in leaves)


def test_no_gating_is_causal_linear_attention():
    """g = 0 (alpha = 1): o_t = q_t (S_0 + sum_{s <= t} k_s^T v_s)."""
    q, k, v, _, s0 = _inputs(2, 2, 11, 3, 4)
    g = torch.zeros_like(q)
    prefix = torch.cumsum(k.unsqueeze(-1) * v.unsqueeze(-2), dim=2) + s0.unsqueeze(2)
    expected = torch.einsum("bhtk,bhtkv->bhtv", q, prefix)
    for backend in ("naive", "chunk"):
        o, s = gla(q, k, v, g, s0, backend=backend, chunk_size=4)
        assert_close(o, expected)
        assert_close(s, prefix[:, :, -1])


def test_constant_gates_reduce_to_retention():
    """A gate constant over time and key dims is RetNet's decay: GLA == retention."""
    q, k, v, _, s0 = _inputs(2, 3, 21, 5, 4)
    gamma = torch.tensor([0.5, 0.9, 0.99], dtype=F64)
    g = torch.log(gamma).view(1, 3, 1, 1).expand_as(q)
    o_ret, s_ret = naive_retention(q, k, v, gamma, s0)
    o, s = gla(q, k, v, g, s0, backend="chunk", chunk_size=8)
    assert_close(o, o_ret)
    assert_close(s, s_ret)


def test_split_sequence_with_carried_state():
    q, k, v, g, _ = _inputs(2, 2, 29, 4, 3, with_state=False)
    whole, s_whole = gla(q, k, v, g, chunk_size=8)
    cut = 11
    first, s1 = gla(q[:, :, :cut], k[:, :, :cut], v[:, :, :cut], g[:, :, :cut], chunk_size=8)
    second, s2 = gla(q[:, :, cut:], k[:, :, cut:], v[:, :, cut:], g[:, :, cut:], s1, chunk_size=8)
    assert_close(torch.cat([first, second], dim=2), whole)
    assert_close(s2, s_whole)


@pytest.mark.parametrize(
    "fn",
    [naive_gla, parallel_gla, lambda *a: chunk_gla(*a, chunk_size=4)],
    ids=["naive", "parallel", "chunk"],
)
def test_gradcheck(fn):
    q, k, v, g, s0 = _inputs(1, 2, 6, 3, 2)
    inputs = [x.requires_grad_() for x in (q, k, v, g, s0)]
    assert torch.autograd.gradcheck(fn, inputs)


def test_gradcheck_chunk_with_sub_chunks(monkeypatch):
    """Sub-chunks of 2 inside chunks of 4 exercise the between-sub-chunk path on tiny inputs."""
    monkeypatch.setattr("mixerzoo.core.ops.gla.chunk.SUB_CHUNK", 2)
    q, k, v, g, s0 = _inputs(1, 1, 7, 3, 2)
    inputs = [x.requires_grad_() for x in (q, k, v, g, s0)]
    o_ref, s_ref = naive_gla(*inputs)
    o, s = chunk_gla(*inputs, chunk_size=4)
    assert_close(o, o_ref)
    assert_close(s, s_ref)
    assert torch.autograd.gradcheck(lambda *a: chunk_gla(*a, chunk_size=4), inputs)


def test_backend_dispatch(monkeypatch):
    q, k, v, g, _ = _inputs(1, 1, 3, 2, 2)

    def refuse(*args, **kwargs):
        raise RuntimeError("naive called")

    monkeypatch.setattr(gla_ops, "naive_gla", refuse)
    gla(q, k, v, g, backend="chunk")
    with pytest.raises(RuntimeError, match="naive called"):
        gla(q, k, v, g, backend="naive")
    monkeypatch.setenv("MIXERZOO_BACKEND", "naive")
    with pytest.raises(RuntimeError, match="naive called"):
        gla(q, k, v, g)


def test_half_precision_inputs_compute_in_float32():
    q, k, v, g, s0 = _inputs(1, 2, 9, 4, 4, dtype=torch.bfloat16)
    o, s = gla(q, k, v, g, s0)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32
    o_ref, s_ref = naive_gla(q.float(), k.float(), v.float(), g.float(), s0.float())
    assert_close(o, o_ref)
    assert_close(s, s_ref, dtype=torch.float32)


def test_clear_errors():
    q, k, v, g, s0 = _inputs(2, 3, 5, 4, 6)
    with pytest.raises(ValueError, match=r"g must have shape"):
        gla(q, k, v, g[..., :3])
    with pytest.raises(ValueError, match=r"k must have shape"):
        gla(q, k[:, :2], v, g)
    with pytest.raises(ValueError, match=r"q must have shape"):
        gla(q[0], k, v, g)
    with pytest.raises(TypeError, match=r"floating-point"):
        gla(q, k, v.int(), g)
    with pytest.raises(ValueError, match=r"initial_state must have shape"):
        gla(q, k, v, g, s0.transpose(-1, -2))
    with pytest.raises(ValueError, match=r"chunk_size"):
        gla(q, k, v, g, chunk_size=-3)
