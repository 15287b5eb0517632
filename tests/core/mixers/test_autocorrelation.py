"""Auto-Correlation (Autoformer): FFT correlation against the direct sum, the period of a sine,
time-delay aggregation against explicit loops, training/inference agreement and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from mixerzoo.core import create_mixer
from mixerzoo.core.ops.autocorrelation import (
    auto_correlation,
    period_correlation,
    time_delay_agg_inference,
    time_delay_agg_training,
    top_k_delays,
)
from mixerzoo.core.testing import assert_close


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_top_k_count():
    assert top_k_delays(1, 48) == 3  # int(ln 48) = int(3.87)
    assert top_k_delays(3, 5) == 4  # int(3 * 1.609)
    assert top_k_delays(1, 2) == 1  # int(ln 2) = 0, clamped to one delay
    assert top_k_delays(10, 4) == 4  # never more delays than positions


@pytest.mark.parametrize("length", [1, 7, 8])
def test_fft_correlation_equals_direct_circular_sum(length):
    q, k = _randn(2, 2, 3, length, seed=1), _randn(2, 2, 3, length, seed=2)
    expected = torch.zeros_like(q)
    for tau in range(length):
        for t in range(length):
            expected[..., tau] += q[..., (t + tau) % length] * k[..., t]
    assert_close(period_correlation(q, k), expected)


@pytest.mark.parametrize("training", [False, True])
def test_sine_period_is_found(training):
    period, length = 12, 48
    t = torch.arange(length, dtype=torch.float64)
    phase = torch.rand(
        1, 1, 2, 3, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    # [B=1, H=2, E=3, L] sines of period 12 with random phases.
    sine = torch.sin(2 * math.pi * t / period + 2 * math.pi * phase)[0]
    corr = period_correlation(sine, sine)
    # Closed form for a whole number of periods: R(tau) = L/2 * cos(2 pi tau / P).
    assert_close(corr, (length / 2 * torch.cos(2 * math.pi * t / period)).expand_as(corr))
    delays = torch.topk(corr.mean(dim=(1, 2))[0], top_k_delays(1, length)).indices
    assert all(int(d) % period == 0 for d in delays), delays
    # Every chosen delay is a whole number of periods, so aggregating the sine gives it back.
    x = sine.permute(0, 3, 1, 2)  # [B, L, H, E]
    assert_close(auto_correlation(x, x, x, training=training), x)


def _explicit_aggregation(values, delays, weights):
    """out[b, ..., t] = sum_i weights[b][i] * values[b, ..., (t + delays[b][i]) % L]."""
    b_size, length = values.shape[0], values.shape[-1]
    out = torch.zeros_like(values)
    for b in range(b_size):
        for tau, w in zip(delays[b], weights[b]):
            for t in range(length):
                out[b, ..., t] += w * values[b, ..., (t + tau) % length]
    return out


def test_training_aggregation_equals_explicit_loop():
    values, corr = _randn(3, 2, 2, 9, seed=3), _randn(3, 2, 2, 9, seed=4)
    mean = corr.mean(dim=(1, 2))
    shared = torch.argsort(mean.mean(dim=0), descending=True)[:2].tolist()
    delays = [shared] * 3
    weights = [torch.softmax(mean[b, shared], dim=0).tolist() for b in range(3)]
    assert_close(
        time_delay_agg_training(values, corr, 2), _explicit_aggregation(values, delays, weights)
    )


def test_inference_aggregation_equals_explicit_loop():
    values, corr = _randn(3, 2, 2, 9, seed=5), _randn(3, 2, 2, 9, seed=6)
    mean = corr.mean(dim=(1, 2))
    delays = [torch.argsort(mean[b], descending=True)[:3].tolist() for b in range(3)]
    weights = [torch.softmax(mean[b, delays[b]], dim=0).tolist() for b in range(3)]
    assert_close(
        time_delay_agg_inference(values, corr, 3), _explicit_aggregation(values, delays, weights)
    )


def test_training_and_inference_agree_when_samples_share_delays():
    values = _randn(4, 2, 3, 10, seed=7)
    # Different correlations per sample, but the same three delays stand out in every one.
    corr = torch.rand(4, 2, 3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    corr[..., [2, 5, 9]] += 10.0
    train = time_delay_agg_training(values, corr, 3)
    infer = time_delay_agg_inference(values, corr, 3)
    assert_close(train, infer)
    # Without the shared peaks the two forms differ (per-sample vs batch-shared delays).
    corr_free = _randn(4, 2, 3, 10, seed=9)
    assert not torch.allclose(
        time_delay_agg_training(values, corr_free, 3),
        time_delay_agg_inference(values, corr_free, 3),
    )


def test_keys_are_truncated_or_zero_padded_to_the_query_length():
    q = _randn(2, 8, 2, 3, seed=10)
    k_long, v_long = _randn(2, 11, 2, 3, seed=11), _randn(2, 11, 2, 3, seed=12)
    assert_close(
        auto_correlation(q, k_long, v_long), auto_correlation(q, k_long[:, :8], v_long[:, :8])
    )
    k_short, v_short = k_long[:, :5], v_long[:, :5]
    pad = torch.zeros(2, 3, 2, 3, dtype=torch.float64)
    assert_close(
        auto_correlation(q, k_short, v_short),
        auto_correlation(q, torch.cat([k_short, pad], 1), torch.cat([v_short, pad], 1)),
    )


def test_mixer_train_equals_eval_on_identical_samples():
    torch.manual_seed(0)
    mixer = create_mixer("autocorrelation", d_model=16, n_heads=4).double()
    x = _randn(1, 20, 16, seed=13).expand(3, 20, 16)
    y_train, _ = mixer.train()(x)
    y_eval, _ = mixer.eval()(x)
    assert_close(y_train, y_eval)
    assert mixer.attend(x[:, :7], x, x).shape == (3, 7, 16)
    with pytest.raises(ValueError, match="takes no state"):
        mixer(x, state=torch.zeros(1))


@pytest.mark.parametrize("training", [False, True])
def test_gradcheck(training):
    q, k, v = (_randn(2, 8, 2, 2, seed=s).requires_grad_() for s in (14, 15, 16))
    assert torch.autograd.gradcheck(
        lambda q, k, v: auto_correlation(q, k, v, factor=1, training=training), (q, k, v)
    )


@pytest.mark.parametrize("training", [True, False])
def test_aggregation_gradients_equal_the_roll_loop(training):
    """The FFT delay sum has the gradients of the official roll-and-add loop (values and corr)."""
    values = _randn(3, 2, 4, 12, seed=20).requires_grad_()
    corr = _randn(3, 2, 4, 12, seed=21).requires_grad_()
    agg = time_delay_agg_training if training else time_delay_agg_inference
    grad_out = _randn(3, 2, 4, 12, seed=22)
    fast = torch.autograd.grad((agg(values, corr, 4) * grad_out).sum(), (values, corr))

    mean = corr.mean(dim=(1, 2))
    if training:
        delays = torch.topk(mean.mean(dim=0), 4).indices.expand(3, -1)
        weights = torch.softmax(torch.gather(mean, 1, delays), dim=-1)
    else:
        top, delays = torch.topk(mean, 4, dim=-1)
        weights = torch.softmax(top, dim=-1)
    loop = torch.stack(
        [
            sum(
                torch.roll(values[b], -int(delays[b, i]), dims=-1) * weights[b, i] for i in range(4)
            )
            for b in range(3)
        ]
    )
    slow = torch.autograd.grad((loop * grad_out).sum(), (values, corr))
    for got, want in zip(fast, slow):
        assert_close(got, want)


def test_aggregation_keeps_low_precision_dtypes():
    values = _randn(2, 2, 3, 10, seed=23).to(torch.bfloat16)
    corr = _randn(2, 2, 3, 10, seed=24).to(torch.bfloat16)
    out = time_delay_agg_inference(values, corr, 3)
    assert out.dtype == torch.bfloat16
    expected = time_delay_agg_inference(values.double(), corr.double(), 3)
    assert_close(out, expected.to(torch.bfloat16))
