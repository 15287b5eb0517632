"""mLSTM op: recurrent == parallel == chunkwise (outputs, states, gradients), the unstabilised
definition of the paper, stabiliser invariance, and stability with large input gates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mixerzoo.core.ops.mlstm as mlstm_ops
from mixerzoo.core.ops.mlstm import chunk_mlstm, mlstm, naive_mlstm, parallel_mlstm
from mixerzoo.core.testing import assert_close, outputs_and_grads

F64 = torch.float64

# (B, H, T, dk, dv): T = 1, odd T, T not a multiple of the chunk, batch 1, non-power-of-two dims.
SHAPES = [(1, 1, 1, 3, 5), (2, 3, 13, 5, 7), (1, 2, 37, 6, 3), (2, 2, 16, 4, 4)]
CHUNKS = [1, 4, 16, 64]


def _inputs(b, h, t, dk, dv, dtype=F64, with_state=True, gate_scale=2.0):
    q = torch.randn(b, h, t, dk, dtype=dtype)
    k = torch.randn(b, h, t, dk, dtype=dtype) / dk**0.5
    v = torch.randn(b, h, t, dv, dtype=dtype)
    log_i = gate_scale * torch.randn(b, h, t, dtype=dtype)
    log_f = F.logsigmoid(gate_scale * torch.randn(b, h, t, dtype=dtype) + 1.0)
    state = None
    if with_state:
        state = (
            torch.randn(b, h, dk, dv, dtype=dtype),
            torch.randn(b, h, dk, dtype=dtype),
            torch.randn(b, h, dtype=dtype),
        )
    return q, k, v, log_i, log_f, state


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_parallel_chunk_agree(shape, with_state):
    b, h, t, dk, dv = shape
    inputs = _inputs(*shape, with_state=with_state)
    weights = [
        torch.randn(b, h, t, dv, dtype=F64),
        torch.randn(b, h, dk, dv, dtype=F64),
        torch.randn(b, h, dk, dtype=F64),
        torch.randn(b, h, dtype=F64),
    ]
    ref_out, ref_grads = outputs_and_grads(naive_mlstm, inputs, weights)
    forms = {"parallel": parallel_mlstm}
    for c in CHUNKS:
        forms[f"chunk{c}"] = lambda *a, c=c: chunk_mlstm(*a, chunk_size=c)
    names = ("q", "k", "v", "log_i", "log_f", "C0", "n0", "m0")
    for name, fn in forms.items():
        out, grads = outputs_and_grads(fn, inputs, weights)
        for label, x, x_ref in zip(("h", "C", "n", "m"), out, ref_out):
            assert_close(x, x_ref, msg=f"{name}: {label}")
        assert len(grads) == len(ref_grads)
        for arg, g, g_ref in zip(names, grads, ref_grads):
            if g_ref is None:  # no initial state given
                assert g is None
                continue
            assert_close(g, g_ref, msg=f"{name}: grad of {arg}")


def test_matches_unstabilised_definition():
    """The paper's plain mLSTM recurrence, without the stabiliser, in float64 with moderate
    gates: C_t = f_t C + i_t k^T v, n_t = f_t n + i_t k, h_t = q C / max(|q . n|, 1)."""
    q, k, v, log_i, log_f, _ = _inputs(2, 2, 17, 4, 3, with_state=False)
    c_mem = torch.zeros(2, 2, 4, 3, dtype=F64)
    n_mem = torch.zeros(2, 2, 4, dtype=F64)
    expected = []
    for t in range(17):
        f, i = log_f[:, :, t].exp(), log_i[:, :, t].exp()
        c_mem = f[..., None, None] * c_mem + i[..., None, None] * torch.einsum(
            "bhk,bhv->bhkv", k[:, :, t], v[:, :, t]
        )
        n_mem = f[..., None] * n_mem + i[..., None] * k[:, :, t]
        qn = (q[:, :, t] * n_mem).sum(-1).abs().clamp(min=1.0)
        expected.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], c_mem) / qn[..., None])
    expected = torch.stack(expected, dim=2)
    for backend in ("naive", "chunk"):
        h, (c, n, m) = mlstm(q, k, v, log_i, log_f, eps=0.0, backend=backend, chunk_size=4)
        assert_close(h, expected)
        # The stored memory is the true one scaled by exp(-m).
        assert_close(c * m.exp()[..., None, None], c_mem)
        assert_close(n * m.exp()[..., None], n_mem)


def test_outputs_do_not_depend_on_the_stabiliser():
    """(C e^d, n e^d, m - d) is the same memory: with eps = 0 the outputs are unchanged."""
    q, k, v, log_i, log_f, (c0, n0, m0) = _inputs(1, 2, 9, 3, 4)
    shift = torch.tensor([[2.5, -4.0]], dtype=F64)
    shifted = (c0 * shift.exp()[..., None, None], n0 * shift.exp()[..., None], m0 - shift)
    for backend in ("naive", "chunk"):
        h, _ = mlstm(q, k, v, log_i, log_f, (c0, n0, m0), eps=0.0, backend=backend, chunk_size=4)
        h_shifted, _ = mlstm(q, k, v, log_i, log_f, shifted, eps=0.0, backend=backend, chunk_size=4)
        assert_close(h_shifted, h)


def test_large_input_gates_stay_finite_and_agree():
    """Input-gate pre-activations beyond +-89: exp overflows float32 without the stabiliser."""
    q, k, v, log_i, log_f, _ = _inputs(
        1, 2, 40, 4, 4, dtype=torch.float32, with_state=False, gate_scale=60.0
    )
    assert log_i.abs().max() > 89  # exp(89) is inf in float32
    h_ref, state_ref = naive_mlstm(q, k, v, log_i, log_f)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, log_i, log_f)]
    h, state = chunk_mlstm(*leaves, chunk_size=16)
    assert torch.isfinite(h).all() and all(torch.isfinite(x).all() for x in state)
    assert_close(h, h_ref)
    for x, x_ref in zip(state, state_ref):
        assert_close(x, x_ref)
    h.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in leaves)


def test_chunk_matches_naive_in_float32():
    q, k, v, log_i, log_f, state = _inputs(2, 2, 45, 8, 6, dtype=torch.float32)
    h_ref, s_ref = naive_mlstm(q, k, v, log_i, log_f, state)
    h, s = chunk_mlstm(q, k, v, log_i, log_f, state, chunk_size=16)
    assert_close(h, h_ref)
    for x, x_ref in zip(s, s_ref):
        assert_close(x, x_ref)


def test_split_sequence_with_carried_state():
    q, k, v, log_i, log_f, _ = _inputs(2, 2, 25, 4, 3, with_state=False)
    whole, s_whole = mlstm(q, k, v, log_i, log_f, chunk_size=8)
    cut = 9
    first, s1 = mlstm(*(x[:, :, :cut] for x in (q, k, v, log_i, log_f)), chunk_size=8)
    second, s2 = mlstm(*(x[:, :, cut:] for x in (q, k, v, log_i, log_f)), s1, chunk_size=8)
    assert_close(torch.cat([first, second], dim=2), whole)
    for x, x_ref in zip(s2, s_whole):
        assert_close(x, x_ref)


@pytest.mark.parametrize(
    "fn",
    [naive_mlstm, parallel_mlstm, lambda *a: chunk_mlstm(*a, chunk_size=2)],
    ids=["naive", "parallel", "chunk"],
)
def test_gradcheck(fn):
    q, k, v, log_i, log_f, (c0, n0, m0) = _inputs(1, 2, 5, 3, 2)
    inputs = [x.requires_grad_() for x in (q, k, v, log_i, log_f, c0, n0, m0)]

    def run(q, k, v, log_i, log_f, c0, n0, m0):
        h, (c, n, m) = fn(q, k, v, log_i, log_f, (c0, n0, m0))
        return h, c, n, m

    assert torch.autograd.gradcheck(run, inputs)


def test_backend_dispatch(monkeypatch):
    q, k, v, log_i, log_f, _ = _inputs(1, 1, 3, 2, 2)

    def refuse(*args, **kwargs):
        raise RuntimeError("naive called")

    monkeypatch.setattr(mlstm_ops, "naive_mlstm", refuse)
    mlstm(q, k, v, log_i, log_f, backend="chunk")
    with pytest.raises(RuntimeError, match="naive called"):
        mlstm(q, k, v, log_i, log_f, backend="naive")


def test_clear_errors():
    q, k, v, log_i, log_f, (c0, n0, m0) = _inputs(2, 3, 5, 4, 6)
    with pytest.raises(ValueError, match=r"log_i must have shape"):
        mlstm(q, k, v, log_i[..., None], log_f)
    with pytest.raises(ValueError, match=r"log_f must have shape"):
        mlstm(q, k, v, log_i, log_f[:, :2])
    with pytest.raises(TypeError, match=r"floating-point"):
        mlstm(q, k.long(), v, log_i, log_f)
    with pytest.raises(TypeError, match=r"tuple \(C, n, m\)"):
        mlstm(q, k, v, log_i, log_f, c0)
    with pytest.raises(ValueError, match=r"initial_state\[1\] \(n\) must have shape"):
        mlstm(q, k, v, log_i, log_f, (c0, n0[..., :3], m0))
    with pytest.raises(ValueError, match=r"initial_state\[2\] \(m\) must have shape"):
        mlstm(q, k, v, log_i, log_f, (c0, n0, m0[..., None]))


# --- resets and padding masks -------------------------------------------------------------


def _flags(b, t, chunk, seed=0):
    """Row 0: resets at t = 0, on the chunk boundary ``chunk``, twice more in that chunk and at
    the last step; other rows: random resets. Masks: random holes, a whole chunk ``[chunk,
    2 chunk)`` of row 1 padded (a chunk without a single input), row 0 ends in padding."""
    gen = torch.Generator().manual_seed(seed)
    reset = torch.rand(b, t, generator=gen) < 0.25
    reset[0] = False
    for step in (0, chunk, chunk + 1, chunk + 3, t - 1):
        if step < t:
            reset[0, step] = True
    mask = torch.rand(b, t, generator=gen) < 0.7
    mask[0, -2:] = False
    if b > 1:
        mask[1, chunk : 2 * chunk] = False
    return reset, mask


STATE_NAMES = ("q", "k", "v", "log_i", "log_f", "C0", "n0", "m0")


def _weights(b, h, t, dk, dv):
    return [
        torch.randn(b, h, t, dv, dtype=F64),
        torch.randn(b, h, dk, dv, dtype=F64),
        torch.randn(b, h, dk, dtype=F64),
        torch.randn(b, h, dtype=F64),
    ]


@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("flags", ["reset", "mask", "both"])
def test_forms_agree_with_resets_and_masks(shape, flags):
    """Every form equals the stabilised recurrence with resets and masks: outputs, the final
    (C, n, m) (the stabiliser restarts from 0 at a reset) and every input's gradient."""
    b, h, t, dk, dv = shape
    inputs = _inputs(*shape)
    reset, mask = _flags(b, t, 4)
    kw = {"reset": reset if flags != "mask" else None, "mask": mask if flags != "reset" else None}
    weights = _weights(b, h, t, dk, dv)
    ref_out, ref_grads = outputs_and_grads(lambda *a: naive_mlstm(*a, **kw), inputs, weights)
    forms = {"parallel": lambda *a: parallel_mlstm(*a, **kw)}
    for c in (1, 4, 5, 16):
        forms[f"chunk{c}"] = lambda *a, c=c: chunk_mlstm(*a, chunk_size=c, **kw)
    for name, fn in forms.items():
        out, grads = outputs_and_grads(fn, inputs, weights)
        for label, x, x_ref in zip(("h", "C", "n", "m"), out, ref_out):
            assert_close(x, x_ref, msg=f"{name}: {label}")
        for arg, g, g_ref in zip(STATE_NAMES, grads, ref_grads):
            assert_close(g, g_ref, msg=f"{name}: grad of {arg}")


