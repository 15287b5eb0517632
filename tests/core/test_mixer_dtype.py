"""A float64 input to a float32 mixer is a clear error that says how to fix it, for every mixer;
under autocast the ops choose the dtype themselves and no error is raised."""

import pytest
import torch

from mixerzoo.core import create_mixer, list_mixers


@pytest.mark.parametrize("name", list_mixers())
def test_a_float64_input_to_a_float32_mixer_says_how_to_fix_it(name):
    mixer = create_mixer(name, d_model=16)
    with pytest.raises(TypeError) as info:
        mixer(torch.randn(2, 6, 16, dtype=torch.float64))
    message = str(info.value)
    assert message.startswith(f"{type(mixer).__name__}.forward: x is torch.float64")
    assert "x.to(torch.float32)" in message and ".double()" in message
    # The fix it names works.
    y, _ = mixer.double()(torch.randn(2, 6, 16, dtype=torch.float64))
    assert y.dtype == torch.float64


def test_autocast_inputs_are_left_to_autocast():
    mixer = create_mixer("attention", d_model=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = mixer(torch.randn(2, 6, 16, dtype=torch.bfloat16))
    assert y.shape == (2, 6, 16)
