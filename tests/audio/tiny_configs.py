"""Tiny audio data for the configs under configs/audio/ (tests/configs/test_configs.py).

``overrides(config, tmp_path)`` writes WAV files under ``tmp_path`` for the config's data module
and returns the CLI arguments that point the config at them: clean speech-like signals (harmonic
tones with a syllable-rate envelope) and noise, VoiceBank-DEMAND folders, LibriMix folders, a
LibriMix metadata CSV, a flat ``<id>_mix.wav`` folder and speaker folders. Some files are written
at 48 kHz so that the resampling path runs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf


def speech_like(rate: int, seconds: float, f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    wav = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    return (0.2 * wav * envelope).astype(np.float32)


def _write(path: Path, wav: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, rate)


def _separation_items(folder: Path, n: int, rate: int, seed: int) -> list[tuple[Path, Path, Path]]:
    items = []
    for i in range(n):
        s1 = speech_like(rate, 0.6, 120 + 10 * i, seed + i)
        s2 = speech_like(rate, 0.6, 210 + 10 * i, seed + 100 + i)
        name = f"utt{i}.wav"
        paths = (folder / "mix_clean" / name, folder / "s1" / name, folder / "s2" / name)
        for path, wav in zip(paths, (s1 + s2, s1, s2)):
            _write(path, wav, rate)
        items.append(paths)
    return items


def overrides(config: dict, tmp_path: Path) -> list[str]:
    data = config["data"]
    cls = data["class_path"].rsplit(".", 1)[-1]
    args = data.get("init_args", {})
    rate = int(args.get("sample_rate", 16000))
    out = ["--data.init_args.num_workers", "0"]
    if cls == "NoiseMixingDataModule":
        clean, noise = tmp_path / "clean", tmp_path / "noise"
        for i, name in enumerate(("a", "b", "c")):
            _write(clean / f"{name}.wav", speech_like(48000, 0.7, 110 + 30 * i, i), 48000)
            rng = np.random.default_rng(10 + i)
            _write(
                noise / f"n{name}.wav", (0.1 * rng.standard_normal(rate)).astype(np.float32), rate
            )
        out += [
            "--data.init_args.clean_dir", str(clean),
            "--data.init_args.noise_dir", str(noise),
            "--data.init_args.test_clean", "[c]",
            "--data.init_args.test_noise", "[nc]",
            "--data.init_args.segment", "0.5",
            "--data.init_args.train_items", "2",
            "--data.init_args.val_items", "1",
            "--data.init_args.test_items", "1",
            "--data.init_args.batch_size", "2",
        ]  # fmt: skip
    elif cls == "VoiceBankDemandDataModule":
        root = tmp_path / "vbd"
        rng = np.random.default_rng(0)
        for split, names in (
            ("trainset_28spk", ("p1_001", "p1_002", "p2_001")),
            ("testset", ("p3_001",)),
        ):
            for i, name in enumerate(names):
                wav = speech_like(48000, 0.6, 120 + 20 * i, i)
                _write(root / f"clean_{split}_wav" / f"{name}.wav", wav, 48000)
                noisy = wav + 0.05 * rng.standard_normal(wav.shape).astype(np.float32)
                _write(root / f"noisy_{split}_wav" / f"{name}.wav", noisy, 48000)
        out += [
            "--data.init_args.root", str(root),
            "--data.init_args.segment", "0.5",
            "--data.init_args.val_fraction", "0.34",
            "--data.init_args.batch_size", "2",
        ]  # fmt: skip
    elif cls == "SeparationDataModule":
        if args.get("train_speakers"):
            speakers = tmp_path / "speakers"
            for k in range(3):
                for j in range(2):
                    wav = speech_like(rate, 0.7, 100 + 60 * k, 10 * k + j)
                    _write(speakers / f"spk{k}" / f"{j}.wav", wav, rate)
            out += [
                "--data.init_args.train_speakers", str(speakers),
                "--data.init_args.train_items", "2",
                "--data.init_args.val_items", "1",
            ]  # fmt: skip
        else:
            train = tmp_path / "train"
            _separation_items(train, 2, rate, 0)
            # Validation through a LibriMix metadata CSV with paths relative to it.
            val_items = _separation_items(tmp_path / "dev", 1, rate, 50)
            csv_path = tmp_path / "dev.csv"
            with open(csv_path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(
                    ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"]
                )
                for mix, s1, s2 in val_items:
                    rel = [str(p.relative_to(tmp_path)) for p in (mix, s1, s2)]
                    w.writerow([mix.stem, *rel, 4800])
            out += ["--data.init_args.train", str(train), "--data.init_args.val", str(csv_path)]
        # Test on a flat folder of <id>_mix.wav / <id>_source<k>.wav, as the shared Libri2Mix set.
        flat = tmp_path / "flat"
        s1, s2 = speech_like(rate, 0.5, 130, 7), speech_like(rate, 0.5, 260, 8)
        for suffix, wav in (("mix", s1 + s2), ("source1", s1), ("source2", s2)):
            _write(flat / f"item0_{suffix}.wav", wav, rate)
        out += [
            "--data.init_args.test", str(flat),
            "--data.init_args.segment", "0.5",
            "--data.init_args.batch_size", "2",
        ]  # fmt: skip
    else:
        raise ValueError(f"tiny_configs: no tiny data for {cls}")
    return out