def test_naive_reset_equals_pieces_from_the_initial_state():
    """The reference itself: a row with resets = its pieces, each from the zero state (m = 0;
    the first from the given state), with the last piece's (C, n, m) as the final state."""
    q, k, v, log_i, log_f, s0 = _inputs(2, 2, 17, 3, 4)
    reset, _ = _flags(2, 17, 4)
    out, state = naive_mlstm(q, k, v, log_i, log_f, s0, reset=reset)
    for row in range(2):
        cuts = [0, *[int(i) for i in torch.nonzero(reset[row]).flatten() if i > 0], 17]
        piece_state = None if reset[row, 0] else tuple(x[row : row + 1] for x in s0)
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            piece = (x[row : row + 1, :, lo:hi] for x in (q, k, v, log_i, log_f))
            h_piece, piece_state = naive_mlstm(*piece, piece_state)
            assert_close(out[row : row + 1, :, lo:hi], h_piece)
            last, piece_state = piece_state, None
        for x, x_ref in zip(state, last):
            assert_close(x[row : row + 1], x_ref)


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_mask_equals_the_real_steps_alone(backend):
    """Masked steps are skipped exactly: the real outputs and the final (C, n, m) are those of
    the real steps alone, and junk at masked steps gets exactly zero gradient."""
    q, k, v, log_i, log_f, s0 = _inputs(2, 2, 15, 3, 4)
    _, mask = _flags(2, 15, 4, seed=1)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, log_i, log_f)]
    out, state = mlstm(*leaves, s0, mask=mask, backend=backend, chunk_size=4)
    for row in range(2):
        real = (x[row : row + 1, :, mask[row]] for x in (q, k, v, log_i, log_f))
        h_real, state_real = naive_mlstm(*real, tuple(x[row : row + 1] for x in s0))
        assert_close(out[row : row + 1, :, mask[row]], h_real)
        for x, x_ref in zip(state, state_real):
            assert_close(x[row : row + 1], x_ref)
    (out * mask[:, None, :, None]).sum().backward()
    for name, x in zip(STATE_NAMES, leaves):
        assert x.grad.transpose(1, 2)[~mask].abs().max() == 0, name


