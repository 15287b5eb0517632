"""Retention op: recurrent == parallel == chunkwise (outputs, states, gradients), closed forms."""

from __future__ import annotations

import pytest
import torch

import mixerzoo.core.ops.retention as retention_ops
from mixerzoo.core.ops.gla import naive_gla
from mixerzoo.core.ops.retention import (
    chunk_bidirectional_retention,
    chunk_retention,
    naive_bidirectional_retention,
    naive_retention,
    parallel_retention,
    retention,
    retnet_decays,
)
from mixerzoo.core.testing import assert_close, outputs_and_grads

F64 = torch.float64

# (B, H, T, dk, dv): T = 1, odd T, T not a multiple of the chunk, batch 1, non-power-of-two dims.
SHAPES = [(1, 1, 1, 3, 5), (2, 3, 13, 5, 7), (1, 2, 37, 6, 3), (2, 2, 16, 4, 4)]
CHUNKS = [1, 4, 16, 64]


def _inputs(b, h, t, dk, dv, dtype=F64, with_state=True):
    q = torch.randn(b, h, t, dk, dtype=dtype)
    k = torch.randn(b, h, t, dk, dtype=dtype)
    v = torch.randn(b, h, t, dv, dtype=dtype)
    # Mix fast and slow decays, including gamma = 1 (no decay).
    gamma = torch.linspace(0.6, 1.0, h, dtype=dtype) if h > 1 else torch.tensor([0.9], dtype=dtype)
    s0 = torch.randn(b, h, dk, dv, dtype=dtype) if with_state else None
    return q, k, v, gamma, s0


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_parallel_chunk_agree(shape, with_state):
    b, h, t, dk, dv = shape
    inputs = _inputs(*shape, with_state=with_state)
    o_w, s_w = torch.randn(b, h, t, dv, dtype=F64), torch.randn(b, h, dk, dv, dtype=F64)
    (ref_o, ref_s), ref_g = outputs_and_grads(naive_retention, inputs, (o_w, s_w))
    forms = {"parallel": parallel_retention}
    for c in CHUNKS:
        forms[f"chunk{c}"] = lambda *a, c=c: chunk_retention(*a, chunk_size=c)
    for name, fn in forms.items():
        (o, s), grads = outputs_and_grads(fn, inputs, (o_w, s_w))
        assert_close(o, ref_o, msg=f"{name}: output")
        assert_close(s, ref_s, msg=f"{name}: final state")
        for arg, g, g_ref in zip(("q", "k", "v", "gamma", "initial_state"), grads, ref_g):
            if g_ref is not None:
                assert_close(g, g_ref, msg=f"{name}: grad of {arg}")


def test_chunk_matches_naive_in_float32():
    inputs = _inputs(2, 3, 45, 8, 6, dtype=torch.float32)
    o_ref, s_ref = naive_retention(*inputs)
    o, s = chunk_retention(*inputs, chunk_size=16)
    assert_close(o, o_ref)
    assert_close(s, s_ref)


def test_bidirectional_forms_agree_with_gradients():
    q, k, v, gamma, _ = _inputs(2, 3, 19, 5, 4, with_state=False)
    w = torch.randn(2, 3, 19, 4, dtype=F64)
    results = []
    for fn in (
        naive_bidirectional_retention,
        lambda *a: parallel_retention(*a, causal=False)[0],
        lambda *a: chunk_bidirectional_retention(*a, chunk_size=4),
    ):
        leaves = [x.clone().requires_grad_() for x in (q, k, v, gamma)]
        o = fn(*leaves)
        (o * w).sum().backward()
        results.append((o.detach(), [x.grad for x in leaves]))
    for o, grads in results[1:]:
        assert_close(o, results[0][0])
        for g, g_ref in zip(grads, results[0][1]):
            assert_close(g, g_ref)


def test_bidirectional_matches_definition():
    """o_n = sum_m gamma^|n-m| (q_n . k_m) v_m, written out with explicit loops."""
    q, k, v, gamma, _ = _inputs(1, 2, 6, 3, 2, with_state=False)
    expected = torch.zeros(1, 2, 6, 2, dtype=F64)
    for h in range(2):
        for n in range(6):
            for m in range(6):
                weight = gamma[h] ** abs(n - m) * (q[0, h, n] @ k[0, h, m])
                expected[0, h, n] += weight * v[0, h, m]
    for backend in ("naive", "chunk"):
        o, state = retention(q, k, v, gamma, causal=False, backend=backend, chunk_size=4)
        assert state is None
        assert_close(o, expected)


def test_no_decay_is_causal_linear_attention():
    """gamma = 1: o_n = q_n sum_{m <= n} k_m^T v_m (prefix sums of outer products)."""
    q, k, v, _, s0 = _inputs(2, 2, 9, 4, 3)
    gamma = torch.ones(2, dtype=F64)
    prefix = torch.cumsum(k.unsqueeze(-1) * v.unsqueeze(-2), dim=2) + s0.unsqueeze(2)
    expected = torch.einsum("bhtk,bhtkv->bhtv", q, prefix)
    for backend in ("naive", "chunk"):
        o, s = retention(q, k, v, gamma, s0, backend=backend, chunk_size=4)
        assert_close(o, expected)
        assert_close(s, prefix[:, :, -1])


