"""SI-SNR, PIT and quality metrics against closed forms and brute force (numpy)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from mixerzoo.audio.metrics import pesq, pit_si_snr, reorder_sources, si_snr, stoi


def np_si_snr(est: np.ndarray, ref: np.ndarray) -> float:
    est, ref = est - est.mean(), ref - ref.mean()
    target = (est @ ref) / (ref @ ref) * ref
    return 10 * np.log10((target @ target) / ((est - target) @ (est - target)))


def test_si_snr_matches_the_definition_and_is_scale_invariant():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 4000))
    est = ref + 0.3 * rng.standard_normal((3, 4000)) + 0.7  # an offset: zero-mean removes it
    got = si_snr(torch.tensor(est), torch.tensor(ref))
    expected = [np_si_snr(e, r) for e, r in zip(est, ref)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    scaled = si_snr(torch.tensor(est * 17.0), torch.tensor(ref))
    np.testing.assert_allclose(scaled.numpy(), expected, rtol=1e-6)


def test_known_snr_of_orthogonal_noise():
    t = torch.arange(8000, dtype=torch.float64)
    ref = torch.sin(2 * torch.pi * 440 * t / 8000)[None]
    noise = torch.sin(2 * torch.pi * 1000 * t / 8000)[None] * 0.1  # orthogonal over whole periods
    # SI-SNR = 10 log10(|s|^2 / |n|^2) = 20 dB.
    assert abs(float(si_snr(ref + noise, ref)) - 20.0) < 1e-3


def test_all_zero_estimate_gives_finite_value_and_gradient():
    ref = torch.randn(2, 1000)
    est = torch.zeros(2, 1000, requires_grad=True)
    value = si_snr(est, ref)
    value.sum().backward()
    assert torch.isfinite(value).all()
    assert torch.isfinite(est.grad).all()
    silent_ref = si_snr(torch.randn(2, 1000), torch.zeros(2, 1000))
    assert torch.isfinite(silent_ref).all()


def test_pit_finds_the_brute_force_permutation():
    torch.manual_seed(1)
    refs = torch.randn(4, 3, 2000, dtype=torch.float64)
    perm = torch.stack([torch.randperm(3) for _ in range(4)])
    ests = torch.stack([refs[b, perm[b]] for b in range(4)]) + 0.5 * torch.randn(4, 3, 2000)
    best, found = pit_si_snr(ests, refs)
    for b in range(4):
        scores = {
            p: np.mean([np_si_snr(ests[b, p[j]].numpy(), refs[b, j].numpy()) for j in range(3)])
            for p in itertools.permutations(range(3))
        }
        p_best = max(scores, key=scores.get)
        assert tuple(found[b].tolist()) == p_best
        assert abs(float(best[b]) - scores[p_best]) < 1e-6
    ordered = reorder_sources(ests, found)
    np.testing.assert_allclose(
        si_snr(ordered.reshape(-1, 2000), refs.reshape(-1, 2000)).view(4, 3).mean(1), best
    )


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="equal shapes"):
        si_snr(torch.randn(2, 100), torch.randn(2, 99))
    with pytest.raises(ValueError, match=r"\[B, S, T\]"):
        pit_si_snr(torch.randn(2, 100), torch.randn(2, 100))


def test_pesq_and_stoi_on_speech_like_signal_and_silence():
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    # An amplitude-modulated harmonic signal: PESQ/STOI treat it as speech-like.
    ref = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((150, 300, 450, 600)))
    ref = ref * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * 0.2
    noisy = ref + 0.05 * rng.standard_normal(t.shape)
    r, n = torch.tensor(ref)[None], torch.tensor(noisy)[None]
    clean_pesq = float(pesq(r, r, 16000, "wb")[0])
    noisy_pesq = float(pesq(n, r, 16000, "wb")[0])
    assert clean_pesq > 4.0 and noisy_pesq < clean_pesq
    assert float(stoi(r, r, 16000)[0]) > 0.99
    assert float(stoi(n, r, 16000)[0]) < float(stoi(r, r, 16000)[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silent = pesq(torch.zeros(1, 16000), torch.zeros(1, 16000), 16000, "wb")
    assert np.isnan(silent[0]) and any("PESQ undefined" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="16 kHz"):
        pesq(r, r, 8000, "wb")
