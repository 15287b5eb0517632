"""core.dropout: the cheaper CPU dropout keeps each element independently with probability
1 - p (to 2**-16), rescales exactly, has dropout's gradient, and falls back where it should."""

import math

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core.dropout import Dropout, dropout, dropout_mask


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_keep_rate_is_one_minus_p_in_every_lane(p):
    torch.manual_seed(0)
    n = 1 << 22
    keep, scale = dropout_mask((n,), p)
    k = round(p * 65536)
    assert scale == 65536 / (65536 - k)
    q = 1 - k / 65536
    # Each of the four 16-bit lanes of a 64-bit word is its own Bernoulli(q) stream.
    lanes = keep.view(-1, 4).double()
    sigma = math.sqrt(q * (1 - q) / lanes.shape[0])
    assert (lanes.mean(dim=0) - q).abs().max() < 5 * sigma
    # Neighbouring elements (inside a word and across words) are independent: P(both) = q^2.
    pairs = (keep[:-1] & keep[1:]).double().mean()
    assert abs(pairs - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / n)


def test_output_is_the_input_rescaled_or_zero_and_the_mean_is_kept():
    torch.manual_seed(1)
    x = torch.randn(64, 128, 32)
    y = dropout(x, 0.1, training=True)
    kept = y != 0
    scale = 65536 / (65536 - 6554)
    torch.testing.assert_close(y[kept], x[kept] * scale)
    assert abs(kept.double().mean().item() - (1 - 6554 / 65536)) < 0.005
    ones = dropout(torch.ones(1 << 20), 0.3, training=True)
    assert abs(ones.double().mean().item() - 1.0) < 5 * math.sqrt(0.3 / 0.7 / (1 << 20))


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(2)
    x = torch.randn(8, 33, dtype=torch.float64, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * g).sum(), x)
    mask = (y != 0).double() * (65536 / (65536 - 16384))
    torch.testing.assert_close(grad, g * mask)


def test_eval_mode_zero_p_and_reproducibility():
    x = torch.randn(5, 7)
    layer = Dropout(0.2).eval()
    assert layer(x) is x
    assert dropout(x, 0.0) is x
    layer.train()
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    b = layer(x)
    torch.testing.assert_close(a, b)
    assert isinstance(layer, torch.nn.Dropout)  # drop-in: same repr, state dict and p


def test_fallbacks_to_torch_dropout():
    torch.manual_seed(4)
    x = torch.randn(100, 100)
    assert (dropout(x, 1.0) == 0).all()  # p = 1 rounds to 65536/65536
    torch.manual_seed(5)
    tiny = dropout(x, 1e-6)  # rounds to 0/65536: torch's dropout keeps the exact p
    torch.manual_seed(5)
    torch.testing.assert_close(tiny, F.dropout(x, 1e-6))
    y = x.clone()
    out = dropout(y, 0.5, inplace=True)
    assert out.data_ptr() == y.data_ptr()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropout(x, 1.5)
