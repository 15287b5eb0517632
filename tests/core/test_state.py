"""core.state: one set of helpers for every mixer's state (nested tuples/dicts, batch first)."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core.state import map_state, reset_state, select_state, state_batch_size, state_to


def _state():
    return {
        "kv": (torch.ones(3, 2, 4), torch.full((3, 5), 2.0)),
        "valid": torch.ones(3, 4, dtype=torch.bool),
        "offset": torch.tensor([7, 8, 9]),
    }


def test_reset_select_and_move():
    state = _state()
    done = torch.tensor([False, True, False])
    out = reset_state(state, done)
    assert out["kv"][0][1].abs().sum() == 0 and out["kv"][0][0].equal(state["kv"][0][0])
    assert out["valid"].tolist() == [[True] * 4, [False] * 4, [True] * 4]
    assert out["offset"].tolist() == [7, 0, 9]
    sub = select_state(state, torch.tensor([0, 2]))
    assert state_batch_size(sub) == 2 and sub["offset"].tolist() == [7, 9]
    moved = state_to(state, "cpu", torch.float64)
    assert moved["kv"][1].dtype == torch.float64 and moved["offset"].dtype == torch.long
    assert moved["valid"].dtype == torch.bool
    assert map_state(lambda t: t * 0, None) is None


def test_bad_states_and_flags_are_clear_errors():
    with pytest.raises(ValueError, match="batch as its first dimension"):
        state_batch_size((torch.zeros(3, 2), torch.zeros(4, 2)))
    with pytest.raises(ValueError, match="done has 2 rows but the state has 3"):
        reset_state(_state(), torch.tensor([True, False]))
    with pytest.raises(TypeError, match="1-D torch.bool"):
        reset_state(_state(), torch.tensor([1, 0, 1]))
    with pytest.raises(TypeError, match="tuple/list/dict"):
        map_state(lambda t: t, {"a": 3})
