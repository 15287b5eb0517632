"""core.rng: a captured generator state restores every generator and survives a safe load."""

import io
import random

import numpy as np
import torch

from mixerzoo.core.rng import capture_rng_state, restore_rng_state


def _draws():
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())


def test_restored_state_repeats_the_draws_after_a_weights_only_round_trip():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    _draws()
    buffer = io.BytesIO()
    torch.save(capture_rng_state(), buffer)
    expected = _draws()
    assert _draws() != expected  # the generators moved on
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True))
    assert _draws() == expected
