"""SpaceTime: shapes, parameter count, preprocessing kernels, closed-loop decoding (== step-by-step
feedback, and exact on an AR process), mean transform, determinism, the official training objective
(each term against an explicit recurrence), and a tiny fit."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from mixerzoo.core import create_model
from mixerzoo.timeseries import ForecastDataModule, ForecastTask
from mixerzoo.timeseries.models.spacetime import SpaceTime

SMALL = dict(d_model=16, d_state=8, first_layer_heads=4, max_avg_window=12, dropout=0.0)


def _batch(b=2, seq_len=24, label_len=12, pred_len=12, c=3, f=4):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, seq_len, c, generator=g)
    x_dec = torch.cat([x[:, seq_len - label_len :], torch.zeros(b, pred_len, c)], dim=1)
    marks = (
        torch.rand(b, seq_len, f, generator=g),
        torch.rand(b, label_len + pred_len, f, generator=g),
    )
    return x, marks[0], x_dec, marks[1]


@pytest.mark.parametrize("seq_len, pred_len, e_layers", [(24, 12, 1), (24, 1, 2), (96, 96, 1)])
def test_output_shape_with_the_common_batch(seq_len, pred_len, e_layers):
    model = create_model(
        "spacetime", seq_len=seq_len, pred_len=pred_len, e_layers=e_layers, **SMALL
    )
    x, x_mark, x_dec, x_mark_dec = _batch(seq_len=seq_len, pred_len=pred_len)
    assert model(x, x_mark, x_dec, x_mark_dec).shape == (2, pred_len, 3)
    assert model(x).shape == (2, pred_len, 3)


def test_parameter_count_of_the_official_etth1_model():
    # Independent count (README command, --n_blocks 1): first layer 16 companion SSMs (a, b, c of
    # size 64) + skip per channel + MLP Linear(128, 128); decoder one SSM per channel with a, b, c, k;
    # output Linear(128, 1). The preprocessing kernels are fixed buffers.
    model = SpaceTime(seq_len=336, pred_len=96)
    expected = 3 * 16 * 64 + 128 + (128 * 128 + 128) + 4 * 128 * 64 + (128 + 1)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_preprocessing_kernels_difference_polynomials_and_remove_moving_averages():
    model = SpaceTime(seq_len=40, pred_len=4, **SMALL).double()
    pre = model.encoder[0].pre
    t = np.arange(40, dtype=np.float64)
    poly = 0.5 * t**3 - 2 * t**2 + t - 3
    u = torch.tensor(poly).view(1, 40, 1).expand(1, 40, 16)
    with torch.no_grad():
        out = pre(u)[0].numpy()
    kinds = [pre.describe(c) for c in range(16)]
    # Layout of the official ResidualSSM: 4 differencing slots then 4 moving-average slots per group.
    assert [k for k, _ in kinds] == (["diff"] * 4 + ["ma_residual"] * 4) * 2
    for c, (kind, p) in enumerate(kinds):
        if kind == "diff":
            # Order-p differencing, with the series taken as zero before t = 0.
            expected = np.diff(np.concatenate([np.zeros(p), poly]), n=p)
            np.testing.assert_allclose(out[:, c], expected, atol=1e-8)
        else:
            assert 4 <= p < 12
            padded = np.concatenate([np.zeros(p - 1), poly])
            ma = np.convolve(padded, np.ones(p) / p, mode="valid")
            np.testing.assert_allclose(out[:, c], poly - ma, atol=1e-8)
    # Closed form: the third difference of 0.5 t^3 + ... is 3! * 0.5 once past the zero padding.
    third = out[3:, 3]
    np.testing.assert_allclose(third, np.full_like(third, 3.0), atol=1e-8)


def test_closed_loop_forecast_equals_step_by_step_feedback():
    torch.manual_seed(2)
    model = SpaceTime(seq_len=20, pred_len=9, e_layers=2, **SMALL).double().eval()
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    with torch.no_grad():
        got = model(x)
        u = x.transpose(1, 2).reshape(6, 20, 1)
        mean = u.mean(1, keepdim=True)
        z = model.encode(u - mean)
        dec = model.decoder
        state, outs = None, []
        for t in range(20):
            y_t, state = dec.step(z[:, t], state)
        outs.append(y_t)
        k = dec.k[dec.head_of_channel]  # the L1-normalised feedback vector of each channel
        for _ in range(8):
            u_next = (state * k).sum(-1)  # the decoder predicts its own next input
            y_t, state = dec.step(u_next, state)
            outs.append(y_t)
        want = model.output(torch.stack(outs, 1)) + mean
    torch.testing.assert_close(got, want.reshape(2, 3, 9).transpose(1, 2))


def test_closed_loop_decoder_encoding_an_ar_process_forecasts_it_exactly():
    model = SpaceTime(seq_len=30, pred_len=15, **SMALL).double()
    phi = torch.tensor([0.5, 0.3, -0.2], dtype=torch.float64)  # ||phi||_1 = 1: kept by the L1 norm
    n, d = 8, 16
    with torch.no_grad():
        # Shift SSM (a = 0, b = e1): the state is the last 8 inputs; c = k = AR coefficients.
        model.decoder.a.zero_()
        e1 = torch.zeros(d, n, dtype=torch.float64)
        e1[:, 0] = 1
        coef = torch.zeros(d, n, dtype=torch.float64)
        coef[:, :3] = phi
        model.decoder.b, model.decoder.c, model.decoder.k = e1, coef, coef
    series = [1.0, -0.4, 0.7]
    while len(series) < 45:
        series.append(float(phi @ torch.tensor(series[-1:-4:-1], dtype=torch.float64)))
    series = torch.tensor(series, dtype=torch.float64)
    z = series[:30].view(1, 30, 1).expand(1, 30, d)
    with torch.no_grad():
        y = model.decode(z)
    torch.testing.assert_close(y, series[30:].view(1, 15, 1).expand(1, 15, d))


def test_mean_transform_makes_the_forecast_shift_equivariant():
    torch.manual_seed(0)
    model = SpaceTime(seq_len=24, pred_len=6, **SMALL).double().eval()
    x = torch.randn(2, 24, 3, dtype=torch.float64)
    shift = torch.tensor([5.0, -3.0, 0.5], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x + shift), model(x) + shift)


def test_channel_independence():
    torch.manual_seed(0)
    model = SpaceTime(seq_len=24, pred_len=6, **SMALL).eval()
    x = torch.randn(2, 24, 3)
    with torch.no_grad():
        y = model(x)
        x2 = x.clone()
        x2[..., 0] += torch.randn(2, 24)
        y2 = model(x2)
    torch.testing.assert_close(y2[..., 1:], y[..., 1:])
    assert not torch.allclose(y2[..., 0], y[..., 0])


def test_deterministic_under_seed():
    def build(seed):
        torch.manual_seed(seed)
        return SpaceTime(seq_len=24, pred_len=6, **SMALL).eval()

    x = torch.randn(2, 24, 3)
    a, b, c = build(5), build(5), build(6)
    assert torch.equal(a.encoder[0].pre.windows, b.encoder[0].pre.windows)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.allclose(a(x), c(x))


def _objective_case(seq_len=20, pred_len=5, **kw):
    torch.manual_seed(3)
    model = SpaceTime(seq_len=seq_len, pred_len=pred_len, e_layers=2, **{**SMALL, **kw}).double()
    x = torch.randn(2, seq_len, 3, dtype=torch.float64) + 4.0  # an offset: the mean transform acts
    y = torch.randn(2, pred_len, 3, dtype=torch.float64) + 4.0
    return model, x, y


def _term(model, x, y, weights):
    model.criterion_weights = weights
    loss, _ = model.training_loss(x, y)
    return loss


def test_horizon_term_is_the_rmse_of_the_forecast():
    model, x, y = _objective_case()
    loss, pred = model.training_loss(x, y, None, torch.zeros(2, 9, 3), None)
    torch.testing.assert_close(pred, model(x))
    expected = ((model(x) - y) ** 2).mean().sqrt()  # one RMSE over batch, steps and variables
    torch.testing.assert_close(_term(model, x, y, (1.0, 0.0, 0.0)), expected)


def _decoder_recurrence(model, x):
    """Per series: lookback u [N, L], mean [N], encoder output z [N, L, D], and step by step over
    the lag window the decoder outputs c . h_t and predicted next inputs k . h_t, [N, L, D]."""
    n, length = x.shape[0] * x.shape[2], x.shape[1]
    u = x.transpose(1, 2).reshape(n, length)
    mean = u.mean(1)
    z = model.encode((u - mean[:, None]).unsqueeze(-1))
    dec = model.decoder
    k = dec.k[dec.head_of_channel]  # the L1-normalised feedback vector of each channel
    state, outs, nexts = None, [], []
    for t in range(length):
        y_t, state = dec.step(z[:, t], state)
        outs.append(y_t)
        nexts.append((state * k).sum(-1))
    return u, mean, z, torch.stack(outs, 1), torch.stack(nexts, 1)


def test_lag_output_term_compares_open_loop_next_step_outputs_with_the_next_value():
    model, x, y = _objective_case()
    with torch.no_grad():
        u, mean, _, outs, _ = _decoder_recurrence(model, x)
        truth = y.transpose(1, 2).reshape(6, 5)
        d, length = model.decoder.d_state, 20
        sq = []
        # Open-loop output at lag step t (t = d-1 .. L-1) predicts the value at t + 1; at t = L-1
        # that is the first horizon value.
        for t in range(d - 1, length):
            pred_t = model.output(outs[:, t]).squeeze(-1) + mean
            true_t = u[:, t + 1] if t + 1 < length else truth[:, 0]
            sq.append((pred_t - true_t) ** 2)
        expected = torch.stack(sq).mean().sqrt()
        torch.testing.assert_close(_term(model, x, y, (0.0, 1.0, 0.0)), expected)


def test_next_input_term_compares_k_dot_state_with_the_next_decoder_input():
    model, x, y = _objective_case()
    with torch.no_grad():
        _, _, z, _, nexts = _decoder_recurrence(model, x)
        d, length = model.decoder.d_state, 20
        sq = [(nexts[:, t] - z[:, t + 1]) ** 2 for t in range(d - 1, length - 1)]
        expected = torch.stack(sq).mean().sqrt()
        torch.testing.assert_close(_term(model, x, y, (0.0, 0.0, 1.0)), expected)
        # The decoder input is not the series: the term lives in the encoder's D channels.
        assert z.shape[-1] == SMALL["d_model"]


def test_objective_is_the_weighted_sum_of_the_three_terms():
    model, x, y = _objective_case()
    with torch.no_grad():
        terms = [_term(model, x, y, w) for w in ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0))]
        assert all(t > 0 for t in terms)
        torch.testing.assert_close(
            _term(model, x, y, (2.0, 0.5, 3.0)), 2.0 * terms[0] + 0.5 * terms[1] + 3.0 * terms[2]
        )
    assert SpaceTime(seq_len=20, pred_len=5, **SMALL).criterion_weights == (1.0, 1.0, 1.0)


def test_objective_trains_the_feedback_vector_through_the_next_input_term():
    model, x, y = _objective_case()
    model.criterion_weights = (0.0, 0.0, 1.0)
    model.training_loss(x, y)[0].backward()
    grad = model.decoder.parametrizations.k.original.grad
    assert grad is not None and grad.abs().sum() > 0


def test_lag_loss_epochs_keeps_the_lag_terms_for_the_first_epochs_only():
    """Official latch (lag_loss_epochs=1): all three terms in epoch 0, the horizon RMSE after."""
    model, x, y = _objective_case(lag_loss_epochs=1)
    with torch.no_grad():
        full = _term(model, x, y, (1.0, 1.0, 1.0))
        horizon = _term(model, x, y, (1.0, 0.0, 0.0))
        assert full > horizon
        model.criterion_weights = (1.0, 1.0, 1.0)
        model.set_epoch(1)
        torch.testing.assert_close(model.training_loss(x, y)[0], horizon)
        model.set_epoch(0)
        torch.testing.assert_close(model.training_loss(x, y)[0], full)
    always, _, _ = _objective_case()  # default None: the terms act in every epoch
    always.set_epoch(50)
    with torch.no_grad():
        torch.testing.assert_close(always.training_loss(x, y)[0], full)
    with pytest.raises(ValueError, match="lag_loss_epochs must be >= 0"):
        SpaceTime(seq_len=20, pred_len=5, lag_loss_epochs=-1, **SMALL)


def test_forecast_task_tells_the_model_its_epoch_also_after_resuming(small_csv, tmp_path):
    pl.seed_everything(0)
    dm = ForecastDataModule(str(small_csv), seq_len=48, label_len=12, pred_len=12, batch_size=16)
    model = SpaceTime(seq_len=48, pred_len=12, lag_loss_epochs=1, **SMALL)
    seen = []
    model.set_epoch = lambda epoch: (seen.append(epoch), SpaceTime.set_epoch(model, epoch))

    def trainer(max_epochs):
        return pl.Trainer(
            max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
            enable_model_summary=False, limit_train_batches=1, limit_val_batches=1,
            default_root_dir=tmp_path,
            callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)],
        )  # fmt: skip

    trainer(2).fit(ForecastTask(model), datamodule=dm)
    assert seen == [0, 1] and model.epoch == 1
    seen.clear()
    trainer(3).fit(ForecastTask(model), datamodule=dm, ckpt_path=str(tmp_path / "last.ckpt"))
    assert seen == [2] and model.epoch == 2


def test_objective_errors_are_clear():
    model, x, y = _objective_case(seq_len=8, pred_len=5)  # seq_len == d_state: no lag terms
    with pytest.raises(ValueError, match=r"need seq_len > d_state"):
        model.training_loss(x, y)
    model.criterion_weights = (1.0, 0.0, 0.0)
    assert torch.isfinite(model.training_loss(x, y)[0])
    with pytest.raises(ValueError, match=r"y must have shape \[2, 5, 3\]"):
        model.training_loss(x, y[:, :4])
    with pytest.raises(ValueError, match="criterion_weights must be three numbers"):
        SpaceTime(seq_len=20, pred_len=5, criterion_weights=(1.0, 1.0), **SMALL)


def test_tiny_fit_reduces_the_loss(small_csv, tiny_fit):
    pl.seed_everything(0)
    dm = ForecastDataModule(str(small_csv), seq_len=48, label_len=12, pred_len=12, batch_size=16)
    model = SpaceTime(seq_len=48, pred_len=12, **SMALL)
    optimizer = lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-4)  # noqa: E731
    before, after = tiny_fit(model, dm, optimizer, max_epochs=3)
    assert after < 0.5 * before


def test_wrong_lookback_is_a_clear_error():
    model = SpaceTime(seq_len=24, pred_len=6, **SMALL)
    with pytest.raises(ValueError, match=r"x must have shape \[B, 24, C\]"):
        model(torch.randn(1, 30, 3))