def test_split_sequence_with_carried_state():
    q, k, v, gamma, _ = _inputs(2, 3, 23, 4, 5, with_state=False)
    whole, s_whole = retention(q, k, v, gamma, backend="chunk", chunk_size=8)
    first, s1 = retention(q[:, :, :10], k[:, :, :10], v[:, :, :10], gamma, chunk_size=8)
    second, s2 = retention(q[:, :, 10:], k[:, :, 10:], v[:, :, 10:], gamma, s1, chunk_size=8)
    assert_close(torch.cat([first, second], dim=2), whole)
    assert_close(s2, s_whole)


@pytest.mark.parametrize(
    "fn",
    [
        naive_retention,
        parallel_retention,
        lambda *a: chunk_retention(*a, chunk_size=2),
        lambda q, k, v, g, s: parallel_retention(q, k, v, g, causal=False)[0],
        lambda q, k, v, g, s: chunk_bidirectional_retention(q, k, v, g, chunk_size=2),
    ],
    ids=["naive", "parallel", "chunk", "parallel-bidir", "chunk-bidir"],
)
def test_gradcheck(fn):
    q, k, v, gamma, s0 = _inputs(1, 2, 5, 3, 2)
    inputs = [x.requires_grad_() for x in (q, k, v, gamma, s0)]
    assert torch.autograd.gradcheck(fn, inputs)


def test_retnet_decays():
    gammas = retnet_decays(4)
    assert_close(
        gammas, torch.tensor([1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128, 1 - 1 / 256], dtype=F64)
    )


def test_half_precision_inputs_compute_in_float32():
    q, k, v, gamma, s0 = _inputs(1, 2, 7, 4, 4, dtype=torch.bfloat16)
    o, s = retention(q, k, v, gamma.float(), s0)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32
    o_ref, s_ref = naive_retention(q.float(), k.float(), v.float(), gamma.float(), s0.float())
    assert_close(o, o_ref)
    assert_close(s, s_ref, dtype=torch.float32)


def test_backend_dispatch(monkeypatch):
    q, k, v, gamma, _ = _inputs(1, 1, 3, 2, 2)

    def refuse(*args, **kwargs):
        raise RuntimeError("naive called")

    monkeypatch.setattr(retention_ops, "naive_retention", refuse)
    retention(q, k, v, gamma, backend="chunk")
    with pytest.raises(RuntimeError, match="naive called"):
        retention(q, k, v, gamma, backend="naive")
    monkeypatch.setenv("MIXERZOO_BACKEND", "naive")
    with pytest.raises(RuntimeError, match="naive called"):
        retention(q, k, v, gamma)
    with pytest.raises(ValueError, match="not implemented"):
        retention(q, k, v, gamma, backend="mamba_ssm")


def test_clear_errors():
    q, k, v, gamma, s0 = _inputs(2, 3, 5, 4, 6)
    with pytest.raises(ValueError, match=r"k must have shape"):
        retention(q, k[:, :, :4], v, gamma)
    with pytest.raises(ValueError, match=r"v must have shape"):
        retention(q, k, v[:1], gamma)
    with pytest.raises(ValueError, match=r"gamma must have shape"):
        retention(q, k, v, gamma[:2])
    with pytest.raises(TypeError, match=r"floating-point"):
        retention(q.long(), k, v, gamma)
    with pytest.raises(ValueError, match=r"initial_state must have shape"):
        retention(q, k, v, gamma, s0[..., :5])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        retention(q, k, v, torch.tensor([0.5, 1.5, 0.9], dtype=F64))
    with pytest.raises(ValueError, match=r"no initial_state"):
        retention(q, k, v, gamma, s0, causal=False)
    with pytest.raises(ValueError, match=r"chunk_size"):
        retention(q, k, v, gamma, chunk_size=0)


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


@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("flags", ["reset", "mask", "both"])
def test_forms_agree_with_resets_and_masks(shape, flags):
    """Every form equals the naive recurrence with resets and masks: outputs, final states and
    the gradients of every input, gamma included."""
    b, h, t, dk, dv = shape
    inputs = _inputs(*shape)
    reset, mask = _flags(b, t, 4)
    kw = {"reset": reset if flags != "mask" else None, "mask": mask if flags != "reset" else None}
    o_w, s_w = torch.randn(b, h, t, dv, dtype=F64), torch.randn(b, h, dk, dv, dtype=F64)
    (ref_o, ref_s), ref_g = outputs_and_grads(
        lambda *a: naive_retention(*a, **kw), inputs, (o_w, s_w)
    )
    forms = {"parallel": lambda *a: parallel_retention(*a, **kw)}
    for c in (1, 4, 5, 16):
        forms[f"chunk{c}"] = lambda *a, c=c: chunk_retention(*a, chunk_size=c, **kw)
    for name, fn in forms.items():
        (o, s), grads = outputs_and_grads(fn, inputs, (o_w, s_w))
        assert_close(o, ref_o, msg=f"{name}: output")
        assert_close(s, ref_s, msg=f"{name}: final state")
        for arg, g, g_ref in zip(("q", "k", "v", "gamma", "initial_state"), grads, ref_g):
            assert_close(g, g_ref, msg=f"{name}: grad of {arg}")


