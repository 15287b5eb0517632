"""Informer: shapes, parameter counts, embeddings, distilling, the decoder start token, training."""

import math

import pytest
import pytorch_lightning as pl
import torch

from mixerzoo.core import create_model
from mixerzoo.core.mixers.attention import Attention
from mixerzoo.core.mixers.probsparse_attention import ProbSparseAttention
from mixerzoo.timeseries import ForecastDataModule
from mixerzoo.timeseries.models.embed import (
    DataEmbedding,
    TemporalEmbedding,
    TokenEmbedding,
    sinusoid_table,
)
from mixerzoo.timeseries.models.informer import DistillingLayer, Informer

SMALL = dict(seq_len=24, pred_len=12, label_len=12, enc_in=3, d_model=16, n_heads=2, d_ff=32)


def _batch(b=2, seq_len=24, label_len=12, pred_len=12, c=3, f=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, seq_len, c, generator=g)
    x_mark = torch.rand(b, seq_len, f, generator=g) - 0.5
    x_mark_dec = torch.rand(b, label_len + pred_len, f, generator=g) - 0.5
    # What ForecastTask feeds: the start token (= the lookback's last label_len steps), then zeros.
    x_dec = torch.cat([x[:, seq_len - label_len :], torch.zeros(b, pred_len, c)], dim=1)
    return x, x_mark, x_dec, x_mark_dec


@pytest.mark.parametrize("variant", ["tsl", "informer2020"])
def test_output_shape(variant):
    model = create_model("informer", variant=variant, e_layers=3, d_layers=2, **SMALL)
    assert model(*_batch()).shape == (2, 12, 3)
    assert model(_batch()[0]).shape == (2, 12, 3)  # no marks, decoder input built from x


def _independent_count(C, F_, d, d_ff, e, dl, variant):
    # From the architecture: two embeddings (Conv1d(C, d, 3) + Linear(F, d)), post-norm layers of
    # 4 projections + FFN + LayerNorms, distilling Conv1d(d, d, 3) + BatchNorm, final norms and
    # Linear(d, C). The Informer2020 variant adds the conv and timeF biases.
    bias = variant == "informer2020"
    emb = 2 * (3 * C * d + F_ * d + (2 * d if bias else 0))
    attn = 4 * (d * d + d)
    ffn = d * d_ff + d_ff + d_ff * d + d
    ln = 2 * d
    distil = 3 * d * d + d + 2 * d
    return (
        emb
        + e * (attn + ffn + 2 * ln)
        + (e - 1) * distil
        + ln
        + dl * (2 * attn + ffn + 3 * ln)
        + ln
        + d * C
        + C
    )


@pytest.mark.parametrize("variant", ["tsl", "informer2020"])
def test_parameter_count_matches_the_architecture(variant):
    model = Informer(
        seq_len=24,
        pred_len=12,
        label_len=12,
        enc_in=5,
        d_model=24,
        n_heads=4,
        d_ff=40,
        e_layers=3,
        d_layers=2,
        variant=variant,
    )
    expected = _independent_count(5, 4, 24, 40, 3, 2, variant)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_official_etth1_size():
    # d_model 512, d_ff 2048, 2 + 1 layers, 7 variables, 4 timeF marks: 11,328,007 weights.
    assert sum(p.numel() for p in Informer().parameters()) == _independent_count(
        7, 4, 512, 2048, 2, 1, "tsl"
    )


def test_variants_wire_the_paper_attention():
    tsl = Informer(**SMALL)
    assert isinstance(tsl.encoder[0].mixer, ProbSparseAttention) and tsl.encoder[0].mixer.mix
    assert isinstance(tsl.decoder[0].cross_attention, ProbSparseAttention)
    dec_self = tsl.decoder[0].self_attention
    assert dec_self.masked and dec_self.mix and dec_self.factor == 3
    official = Informer(variant="informer2020", factor=5, **SMALL)
    assert not official.encoder[0].mixer.mix and official.encoder[0].mixer.factor == 5
    assert isinstance(official.decoder[0].cross_attention, Attention)
    assert official.decoder[0].self_attention.masked and official.decoder[0].self_attention.mix


