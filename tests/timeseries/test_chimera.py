"""Chimera: shapes, bidirectionality over variates, causality in time inside the encoder, the
decomposition, the two heads' step sizes, closed-loop decoding (== token-by-token), per-window
normalisation, determinism, and a tiny fit."""

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from mixerzoo.core import create_model
from mixerzoo.timeseries import ForecastDataModule
from mixerzoo.timeseries.models.chimera import Chimera, trailing_moving_average

SMALL = dict(d_model=8, d_state=4, e_layers=1, moving_avg=5, dropout=0.0)


def _model(seq_len=16, pred_len=6, **kw):
    torch.manual_seed(0)
    return Chimera(seq_len=seq_len, pred_len=pred_len, **{**SMALL, **kw}).double().eval()


@pytest.mark.parametrize("decoder", ["closed_loop", "linear"])
@pytest.mark.parametrize("pred_len", [1, 6])
def test_output_shape_with_the_common_batch(decoder, pred_len):
    model = create_model("chimera", seq_len=16, pred_len=pred_len, decoder=decoder, **SMALL)
    x = torch.randn(2, 16, 3)
    x_dec = torch.cat([x[:, 8:], torch.zeros(2, pred_len, 3)], dim=1)
    marks = torch.rand(2, 16, 4), torch.rand(2, 8 + pred_len, 4)
    assert model(x, marks[0], x_dec, marks[1]).shape == (2, pred_len, 3)
    assert model(x).shape == (2, pred_len, 3)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("decoder", ["closed_loop", "linear"])
def test_forecast_of_a_variate_sees_variates_on_both_sides(bidirectional, decoder):
    model = _model(decoder=decoder, bidirectional=bidirectional)
    x = torch.randn(1, 16, 5, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(model(x)[..., 2].sum(), x)
    influence = g[0].abs().sum(0)  # per input variate
    assert influence[1] > 0 and influence[0] > 0
    if bidirectional:
        assert influence[3] > 0 and influence[4] > 0
    else:
        # Forward module only: the scan over variates is causal in their order.
        assert influence[3] == 0 and influence[4] == 0


def test_encoder_is_causal_in_time():
    model = _model(e_layers=2)
    z = torch.randn(2, 16, 3, dtype=torch.float64, requires_grad=True)
    h = model.encode(z)
    (g,) = torch.autograd.grad(h[:, 9].sum(), z)
    assert torch.all(g[:, 10:] == 0)
    assert g[:, :10].abs().sum(dim=(0, 2)).min() > 0  # every earlier step matters


def test_trailing_moving_average_against_a_loop():
    h = torch.randn(2, 9, 3, 4, dtype=torch.float64)
    got = trailing_moving_average(h, 4)
    padded = torch.cat([h[:, :1].expand(2, 3, 3, 4), h], dim=1)
    want = torch.stack([padded[:, t : t + 4].mean(1) for t in range(9)], dim=1)
    torch.testing.assert_close(got, want)
    const = torch.full((1, 7, 2, 3), 2.5, dtype=torch.float64)
    torch.testing.assert_close(trailing_moving_average(const, 5), const)


def test_trend_and_seasonal_heads_start_with_their_own_time_steps():
    model = Chimera(seq_len=16, pred_len=4, trend_dt=(1e-3, 1e-2), seasonal_dt=(0.2, 0.5), **SMALL)
    layer = model.layers[0]
    for head, (lo, hi) in ((layer.trend_head, (1e-3, 1e-2)), (layer.seasonal_head, (0.2, 0.5))):
        for module in (head.fwd, head.bwd):
            dt = F.softplus(module.dt1_proj.bias.detach().double())
            assert lo * (1 - 1e-4) <= dt.min() and dt.max() <= hi * (1 + 1e-4)


def test_closed_loop_equals_token_by_token_decoding():
    model = _model(pred_len=5)
    h = model.encode(torch.randn(2, 16, 3, dtype=torch.float64))
    with torch.no_grad():
        got = model.decode(h)
        dec, state = model.decoder, None
        for t in range(16):  # the lookback one time step (all variates) at a time
            y, state = dec.forward_2d(h[:, t : t + 1], state)
        outs = [y[:, 0]]
        for _ in range(4):
            y, state = dec.forward_2d(model.feedback(outs[-1]).unsqueeze(1), state)
            outs.append(y[:, 0])
        want = model.head(torch.stack(outs, 1)).squeeze(-1)
    torch.testing.assert_close(got, want)


def test_per_window_normalisation_makes_the_forecast_affine_equivariant():
    model = _model()
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    scale = torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64)
    shift = torch.tensor([10.0, -4.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        y, y2 = model(x), model(x * scale + shift)
    # Exact as the 1e-5 variance epsilon -> 0.
    torch.testing.assert_close(y2, y * scale + shift, rtol=1e-3, atol=1e-3)


def test_deterministic_under_seed():
    x = torch.randn(2, 16, 3, dtype=torch.float64)
    a, b = _model(), _model()
    torch.manual_seed(1)
    c = Chimera(seq_len=16, pred_len=6, **SMALL).double().eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.allclose(a(x), c(x))


def test_tiny_fit_reduces_the_loss(small_csv, tiny_fit):
    pl.seed_everything(0)
    dm = ForecastDataModule(str(small_csv), seq_len=24, label_len=12, pred_len=6, batch_size=32)
    model = Chimera(seq_len=24, pred_len=6, **SMALL)
    before, after = tiny_fit(model, dm, lambda p: torch.optim.Adam(p, lr=1e-2), max_epochs=2)
    assert after < 0.5 * before


def test_invalid_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="decoder must be"):
        Chimera(decoder="attention")
    with pytest.raises(ValueError, match=r"x must have shape \[B, 16, C\]"):
        _model()(torch.randn(1, 20, 3, dtype=torch.float64))
