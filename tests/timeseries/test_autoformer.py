"""Autoformer: decomposition, seasonal norm, decoder initialisation, trend accumulation, training."""

import pytest
import pytorch_lightning as pl
import torch

from mixerzoo.core import create_model
from mixerzoo.core.mixers.attention import Attention
from mixerzoo.core.mixers.autocorrelation import AutoCorrelation
from mixerzoo.timeseries import ForecastDataModule
from mixerzoo.timeseries.models.autoformer import (
    Autoformer,
    SeasonalLayerNorm,
    SeriesDecomp,
    moving_average,
)

SMALL = dict(
    seq_len=24, pred_len=12, label_len=12, enc_in=3, d_model=16, n_heads=2, d_ff=32, moving_avg=5
)


def _batch(b=2, seq_len=24, label_len=12, pred_len=12, c=3, f=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, seq_len, c, generator=g)
    x_mark = torch.rand(b, seq_len, f, generator=g) - 0.5
    x_mark_dec = torch.rand(b, label_len + pred_len, f, generator=g) - 0.5
    x_dec = torch.cat([x[:, seq_len - label_len :], torch.zeros(b, pred_len, c)], dim=1)
    return x, x_mark, x_dec, x_mark_dec


def test_output_shape():
    model = create_model("autoformer", e_layers=2, d_layers=2, **SMALL)
    assert model(*_batch()).shape == (2, 12, 3)
    assert model(_batch()[0]).shape == (2, 12, 3)


def _independent_count(C, F_, d, d_ff, e, dl):
    # Two embeddings (bias-free Conv1d(C, d, 3) + bias-free Linear(F, d)); encoder layers: 4
    # projections + bias-free FFN; decoder layers: 8 projections + FFN + bias-free Conv1d(d, C, 3)
    # trend projection; two seasonal LayerNorms; Linear(d, C).
    emb = 2 * (3 * C * d + F_ * d)
    attn = 4 * (d * d + d)
    ffn = 2 * d * d_ff
    return emb + e * (attn + ffn) + dl * (2 * attn + ffn + 3 * d * C) + 2 * 2 * d + d * C + C


def test_parameter_count_matches_the_architecture():
    model = Autoformer(
        seq_len=24,
        pred_len=12,
        label_len=12,
        enc_in=5,
        d_model=24,
        n_heads=4,
        d_ff=40,
        e_layers=3,
        d_layers=2,
    )
    assert sum(p.numel() for p in model.parameters()) == _independent_count(5, 4, 24, 40, 3, 2)
    assert sum(p.numel() for p in Autoformer().parameters()) == _independent_count(
        7, 4, 512, 2048, 2, 1
    )


@pytest.mark.parametrize("kernel", [1, 3, 25])
@pytest.mark.parametrize("length", [1, 7, 30])
def test_series_decomp_is_a_replicate_padded_moving_average(kernel, length):
    x = torch.randn(2, length, 3, dtype=torch.float64)
    half = (kernel - 1) // 2
    expected = torch.empty_like(x)
    for t in range(length):
        # Indices outside the series take the first / last value.
        idx = [min(max(j, 0), length - 1) for j in range(t - half, t + half + 1)]
        expected[:, t] = x[:, idx].mean(dim=1)
    seasonal, trend = SeriesDecomp(kernel)(x)
    torch.testing.assert_close(trend, expected)
    torch.testing.assert_close(seasonal + trend, x)
    torch.testing.assert_close(moving_average(x, kernel), expected)


def test_even_moving_average_is_refused():
    with pytest.raises(ValueError, match="odd"):
        SeriesDecomp(4)
    with pytest.raises(ValueError, match="odd"):
        Autoformer(moving_avg=24)


