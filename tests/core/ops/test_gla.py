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


# --- resets and padding masks -------------------------------------------------------------


def _flags(b, t, chunk, seed=0):
    """Row 0: resets at t = 0, on the chunk boundary ``chunk``, twice more in that chunk and at
    the last step; other rows: random resets. Masks: random holes, row 0 ends in padding."""
    gen = torch.Generator().manual_seed(seed)
    reset = torch.rand(b, t, generator=gen) < 0.25
    reset[0] = False
    for step in (0, chunk, chunk + 1, chunk + 3, t - 1):
        if step < t:
            reset[0, step] = True
    mask = torch.rand(b, t, generator=gen) < 0.7
    mask[0, -2:] = False
    return reset, mask


def _gate(kind, g):
    """Per-key gates as given, or one gate per head (the mean over the key dim)."""
    return g if kind == "vector" else g.mean(-1)


FLAGS = ["reset", "mask", "both"]
FLAG_SHAPES = SHAPES[:3]


@pytest.mark.parametrize("shape", FLAG_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["vector", "scalar"])
@pytest.mark.parametrize("flags", FLAGS)
def test_forms_agree_with_resets_and_masks(shape, kind, flags):
    """Every form equals the naive recurrence with resets and masks: outputs, final states and
    the gradients of every input (odd T, T not a multiple of the chunk, batch 1)."""
    b, h, t, dk, dv = shape
    q, k, v, g, s0 = _inputs(*shape)
    inputs = (q, k, v, _gate(kind, g), s0)
    reset, mask = _flags(b, t, 4)
    kw = {"reset": reset if flags != "mask" else None, "mask": mask if flags != "reset" else None}
    o_w, s_w = torch.randn(b, h, t, dv, dtype=F64), torch.randn(b, h, dk, dv, dtype=F64)
    (ref_o, ref_s), ref_g = outputs_and_grads(lambda *a: naive_gla(*a, **kw), inputs, (o_w, s_w))
    forms = {"parallel": lambda *a: parallel_gla(*a, **kw)}
    # Chunks of 4: resets on a chunk boundary and three in one chunk; 5: a reset at a chunk's
    # last step and on the next boundary; 1: every step its own chunk; 16: one or more chunks.
    for c in (1, 4, 5, 16):
        forms[f"chunk{c}"] = lambda *a, c=c: chunk_gla(*a, chunk_size=c, **kw)
    for name, fn in forms.items():
        (o, s), grads = outputs_and_grads(fn, inputs, (o_w, s_w))
        assert_close(o, ref_o, msg=f"{name}: output")
        assert_close(s, ref_s, msg=f"{name}: final state")
        for arg, gr, gr_ref in zip(("q", "k", "v", "g", "initial_state"), grads, ref_g):
            assert_close(gr, gr_ref, msg=f"{name}: grad of {arg}")


def test_resets_between_sub_chunks(monkeypatch):
    """Sub-chunks of 2 in chunks of 8: resets inside, on and across sub-chunk boundaries."""
    monkeypatch.setattr("mixerzoo.core.ops.gla.chunk.SUB_CHUNK", 2)
    q, k, v, g, s0 = _inputs(2, 2, 19, 3, 4)
    reset, mask = _flags(2, 19, 8, seed=3)
    o_w = torch.randn(2, 2, 19, 4, dtype=F64)
    s_w = torch.randn(2, 2, 3, 4, dtype=F64)
    for kw in ({"reset": reset}, {"reset": reset, "mask": mask}):
        ref, ref_g = outputs_and_grads(
            lambda *a, kw=kw: naive_gla(*a, **kw), (q, k, v, g, s0), (o_w, s_w)
        )
        out, grads = outputs_and_grads(
            lambda *a, kw=kw: chunk_gla(*a, chunk_size=8, **kw), (q, k, v, g, s0), (o_w, s_w)
        )
        for x, x_ref in zip([*out, *grads], [*ref, *ref_g]):
            assert_close(x, x_ref)


