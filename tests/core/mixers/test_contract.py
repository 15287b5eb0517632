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


def _cases() -> list[tuple[str, dict]]:
    cases = []
    for name in list_mixers():
        cases.append((name, {}))
        params = inspect.signature(get_mixer_class(name)).parameters
        if "causal" in params and params["causal"].default is False:
            cases.append((name, {"causal": True}))
    return cases


CASES = _cases()
IDS = [name + ("-causal" if kw else "") for name, kw in CASES]


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


@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_bidirectional_mixers_have_no_step(name, kwargs):
    mixer = _build(name, kwargs)
    if mixer.causal:
        assert callable(mixer.step)
        return
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