@pytest.mark.parametrize("length", [1, 2, 5, 24, 97])
def test_distilling_halves_the_length(length):
    x = torch.randn(2, length, 8)
    assert DistillingLayer(8, padding=1)(x).shape == (2, (length - 1) // 2 + 1, 8)
    if length >= 2:
        assert DistillingLayer(8, padding=2)(x).shape == (2, (length + 1) // 2 + 1, 8)


@pytest.mark.parametrize("padding", [1, 2])
def test_distilling_is_circular_conv_batchnorm_elu_maxpool(padding):
    torch.manual_seed(0)
    layer = DistillingLayer(4, padding=padding).eval()
    with torch.no_grad():
        layer.norm.running_mean.uniform_(-0.5, 0.5)
        layer.norm.running_var.uniform_(0.5, 2.0)
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 9, 4)
    # Explicit loops: circular padding, k=3 convolution, affine batch norm, ELU, max over windows
    # of 3 with stride 2 and one step of -inf padding each side.
    xp = torch.cat([x[:, -padding:], x, x[:, :padding]], dim=1)
    w, b = layer.conv.weight, layer.conv.bias
    conv = torch.stack(
        [sum(xp[:, t + k] @ w[:, :, k].T for k in range(3)) + b for t in range(xp.shape[1] - 2)], 1
    )
    bn = layer.norm
    y = (conv - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    y = torch.where(y > 0, y, torch.exp(y) - 1)
    n = y.shape[1]
    pooled = torch.stack(
        [y[:, max(0, 2 * i - 1) : min(n, 2 * i + 2)].amax(dim=1) for i in range((n - 1) // 2 + 1)],
        1,
    )
    torch.testing.assert_close(layer(x), pooled, rtol=1e-5, atol=1e-5)


def test_token_embedding_is_a_circular_convolution():
    emb = TokenEmbedding(3, 8)
    x = torch.randn(2, 7, 3)
    w = emb.conv.weight  # [8, 3, 3]
    expected = torch.stack(
        [sum(x[:, (t - 1 + k) % 7] @ w[:, :, k].T for k in range(3)) for t in range(7)], 1
    )
    torch.testing.assert_close(emb(x), expected, rtol=1e-5, atol=1e-5)


def test_sinusoid_table_closed_form_and_position_code():
    table = sinusoid_table(50, 6)
    p, i = 37, 2
    assert math.isclose(table[p, 2 * i].item(), math.sin(p / 10000 ** (2 * i / 6)), abs_tol=1e-5)
    assert math.isclose(
        table[p, 2 * i + 1].item(), math.cos(p / 10000 ** (2 * i / 6)), abs_tol=1e-5
    )
    with_pos = DataEmbedding(3, 6, dropout=0.0)
    without = DataEmbedding(3, 6, dropout=0.0, positional=False)
    without.load_state_dict(with_pos.state_dict())
    x, marks = torch.randn(2, 10, 3), torch.rand(2, 10, 4)
    torch.testing.assert_close(with_pos(x, marks) - without(x, marks), table[:10].expand(2, 10, 6))


def test_timef_embedding_is_a_bias_free_linear_map_of_the_marks():
    emb = DataEmbedding(3, 8, dropout=0.0)
    x, marks = torch.randn(2, 10, 3), torch.rand(2, 10, 4) - 0.5
    diff = emb(x, marks) - emb(x, None)
    torch.testing.assert_close(
        diff, marks @ emb.temporal_embedding.linear.weight.T, rtol=1e-5, atol=1e-5
    )


def test_fixed_and_learned_temporal_embeddings_index_calendar_fields():
    month, day, weekday, hour = 5, 17, 3, 22
    marks = torch.tensor([[[month, day, weekday, hour]]], dtype=torch.float32)
    fixed = TemporalEmbedding(6, embed="fixed", freq="h")
    expected = sum(
        sinusoid_table(n, 6)[v] for n, v in ((13, month), (32, day), (7, weekday), (24, hour))
    )
    torch.testing.assert_close(fixed(marks)[0, 0], expected)
    assert not list(fixed.parameters())  # frozen tables
    learned = TemporalEmbedding(6, embed="learned", freq="t")  # minute data: 5 fields
    assert sum(p.numel() for p in learned.parameters()) == (13 + 32 + 7 + 24 + 4) * 6
    with pytest.raises(ValueError, match="timeenc=0"):
        fixed(torch.rand(1, 3, 4) - 0.5)


def test_decoder_start_token_is_honoured():
    torch.manual_seed(0)
    model = Informer(**SMALL).eval()
    x, x_mark, x_dec, x_mark_dec = _batch()
    with torch.no_grad():
        torch.manual_seed(1)
        given = model(x, x_mark, x_dec, x_mark_dec)
        torch.manual_seed(1)
        built = model(x, x_mark, None, x_mark_dec)
        changed = x_dec.clone()
        changed[:, :12] += 1.0
        torch.manual_seed(1)
        other = model(x, x_mark, changed, x_mark_dec)
    torch.testing.assert_close(given, built)
    assert (other - given).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"x_dec must have shape \[2, 24, 3\]"):
        model(x, x_mark, x_dec[:, 1:], x_mark_dec)


def test_deterministic_under_manual_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Informer(dropout=0.1, **SMALL).train()
        outs.append(model(*_batch()))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_wrong_inputs_are_clear_errors():
    model = Informer(**SMALL)
    with pytest.raises(ValueError, match=r"x must have shape \[B, 24, 3\]"):
        model(torch.randn(1, 24, 5))
    with pytest.raises(ValueError, match="x_mark must have shape"):
        model(torch.randn(1, 24, 3), torch.randn(1, 24, 6))
    with pytest.raises(ValueError, match="variant"):
        Informer(variant="v2")


def test_encoder_mixer_can_be_replaced():
    model = Informer(mixer="attention", **SMALL)
    assert isinstance(model.encoder[0].mixer, Attention)
    assert model(*_batch()).shape == (2, 12, 3)


def test_tiny_fit_reduces_the_loss(small_csv, tiny_fit):
    pl.seed_everything(0)
    dm = ForecastDataModule(str(small_csv), seq_len=24, label_len=12, pred_len=12, batch_size=16)
    dm.setup()
    model = Informer(**{**SMALL, "enc_in": dm.n_features}, dropout=0.0)
    before, after = tiny_fit(model, dm, lambda p: torch.optim.Adam(p, lr=3e-3))
    assert after < 0.5 * before
