"""Audio reading, bad inputs, the dataset layouts and on-the-fly mixing."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from mixerzoo.audio.data import (
    AudioError,
    NoiseMixingDataModule,
    PairedFolderDataset,
    SeparationDataset,
    SpeechMixingDataset,
    collate_fixed,
    mix_at_snr,
    read_audio,
)


def tone(rate, seconds, f=200.0, amp=0.3):
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )


def write(path, wav, rate):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, rate)
    return path


def test_read_resamples_with_warning_or_refuses(tmp_path):
    path = write(tmp_path / "a.wav", tone(48000, 0.5), 48000)
    with pytest.warns(UserWarning, match="resampled from 48000 Hz to 16000 Hz"):
        wav = read_audio(path, 16000)
    assert wav.shape == (8000,) and wav.dtype == torch.float32
    with pytest.raises(AudioError, match="expected 16000 Hz"):
        read_audio(path, 16000, on_rate_mismatch="error")


def test_stereo_is_averaged_or_picked_or_refused(tmp_path):
    left, right = tone(8000, 0.2, 200), tone(8000, 0.2, 300)
    path = write(tmp_path / "st.wav", np.stack([left, right], 1), 8000)
    with pytest.warns(UserWarning, match="2 channels averaged"):
        mean = read_audio(path, 8000)
    np.testing.assert_allclose(mean.numpy(), (left + right) / 2, atol=1e-4)
    np.testing.assert_allclose(read_audio(path, 8000, channels=1).numpy(), right, atol=1e-4)
    with pytest.raises(AudioError, match="2 channels"):
        read_audio(path, 8000, channels="error")


def test_nan_silent_and_empty_files_raise_clearly(tmp_path):
    bad = tone(8000, 0.2)
    bad[10] = np.nan
    nan_path = write(tmp_path / "nan.wav", bad, 8000)  # float WAV keeps the NaN
    sf.write(str(nan_path), bad, 8000, subtype="FLOAT")
    silent = write(tmp_path / "silent.wav", np.zeros(800, np.float32), 8000)
    with pytest.raises(AudioError, match="NaN"):
        read_audio(nan_path, 8000)
    with pytest.raises(AudioError, match="silent"):
        read_audio(silent, 8000)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_audio(tmp_path / "missing.wav", 8000)


def test_clipped_audio_is_kept_with_a_warning(tmp_path):
    clipped = np.clip(tone(8000, 0.5, amp=3.0), -1, 1)
    path = write(tmp_path / "clip.wav", clipped, 8000)
    with pytest.warns(UserWarning, match="clipped"):
        wav = read_audio(path, 8000)
    assert wav.abs().max() > 0.99


def test_paired_folders_skip_bad_files_and_crop_unequal_lengths(tmp_path):
    for name, n in (("a", 0.5), ("b", 0.6), ("c", 0.4)):
        write(tmp_path / "clean" / f"{name}.wav", tone(16000, n), 16000)
        write(tmp_path / "noisy" / f"{name}.wav", tone(16000, n, f=210), 16000)
    write(tmp_path / "noisy" / "b.wav", tone(16000, 0.7, f=210), 16000)  # longer than its clean
    write(tmp_path / "clean" / "c.wav", np.zeros(6400, np.float32), 16000)  # silent: skipped
    write(tmp_path / "noisy" / "orphan.wav", tone(16000, 0.3), 16000)
    with pytest.warns(UserWarning) as caught:
        ds = PairedFolderDataset(tmp_path / "noisy", tmp_path / "clean", 16000)
    messages = " ".join(str(w.message) for w in caught)
    assert "without a partner" in messages and "silent" in messages
    assert [p[0].stem for p in ds.pairs] == ["a", "b"]
    with pytest.warns(UserWarning, match="unequal length"):
        item = ds[1]
    assert item["noisy"].shape == item["clean"].shape == (9600,)
    cropped = PairedFolderDataset(tmp_path / "noisy", tmp_path / "clean", 16000, segment=1.0)
    assert cropped[0]["noisy"].shape == (16000,)  # shorter than the segment: zero-padded


def test_noise_mixing_reaches_the_drawn_snr_and_keeps_files_apart(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        write(tmp_path / "clean" / f"u{i}.wav", tone(48000, 1.0, f=150 + 40 * i), 48000)
        write(
            tmp_path / "noise" / f"n{i}.wav",
            (0.1 * rng.standard_normal(8000)).astype(np.float32),
            16000,
        )
    dm = NoiseMixingDataModule(
        str(tmp_path / "clean"), str(tmp_path / "noise"), ["u3"], ["n3", "n2"], test_items=6,
        snr_range=(0.0, 15.0), segment=0.5,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup()
        splits = dm.splits()
        assert {p.stem for p in splits["train_clean"]} == {"u0", "u1", "u2"}
        assert {p.stem for p in splits["train_noise"]} == {"n0", "n1"}
        for i in range(6):
            item = dm.test_set[i]
            noise = item["noisy"] - item["clean"]
            snr = 10 * torch.log10(item["clean"].square().sum() / noise.square().sum())
            assert abs(float(snr) - item["snr"]) < 1e-3
            assert 0 <= item["snr"] <= 15
            assert item["name"].startswith("u3+n")
        train = dm.train_set[0]
        assert train["noisy"].shape == (8000,)
        # Fixed test sets draw the same mixtures again; the training set draws new ones per epoch.
        assert torch.equal(dm.test_set[2]["noisy"], dm.test_set[2]["noisy"])
        dm.set_epoch(1)
        assert not torch.equal(dm.train_set[0]["noisy"], train["noisy"])


def test_mix_at_snr_closed_form():
    clean, noise = torch.randn(1000), torch.randn(1000) * 3
    scaled = mix_at_snr(clean, noise, 5.0)
    assert abs(float(10 * torch.log10(clean.square().mean() / scaled.square().mean())) - 5) < 1e-4


def _separation_files(folder, rate=8000):
    s1, s2 = tone(rate, 0.5, 180), tone(rate, 0.5, 330)
    write(folder / "mix" / "x.wav", s1 + s2, rate)
    write(folder / "s1" / "x.wav", s1, rate)
    write(folder / "s2" / "x.wav", s2, rate)
    return s1, s2


def test_separation_layouts_folders_csv_flat(tmp_path):
    s1, s2 = _separation_files(tmp_path / "wsj")
    ds = SeparationDataset(tmp_path / "wsj", 2, 8000)
    item = ds[0]
    assert item["sources"].shape == (2, 4000)
    np.testing.assert_allclose(item["sources"][1].numpy(), s2, atol=1e-4)
    csv_path = tmp_path / "meta.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"])
        w.writerow(["x", "wsj/mix/x.wav", "wsj/s1/x.wav", "wsj/s2/x.wav", 4000])
    assert torch.equal(SeparationDataset(csv_path, 2, 8000)[0]["mix"], item["mix"])
    for k, wav in (("mix", s1 + s2), ("source1", s1), ("source2", s2)):
        write(tmp_path / "flat" / f"item10_{k}.wav", wav, 8000)
        write(tmp_path / "flat" / f"item2_{k}.wav", wav, 8000)
    flat = SeparationDataset(tmp_path / "flat", 2, 8000)
    assert [m.name for m, _ in flat.items] == ["item2_mix.wav", "item10_mix.wav"]
    # Unequal lengths: cropped with a warning.
    write(tmp_path / "wsj" / "s2" / "x.wav", tone(8000, 0.6, 330), 8000)
    with pytest.warns(UserWarning, match="unequal length"):
        assert SeparationDataset(tmp_path / "wsj", 2, 8000, seed=1)[0]["sources"].shape == (2, 4000)
    with pytest.raises(FileNotFoundError, match="not found"):
        SeparationDataset(tmp_path / "nowhere", 2, 8000)


def test_speech_mixing_uses_distinct_speakers(tmp_path):
    speakers = {}
    for k in range(3):
        speakers[f"s{k}"] = [
            write(tmp_path / f"s{k}" / "0.wav", tone(8000, 0.6, 100 + 90 * k), 8000)
        ]
    ds = SpeechMixingDataset(speakers, num_spks=2, sample_rate=8000, segment=0.5, length=5)
    for i in range(5):
        item = ds[i]
        a, b = item["name"].split("#")[0].split("+")
        assert a != b
        assert torch.allclose(item["mix"], item["sources"].sum(0), atol=1e-6)
    with pytest.raises(ValueError, match="need as many speakers"):
        SpeechMixingDataset({"one": speakers["s0"]}, num_spks=2)


def test_collate_pads_and_reports_lengths():
    batch = collate_fixed(
        [
            {"noisy": torch.ones(5), "clean": torch.ones(5), "name": "a"},
            {"noisy": torch.ones(3), "clean": torch.ones(3), "name": "b"},
        ]
    )
    assert batch["noisy"].shape == (2, 5) and batch["lengths"].tolist() == [5, 3]
    assert batch["noisy"][1, 3:].abs().sum() == 0
