"""Chunked inference, permutation alignment across chunks, the command line and the tasks."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
from torchmetrics.functional.audio import scale_invariant_signal_noise_ratio

from mixerzoo.audio.inference import chunked, main
from mixerzoo.audio.models import FRCRN, MossFormer2
from mixerzoo.audio.task import EnhancementTask, SeparationTask
from mixerzoo.core.testing import assert_close


def test_chunked_identity_and_pointwise_models_are_exact():
    wav = torch.randn(2, 10_007)
    assert_close(chunked(lambda x: x, wav, 1000, 100), wav)
    assert_close(chunked(lambda x: 2 * x.tanh(), wav, 999, 0), 2 * wav.tanh())


def test_chunked_memory_is_bounded_by_the_chunk():
    seen = []

    def model(x):
        seen.append(x.shape[-1])
        return x

    chunked(model, torch.randn(1, 50_000), 4000, 500)
    assert max(seen) == 4000


def test_chunked_separation_realigns_speaker_order_between_chunks():
    t = torch.arange(20_000) / 8000
    a, b = torch.sin(2 * math.pi * 220 * t), torch.sign(torch.sin(2 * math.pi * 97 * t)) * 0.5
    calls = {"n": 0}

    def separator(x):
        # Returns the two sources of the current window, swapped on every other call.
        start = calls["start"]
        n = x.shape[-1]
        out = torch.stack([a[start : start + n], b[start : start + n]])[None]
        calls["n"] += 1
        calls["start"] += 3000
        return out.flip(1) if calls["n"] % 2 == 0 else out

    calls["start"] = 0
    out = chunked(separator, torch.zeros(1, 20_000), 4000, 1000)
    assert_close(out[0, 0], a, atol=1e-5, rtol=0)
    assert_close(out[0, 1], b, atol=1e-5, rtol=0)


def test_command_line_writes_wavs_and_spectrogram(tmp_path):
    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((12_000, 2))).astype(np.float32)
    path = tmp_path / "in.wav"
    sf.write(str(path), stereo, 48000)  # stereo at another rate: averaged and resampled
    out = tmp_path / "out"
    written = main(
        ["enhance", str(path), "--model-args", '{"channels": 8}', "--out", str(out), "--chunk", "0.1",
         "--overlap", "0.02"]
    )  # fmt: skip
    wav, rate = sf.read(str(out / "in_enhanced.wav"))
    assert rate == 16000 and wav.shape == (4000,)
    assert (out / "in.png").stat().st_size > 1000
    assert len(written) == 2
    written = main(
        ["separate", str(path), "--model", "mossformer2_small", "--sample-rate", "8000",
         "--out", str(out)]
    )  # fmt: skip
    assert {p.name for p in written} == {"in_s1.wav", "in_s2.wav", "in.png"}


def _batches(kind, n_batches=4):
    g = torch.Generator().manual_seed(0)
    t = torch.arange(4000) / 8000
    out = []
    for i in range(n_batches):
        s1 = torch.sin(2 * math.pi * (150 + 10 * i) * t)[None].repeat(2, 1) * 0.3
        s2 = torch.sign(torch.sin(2 * math.pi * (61 + 3 * i) * t))[None].repeat(2, 1) * 0.2
        if kind == "sep":
            out.append({"mix": s1 + s2, "sources": torch.stack([s1, s2], 1), "name": ["a", "b"],
                        "lengths": torch.tensor([4000, 3000])})  # fmt: skip
        else:
            noise = 0.2 * torch.randn(2, 4000, generator=g)
            out.append({"noisy": s1 + noise, "clean": s1, "name": ["a", "b"],
                        "lengths": torch.tensor([4000, 3000])})  # fmt: skip
    return out


def test_tasks_train_and_write_per_utterance_csv(tmp_path):
    for kind, task in (
        ("enh", EnhancementTask(FRCRN(channels=8, sample_rate=8000), pesq_stoi="always")),
        ("sep", SeparationTask(MossFormer2(channels=16, num_layers=1, query_key_dim=8,
                                           fsmn_channels=8, group_size=32), pesq_stoi="always")),
    ):  # fmt: skip
        task.optimizer_factory = partial(torch.optim.Adam, lr=1e-3)
        trainer = pl.Trainer(
            max_epochs=1, logger=pl.loggers.CSVLogger(tmp_path, name=kind),
            enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu",
        )  # fmt: skip
        batches = _batches(kind)

        def loader(items):
            return torch.utils.data.DataLoader(items, batch_size=None)

        trainer.fit(task, train_dataloaders=loader(batches), val_dataloaders=loader(batches[:1]))
        trainer.test(task, dataloaders=loader(batches[:1]))
        rows = (tmp_path / kind / "version_0" / "test_utterances.csv").read_text().splitlines()
        header = rows[0].split(",")
        assert header[:4] == ["name", "si_snr_in", "si_snr_out", "si_snri"]
        assert {"pesq_in", "pesq_out", "stoi_in", "stoi_out"} <= set(header)
        assert len(rows) == 3  # two utterances
        # The input SI-SNR of the second utterance, on its first 3,000 samples only: torchmetrics'
        # SI-SNR of the noisy input (enhancement) or the mean over sources of the mixture's.
        second = dict(zip(header, rows[2].split(",")))
        batch = batches[0]
        if kind == "enh":
            x, refs = batch["noisy"][1:2, :3000], batch["clean"][1:2, :3000]
        else:
            refs = batch["sources"][1, :, :3000]
            x = batch["mix"][1:2, :3000].expand_as(refs)
        expected = float(scale_invariant_signal_noise_ratio(x, refs).mean())
        assert float(second["si_snr_in"]) == pytest.approx(expected, abs=1e-3)
        assert float(second["si_snri"]) == pytest.approx(
            float(second["si_snr_out"]) - expected, abs=1e-3
        )


def test_training_step_skips_nan_batches():
    task = EnhancementTask(FRCRN(channels=8))
    batch = {"noisy": torch.full((1, 2000), float("nan")), "clean": torch.zeros(1, 2000)}
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert task.training_step(batch, 0) is None
    assert any("NaN" in str(w.message) for w in caught)