def test_naive_retention_with_flags_is_simple_gla():
    """Two independent recurrences: retention = GLA with the gate log(gamma) on every key dim."""
    q, k, v, gamma, s0 = _inputs(2, 3, 15, 4, 5)
    reset, mask = _flags(2, 15, 4)
    o, s = naive_retention(q, k, v, gamma, s0, reset=reset, mask=mask)
    g = torch.log(gamma).view(1, 3, 1, 1).expand_as(q)
    o_gla, s_gla = naive_gla(q, k, v, g, s0, reset=reset, mask=mask)
    assert_close(o, o_gla)
    assert_close(s, s_gla)


def test_naive_reset_equals_pieces_from_zero():
    q, k, v, gamma, s0 = _inputs(2, 2, 17, 3, 4)
    reset, _ = _flags(2, 17, 4)
    o, s = naive_retention(q, k, v, gamma, s0, reset=reset)
    for row in range(2):
        cuts = [0, *[int(i) for i in torch.nonzero(reset[row]).flatten() if i > 0], 17]
        state = None if reset[row, 0] else s0[row : row + 1]
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            o_piece, state = naive_retention(
                *(x[row : row + 1, :, lo:hi] for x in (q, k, v)), gamma, state
            )
            assert_close(o[row : row + 1, :, lo:hi], o_piece)
            last, state = state, None
        assert_close(s[row : row + 1], last)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_mask_equals_the_real_tokens_alone(causal, backend):
    """Padding (trailing and holes) changes no real output, nor the final state, and padded
    inputs get exactly zero gradient through the real outputs."""
    q, k, v, gamma, s0 = _inputs(2, 2, 15, 3, 4, with_state=causal)
    _, mask = _flags(2, 15, 4, seed=1)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    o, s = retention(*leaves, gamma, s0, mask=mask, causal=causal, backend=backend, chunk_size=4)
    for row in range(2):
        real = (x[row : row + 1, :, mask[row]] for x in (q, k, v))
        state = None if s0 is None else s0[row : row + 1]
        o_real, s_real = retention(*real, gamma, state, causal=causal, backend="naive")
        assert_close(o[row : row + 1, :, mask[row]], o_real)
        if causal:
            assert_close(s[row : row + 1], s_real)
    (o * mask[:, None, :, None]).sum().backward()
    for name, x in zip("qkv", leaves):
        assert x.grad.transpose(1, 2)[~mask].abs().max() == 0, name


def test_bidirectional_with_mask_matches_definition():
    """o_n = sum_{m real} gamma^|c_n - c_m| (q_n . k_m) v_m, c counting real tokens, by loops
    (at real n; outputs at padded positions are unspecified and differ between the forms)."""
    q, k, v, gamma, _ = _inputs(2, 2, 9, 3, 2, with_state=False)
    _, mask = _flags(2, 9, 4, seed=2)
    count = mask.long().cumsum(1)
    expected = torch.zeros(2, 2, 9, 2, dtype=F64)
    for b in range(2):
        for h in range(2):
            for n in range(9):
                for m in range(9):
                    if mask[b, n] and mask[b, m]:
                        weight = gamma[h] ** abs(int(count[b, n] - count[b, m]))
                        expected[b, h, n] += weight * (q[b, h, n] @ k[b, h, m]) * v[b, h, m]
    real = mask.view(2, 1, 9).expand(2, 2, 9)
    w = torch.randn(2, 2, 9, 2, dtype=F64) * real.unsqueeze(-1)
    grads = []
    for fn in (
        lambda *a: naive_bidirectional_retention(*a, mask=mask),
        lambda *a: parallel_retention(*a, causal=False, mask=mask)[0],
        lambda *a: chunk_bidirectional_retention(*a, chunk_size=4, mask=mask),
    ):
        leaves = [x.clone().requires_grad_() for x in (q, k, v, gamma)]
        o = fn(*leaves)
        assert_close(o[real], expected[real])
        (o * w).sum().backward()
        grads.append([x.grad for x in leaves])
    for other in grads[1:]:
        for g, g_ref in zip(other, grads[0]):
            assert_close(g, g_ref)


def test_flag_errors_are_clear():
    q, k, v, gamma, _ = _inputs(2, 3, 5, 4, 6)
    reset = torch.zeros(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"causal=False .* takes no reset"):
        retention(q, k, v, gamma, reset=reset, causal=False)
    with pytest.raises(TypeError, match=r"reset must be a torch.bool tensor"):
        retention(q, k, v, gamma, reset=reset.long())
    with pytest.raises(ValueError, match=r"mask must have shape \[B, T\]"):
        retention(q, k, v, gamma, mask=reset[:1])