def test_seasonal_layer_norm_subtracts_the_time_mean():
    norm = SeasonalLayerNorm(6)
    with torch.no_grad():
        norm.norm.weight.uniform_(0.5, 1.5)
        norm.norm.bias.uniform_(-1, 1)
    x = torch.randn(3, 10, 6) * 4 + 2
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    x_hat = (x - mu) / torch.sqrt(var + 1e-5) * norm.norm.weight + norm.norm.bias
    out = norm(x)
    torch.testing.assert_close(out, x_hat - x_hat.mean(1, keepdim=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.mean(1), torch.zeros(3, 6), rtol=0, atol=1e-5)


def test_decoder_init_is_the_decomposed_lookback_end_then_zeros_and_the_mean():
    model = Autoformer(**SMALL)
    x = torch.randn(2, 24, 3)
    seasonal_init, trend_init = model.decoder_init(x)
    seasonal, trend = SeriesDecomp(5)(x)
    assert seasonal_init.shape == trend_init.shape == (2, 24, 3)
    torch.testing.assert_close(seasonal_init[:, :12], seasonal[:, 12:])
    torch.testing.assert_close(seasonal_init[:, 12:], torch.zeros(2, 12, 3))
    torch.testing.assert_close(trend_init[:, :12], trend[:, 12:])
    torch.testing.assert_close(trend_init[:, 12:], x.mean(1, keepdim=True).expand(2, 12, 3))


def test_forecast_is_the_accumulated_trend_plus_the_projected_seasonal_part():
    torch.manual_seed(0)
    model = Autoformer(**SMALL).eval()
    x, x_mark, x_dec, x_mark_dec = _batch()
    with torch.no_grad():
        model.projection.weight.zero_()
        model.projection.bias.zero_()
        for layer in model.decoder:
            layer.trend_projection.weight.zero_()
        # Nothing is added to the trend input, whose forecast part is the lookback mean.
        flat = model(x, x_mark, x_dec, x_mark_dec)
        torch.testing.assert_close(flat, x.mean(1, keepdim=True).expand(2, 12, 3))
        model.projection.bias.fill_(0.5)
        torch.testing.assert_close(model(x, x_mark, x_dec, x_mark_dec), flat + 0.5)
        model.decoder[0].trend_projection.weight.normal_()
        assert (model(x, x_mark, x_dec, x_mark_dec) - flat - 0.5).abs().max() > 1e-3


def test_decoder_input_comes_from_the_lookback():
    torch.manual_seed(0)
    model = Autoformer(**SMALL).eval()
    x, x_mark, x_dec, x_mark_dec = _batch()
    with torch.no_grad():
        ref = model(x, x_mark, x_dec, x_mark_dec)
        torch.testing.assert_close(model(x, x_mark, None, x_mark_dec), ref)
        torch.testing.assert_close(model(x, x_mark, torch.randn_like(x_dec), x_mark_dec), ref)
    with pytest.raises(ValueError, match=r"x_mark_dec must have shape \[2, 24, F\]"):
        model(x, x_mark, x_dec, x_mark_dec[:, 2:])


def test_deterministic_under_manual_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Autoformer(dropout=0.1, **SMALL).train()
        outs.append(model(*_batch()))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_auto_correlation_everywhere_and_the_encoder_mixer_can_be_replaced():
    model = Autoformer(factor=2, **SMALL)
    assert (
        isinstance(model.encoder[0].mixer, AutoCorrelation) and model.encoder[0].mixer.factor == 2
    )
    assert isinstance(model.decoder[0].self_correlation, AutoCorrelation)
    assert isinstance(model.decoder[0].cross_correlation, AutoCorrelation)
    swapped = Autoformer(mixer="attention", **SMALL)
    assert isinstance(swapped.encoder[0].mixer, Attention)
    assert swapped(*_batch()).shape == (2, 12, 3)


def test_wrong_lookback_is_a_clear_error():
    with pytest.raises(ValueError, match=r"x must have shape \[B, 24, 3\]"):
        Autoformer(**SMALL)(torch.randn(1, 20, 3))


def test_tiny_fit_reduces_the_loss(small_csv, tiny_fit):
    pl.seed_everything(0)
    dm = ForecastDataModule(str(small_csv), seq_len=24, label_len=12, pred_len=12, batch_size=16)
    dm.setup()
    model = Autoformer(**{**SMALL, "enc_in": dm.n_features}, dropout=0.0)
    before, after = tiny_fit(model, dm, lambda p: torch.optim.Adam(p, lr=3e-3))
    assert after < 0.5 * before
