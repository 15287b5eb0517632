"""Registry-driven tests every mixer gets for free (the mixer contract in DESIGN.md).

For each registered mixer (and its causal variant when its constructor has a ``causal`` flag):
shapes, finite outputs and gradients; for causal mixers, ``forward`` over the whole sequence
equals ``step`` token by token and equals ``forward`` over two halves with the state carried.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from mixerzoo.core import create_mixer, get_mixer_class, list_mixers
from mixerzoo.core.mixers.base import Mixer
from mixerzoo.core.testing import assert_close

D_MODEL = 32
T = 11  # odd, not a multiple of any chunk size


# Variants whose switch is not called ``causal``: the other direction of each mixer.
EXTRA_VARIANTS = {
    "lstm": {"bidirectional": True},
    "gru": {"bidirectional": True},
    "fsmn": {"rorder": 2},
}


def _variant_id(name: str, kwargs: dict) -> str:
    return name + "".join(
        f"-{k}={v}" if k != "causal" else ("-causal" if v else "-bidirectional")
        for k, v in kwargs.items()
    )


def _cases() -> list[tuple[str, dict]]:
    """Every registered mixer with its defaults, and the other direction of each mixer that has
    one (``causal`` flipped, or the switch in ``EXTRA_VARIANTS``)."""
    cases = []
    for name in list_mixers():
        cases.append((name, {}))
        params = inspect.signature(get_mixer_class(name)).parameters
        if "causal" in params:
            cases.append((name, {"causal": not params["causal"].default}))
        if name in EXTRA_VARIANTS:
            cases.append((name, EXTRA_VARIANTS[name]))
    return cases


CASES = _cases()
IDS = [_variant_id(name, kw) for name, kw in CASES]


def _build(name: str, kwargs: dict) -> Mixer:
    torch.manual_seed(0)
    mixer = create_mixer(name, d_model=D_MODEL, **kwargs).double().eval()
    assert isinstance(mixer, Mixer), f"{name} must subclass mixerzoo.core.mixers.base.Mixer"
    return mixer


CAUSAL = [(c, i) for c, i in zip(CASES, IDS) if _build(*c).causal]
CAUSAL_CASES, CAUSAL_IDS = [c for c, _ in CAUSAL], [i for _, i in CAUSAL]


def _out(result):
    assert isinstance(result, tuple) and len(result) == 2, "mixers return (y, state)"
    return result


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_shapes_finite_and_gradients(name, kwargs):
    mixer = _build(name, kwargs).train()
    x = torch.randn(3, T, D_MODEL, dtype=torch.float64, requires_grad=True)
    y, _ = _out(mixer(x))
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in mixer.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), (
        "every parameter gets a finite gradient"
    )


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_batch_one_and_length_one(name, kwargs):
    mixer = _build(name, kwargs)
    for b, t in [(1, T), (2, 1)]:
        y, _ = _out(mixer(torch.randn(b, t, D_MODEL, dtype=torch.float64)))
        assert y.shape == (b, t, D_MODEL)


BIDIRECTIONAL = [(c, i) for c, i in zip(CASES, IDS) if not _build(*c).causal]


@pytest.mark.parametrize(
    "name,kwargs", [c for c, _ in BIDIRECTIONAL], ids=[i for _, i in BIDIRECTIONAL]
)
def test_bidirectional_mixers_have_no_step(name, kwargs):
    """Bidirectional mixers refuse step() clearly (causal ones: test_causal_forward_equals_step)."""
    mixer = _build(name, kwargs)
    with pytest.raises(NotImplementedError, match="not causal"):
        mixer.step(torch.randn(2, D_MODEL, dtype=torch.float64), None)


@pytest.mark.parametrize("name,kwargs", CAUSAL_CASES, ids=CAUSAL_IDS)
def test_causal_forward_equals_step(name, kwargs):
    mixer = _build(name, kwargs)
    x = torch.randn(2, T, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        y_full, _ = mixer(x)
        state = mixer.init_state(2, dtype=torch.float64)
        ys = []
        for t in range(T):
            y_t, state = mixer.step(x[:, t], state)
            ys.append(y_t)
    assert_close(
        torch.stack(ys, dim=1), y_full, rtol=1e-6, atol=1e-8, msg=f"{name}: step != forward"
    )


@pytest.mark.parametrize("name,kwargs", CAUSAL_CASES, ids=CAUSAL_IDS)
def test_causal_forward_with_carried_state(name, kwargs):
    mixer = _build(name, kwargs)
    x = torch.randn(2, T, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        y_full, _ = mixer(x)
        cut = T // 2
        y1, state = mixer(x[:, :cut])
        y2, _ = mixer(x[:, cut:], state)
    assert_close(
        torch.cat([y1, y2], dim=1), y_full, rtol=1e-6, atol=1e-8, msg=f"{name}: split != whole"
    )


@pytest.mark.parametrize("name,kwargs", CAUSAL_CASES, ids=CAUSAL_IDS)
def test_causality(name, kwargs):
    """Changing future inputs never changes past outputs of a causal mixer."""
    mixer = _build(name, kwargs)
    x = torch.randn(2, T, D_MODEL, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 6:] = torch.randn_like(x2[:, 6:])
    with torch.no_grad():
        assert_close(mixer(x2)[0][:, :6], mixer(x)[0][:, :6], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", list_mixers())
def test_wrong_shape_is_a_clear_error(name):
    mixer = _build(name, {})
    with pytest.raises(ValueError, match=r"x must have shape"):
        mixer(torch.randn(2, T, D_MODEL + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must have shape"):
        mixer(torch.randn(T, D_MODEL, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"floating-point"):
        mixer(torch.ones(2, T, D_MODEL, dtype=torch.long))


def test_unknown_mixer_lists_known_names():
    with pytest.raises(KeyError, match=r"unknown mixer 'atention'.*Did you mean 'attention'"):
        create_mixer("atention", d_model=8)


# --- resets, padding masks and the state helpers ----------------------------------------------

from mixerzoo.core.state import reset_state, select_state  # noqa: E402

T_RESET = 13
# Row 0: reset at t = 0 (the carried state is dropped) and at 5; row 1: at 9 and at the last step.
RESETS = {0: [0, 5], 1: [9, T_RESET - 1]}


def _reset_tensor(batch: int = 2, t: int = T_RESET) -> torch.Tensor:
    reset = torch.zeros(batch, t, dtype=torch.bool)
    for row, steps in RESETS.items():
        reset[row, steps] = True
    return reset


def _pieces(mixer, x, reset, state0):
    """Each row cut at its resets, every piece run on its own: the first from the row's carried
    state (unless reset at t = 0), the others from ``init_state``. Returns (y, last states)."""
    rows, last_states = [], []
    for b in range(x.shape[0]):
        cuts = [0, *[int(t) for t in torch.nonzero(reset[b]).flatten() if t > 0], x.shape[1]]
        ys, state = [], None
        for i, (start, stop) in enumerate(zip(cuts[:-1], cuts[1:])):
            carried = i == 0 and not bool(reset[b, 0])
            state = select_state(state0, slice(b, b + 1)) if carried else None
            y, state = mixer(x[b : b + 1, start:stop], state)
            ys.append(y)
        rows.append(torch.cat(ys, dim=1))
        last_states.append(state)
    return torch.cat(rows, dim=0), last_states


@pytest.mark.parametrize("name,kwargs", CAUSAL_CASES, ids=CAUSAL_IDS)
def test_reset_equals_pieces_run_separately(name, kwargs):
    """A stream with resets = its episodes run separately: outputs, input gradients, and the
    state it returns (continuing from it equals continuing from the last episode's state)."""
    mixer = _build(name, kwargs)
    prefix = torch.randn(2, 4, D_MODEL, dtype=torch.float64)
    x = torch.randn(2, T_RESET, D_MODEL, dtype=torch.float64, requires_grad=True)
    after = torch.randn(2, 3, D_MODEL, dtype=torch.float64)
    weight = torch.randn(2, T_RESET, D_MODEL, dtype=torch.float64)
    reset = _reset_tensor()
    with torch.no_grad():
        _, state0 = mixer(prefix)
    y_stream, state_stream = mixer(x, state0, reset=reset)
    (grad_stream,) = torch.autograd.grad((y_stream * weight).sum(), x)
    y_pieces, last_states = _pieces(mixer, x, reset, state0)
    (grad_pieces,) = torch.autograd.grad((y_pieces * weight).sum(), x)
    assert_close(y_stream, y_pieces, rtol=1e-6, atol=1e-8, msg=f"{name}: outputs")
    assert_close(grad_stream, grad_pieces, rtol=1e-6, atol=1e-8, msg=f"{name}: input gradients")
    with torch.no_grad():
        y_next, _ = mixer(after, state_stream)
        y_next_pieces = torch.cat(
            [mixer(after[b : b + 1], last_states[b])[0] for b in range(2)], dim=0
        )
    assert_close(y_next, y_next_pieces, rtol=1e-6, atol=1e-8, msg=f"{name}: returned state")


@pytest.mark.parametrize("name,kwargs", CAUSAL_CASES, ids=CAUSAL_IDS)
def test_reset_state_helper_equals_init_state(name, kwargs):
    """Zeroing the state of the rows whose episode ended (core.state.reset_state), then stepping
    on, equals stepping those rows from init_state; the other rows continue."""
    mixer = _build(name, kwargs)
    prefix = torch.randn(3, 5, D_MODEL, dtype=torch.float64)
    steps = torch.randn(3, 4, D_MODEL, dtype=torch.float64)
    done = torch.tensor([True, False, True])
    with torch.no_grad():
        _, state = mixer(prefix)
        state_reset = reset_state(state, done)
        fresh = mixer.init_state(3, dtype=torch.float64)
        outs, outs_fresh, outs_kept = [], [], []
        s_a, s_b, s_c = state_reset, fresh, state
        for t in range(steps.shape[1]):
            y, s_a = mixer.step(steps[:, t], s_a)
            y_fresh, s_b = mixer.step(steps[:, t], s_b)
            y_kept, s_c = mixer.step(steps[:, t], s_c)
            outs.append(y), outs_fresh.append(y_fresh), outs_kept.append(y_kept)
    y, y_fresh, y_kept = (torch.stack(o, dim=1) for o in (outs, outs_fresh, outs_kept))
    assert_close(y[done], y_fresh[done], rtol=1e-6, atol=1e-8, msg=f"{name}: reset rows")
    assert_close(y[~done], y_kept[~done], rtol=1e-6, atol=1e-8, msg=f"{name}: kept rows")


MASKABLE = [(c, i) for c, i in zip(CASES, IDS) if _build(*c).supports_mask]
MASK_CASES, MASK_IDS = [c for c, _ in MASKABLE], [i for _, i in MASKABLE]
T_MASK = 12
LENGTHS = (T_MASK, 7, 1)


def _padded_batch(layout: str):
    """Three rows of real lengths ``LENGTHS`` laid out in ``T_MASK`` positions with junk elsewhere:
    ``"trailing"`` (padding after each row's length) or ``"holes"`` (junk between real tokens)."""
    torch.manual_seed(1)
    real = [torch.randn(n, D_MODEL, dtype=torch.float64) for n in LENGTHS]
    x = 50 * torch.randn(len(LENGTHS), T_MASK, D_MODEL, dtype=torch.float64)
    mask = torch.zeros(len(LENGTHS), T_MASK, dtype=torch.bool)
    for b, n in enumerate(LENGTHS):
        if layout == "trailing":
            positions = torch.arange(n)
        else:
            positions = torch.randperm(T_MASK)[:n].sort().values
        mask[b, positions] = True
        x[b, positions] = real[b]
    return real, x.requires_grad_(), mask


@pytest.mark.parametrize("layout", ["trailing", "holes"])
@pytest.mark.parametrize("name,kwargs", MASK_CASES, ids=MASK_IDS)
def test_padding_changes_no_real_output(name, kwargs, layout):
    """Junk at padded positions changes no real output (nor, to first order, through the
    gradient); for causal mixers the returned state is the state after the last real token."""
    mixer = _build(name, kwargs)
    real, x, mask = _padded_batch(layout)
    y, state = mixer(x, mask=mask)
    assert y.shape == x.shape
    weight = torch.randn_like(y) * mask.unsqueeze(-1)
    (grad,) = torch.autograd.grad((y * weight).sum(), x)
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    assert grad[~mask].abs().max() == 0, f"{name}: padded inputs reach real outputs"
    after = torch.randn(1, 3, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        for b, seq in enumerate(real):
            y_alone, state_alone = mixer(seq.unsqueeze(0))
            assert_close(
                y[b][mask[b]].detach(), y_alone[0], rtol=1e-6, atol=1e-8, msg=f"{name}: row {b}"
            )
            if mixer.causal:
                y_next, _ = mixer(after, select_state(state, slice(b, b + 1)))
                y_next_alone, _ = mixer(after, state_alone)
                assert_close(y_next, y_next_alone, rtol=1e-6, atol=1e-8, msg=f"{name}: state {b}")


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_mask_and_reset_refusals_are_clear(name, kwargs):
    mixer = _build(name, kwargs)
    x = torch.randn(2, T, D_MODEL, dtype=torch.float64)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, -3:] = False
    if not mixer.supports_mask:
        with pytest.raises(ValueError, match="takes no padding mask"):
            mixer(x, mask=mask)
    if not mixer.causal:
        with pytest.raises(ValueError, match="reset is for causal mixers"):
            mixer(x, reset=torch.zeros(2, T, dtype=torch.bool))
    if mixer.supports_mask:
        with pytest.raises(TypeError, match="mask must be a torch.bool tensor"):
            mixer(x, mask=mask.float())
        with pytest.raises(ValueError, match=r"mask must have shape \[B, T\]"):
            mixer(x, mask=mask[:, :-1])
    if mixer.causal:
        with pytest.raises(ValueError, match=r"reset must have shape \[B, T\]"):
            mixer(x, reset=torch.zeros(2, T + 1, dtype=torch.bool))