@pytest.mark.parametrize("kind", ["vector", "scalar"])
def test_naive_reset_equals_pieces_from_zero(kind):
    """The reference itself: a row with resets = its pieces, each run from the zero state (the
    first from the given state), and the final state is the last piece's."""
    q, k, v, g, s0 = _inputs(2, 2, 17, 3, 4)
    g = _gate(kind, g)
    reset, _ = _flags(2, 17, 4)
    o, s = naive_gla(q, k, v, g, s0, reset=reset)
    for row in range(2):
        cuts = [0, *[int(i) for i in torch.nonzero(reset[row]).flatten() if i > 0], 17]
        state = None if reset[row, 0] else s0[row : row + 1]
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            piece = (x[row : row + 1, :, lo:hi] for x in (q, k, v, g))
            o_piece, state = naive_gla(*piece, state)
            assert_close(o[row : row + 1, :, lo:hi], o_piece)
            state_piece = state
            state = None
        assert_close(s[row : row + 1], state_piece)


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_mask_equals_the_real_steps_alone(backend):
    """Masked steps are skipped: the real outputs and the final state are those of the real
    steps run on their own, and junk at masked steps gets exactly zero gradient."""
    q, k, v, g, s0 = _inputs(2, 2, 15, 3, 4)
    _, mask = _flags(2, 15, 4, seed=1)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g)]
    o, s = gla(*leaves, s0, mask=mask, backend=backend, chunk_size=4)
    for row in range(2):
        real = (x[row : row + 1, :, mask[row]] for x in (q, k, v, g))
        o_real, s_real = naive_gla(*real, s0[row : row + 1])
        assert_close(o[row : row + 1, :, mask[row]], o_real)
        assert_close(s[row : row + 1], s_real)
    (o * mask[:, None, :, None]).sum().backward()
    for name, x in zip("qkvg", leaves):
        assert x.grad.transpose(1, 2)[~mask].abs().max() == 0, name


def test_resets_with_hard_closing_gates_stay_finite():
    """Log gates far below exp's float32 range, resets among them: finite and exact."""
    q, k, v, g, s0 = _inputs(2, 2, 40, 4, 3, dtype=torch.float32, gate_shift=-30.0)
    reset, mask = _flags(2, 40, 16)
    o_ref, s_ref = naive_gla(q, k, v, g, s0, reset=reset, mask=mask)
    for gate in (g, g.mean(-1)):
        leaves = [x.clone().requires_grad_() for x in (q, k, v, gate)]
        o, s = chunk_gla(*leaves, s0, chunk_size=16, reset=reset, mask=mask)
        if gate is g:
            assert_close(o, o_ref)
            assert_close(s, s_ref)
        (o.sum() + s.sum()).backward()
        assert all(torch.isfinite(x.grad).all() for x in leaves)


def test_scalar_gate_equals_the_same_gate_on_every_key_dim():
    q, k, v, g, s0 = _inputs(2, 3, 21, 5, 4)
    g = g.mean(-1)
    reset, mask = _flags(2, 21, 8)
    for kw in ({}, {"reset": reset, "mask": mask}):
        o, s = gla(q, k, v, g, s0, chunk_size=8, **kw)
        o_vec, s_vec = gla(q, k, v, g.unsqueeze(-1).expand_as(q), s0, chunk_size=8, **kw)
        assert_close(o, o_vec)
        assert_close(s, s_vec)


def test_flag_errors_are_clear():
    q, k, v, g, _ = _inputs(2, 3, 5, 4, 6)
    with pytest.raises(TypeError, match=r"reset must be a torch.bool tensor of shape \[B, T\]"):
        gla(q, k, v, g, reset=torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"mask must have shape \[B, T\] = \[2, 5\]"):
        gla(q, k, v, g, mask=torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"g must have shape \[2, 3, 5\]"):
        gla(q, k, v, g[:, :, :4, 0])