def test_input_gate_minus_infinity_writes_nothing():
    """log i = -inf is a valid value (input gate 0), also over a whole chunk: finite outputs and
    gradients, equal to the recurrence."""
    q, k, v, log_i, log_f, s0 = _inputs(1, 2, 12, 3, 2)
    log_i[:, :, 4:9] = float("-inf")
    weights = _weights(1, 2, 12, 3, 2)
    ref_out, ref_grads = outputs_and_grads(naive_mlstm, (q, k, v, log_i, log_f, s0), weights)
    out, grads = outputs_and_grads(
        lambda *a: chunk_mlstm(*a, chunk_size=4), (q, k, v, log_i, log_f, s0), weights
    )
    for x, x_ref in zip([*out, *grads], [*ref_out, *ref_grads]):
        assert torch.isfinite(x).all()
        assert_close(x, x_ref)


def test_resets_with_large_gates_stay_finite_and_agree():
    q, k, v, log_i, log_f, _ = _inputs(
        2, 2, 40, 4, 4, dtype=torch.float32, with_state=False, gate_scale=60.0
    )
    reset, mask = _flags(2, 40, 16)
    h_ref, state_ref = naive_mlstm(q, k, v, log_i, log_f, reset=reset, mask=mask)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, log_i, log_f)]
    h, state = chunk_mlstm(*leaves, chunk_size=16, reset=reset, mask=mask)
    assert_close(h, h_ref)
    for x, x_ref in zip(state, state_ref):
        assert_close(x, x_ref)
    (h.sum() + sum(x.sum() for x in state)).backward()
    assert all(torch.isfinite(x.grad).all() for x in leaves)


def test_flag_errors_are_clear():
    q, k, v, log_i, log_f, _ = _inputs(2, 3, 5, 4, 6)
    with pytest.raises(TypeError, match=r"reset must be a torch.bool tensor of shape \[B, T\]"):
        mlstm(q, k, v, log_i, log_f, reset=torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"mask must have shape \[B, T\] = \[2, 5\]"):
        mlstm(q, k, v, log_i, log_f, mask=torch.ones(5, 2, dtype=torch.bool))
