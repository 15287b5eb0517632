"""Speech data: WAV reading with checks, enhancement and separation datasets and data modules.

Layouts read (the standard ones of the field):

- **VoiceBank-DEMAND** (Valentini-Botinhao et al., 2016): paired folders with the same file
  names, ``clean_trainset_28spk_wav/`` + ``noisy_trainset_28spk_wav/`` and ``clean_testset_wav/``
  + ``noisy_testset_wav/`` (48 kHz originals, usually resampled to 16 kHz) —
  :class:`PairedFolderDataset`, :class:`VoiceBankDemandDataModule`.
- **On-the-fly noise mixing**: clean utterances and noise recordings, resampled to the model
  rate, a random crop of each, the noise scaled to an SNR drawn uniformly from a range (as the
  DNS-challenge and ClearerVoice data generators do) — :class:`NoiseMixingDataset`,
  :class:`NoiseMixingDataModule`. Clean files *and* noise files are split between training and
  the held-out test set.
- **LibriMix / WSJ0-2mix** separation sets: ``<split>/mix/`` (LibriMix: ``mix_clean/`` or
  ``mix_both/``) with ``s1/``, ``s2/``, ... holding the same file names; or a LibriMix metadata
  CSV (``mixture_path, source_1_path, source_2_path, ...``); or a flat folder of
  ``<id>_mix.wav`` + ``<id>_source1.wav`` ... — :class:`SeparationDataset`,
  :class:`SeparationDataModule`; and mixtures of utterances of different speakers made on the fly
  (:class:`SpeechMixingDataset`).

Bad input, handled with a clear message instead of a crash in the middle of training:

- another sample rate: resampled with a warning (``on_rate_mismatch="error"`` refuses instead);
- stereo / multichannel: averaged to mono with a warning (``channels="error"`` refuses, an int
  picks one channel);
- NaN or infinite samples, empty or silent files: :func:`scan_files` drops them from a dataset
  with one warning listing them (reading such a file directly raises :class:`AudioError`);
- clipped files (many samples at full scale) are kept, with a warning;
- sources of unequal length: cropped to the shortest with a warning;
- files shorter than one model frame or the training segment: zero-padded (crops of a short
  utterance are padded at the end).
"""

from __future__ import annotations

import csv
import math
import random
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import pytorch_lightning as pl
import soundfile as sf
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "AudioError",
    "read_audio",
    "write_audio",
    "check_audio",
    "scan_files",
    "list_wavs",
    "mix_at_snr",
    "PairedFolderDataset",
    "NoiseMixingDataset",
    "SeparationDataset",
    "SpeechMixingDataset",
    "VoiceBankDemandDataModule",
    "NoiseMixingDataModule",
    "SeparationDataModule",
    "collate_fixed",
]

AUDIO_SUFFIXES = (".wav", ".flac")


class AudioError(ValueError):
    """An audio file that cannot be used as it is (says which file and what to do)."""


def check_audio(wav: torch.Tensor, name: str = "audio", clip_fraction: float = 1e-3) -> str | None:
    """Problems of a waveform: ``None`` when fine, else a reason (NaN, empty, silent).

    Clipping (more than ``clip_fraction`` of the samples at |x| >= 0.999) only warns.
    """
    if wav.numel() == 0:
        return "it is empty"
    if not torch.isfinite(wav).all():
        return "it contains NaN or infinite samples"
    if float(wav.abs().max()) == 0.0:
        return "it is silent (all samples are zero)"
    clipped = float((wav.abs() >= 0.999).float().mean())
    if clipped > clip_fraction:
        warnings.warn(
            f"{name}: {clipped:.2%} of the samples are at full scale (clipped audio); kept",
            stacklevel=2,
        )
    return None


def read_audio(
    path: str | Path,
    sample_rate: int | None = None,
    *,
    channels: str | int = "mean",
    on_rate_mismatch: str = "resample",
    check: bool = True,
) -> torch.Tensor:
    """Read a WAV/FLAC file as float32 ``[T]`` in [-1, 1] with soundfile.

    Args:
        path: the file.
        sample_rate: rate wanted; ``None`` keeps the file's rate.
        channels: ``"mean"`` averages the channels of a multichannel file (with a warning), an
            int picks that channel, ``"error"`` refuses multichannel files.
        on_rate_mismatch: ``"resample"`` (with a warning, ``torchaudio.functional.resample``)
            or ``"error"``.
        check: raise :class:`AudioError` for NaN / empty / silent content.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} not found")
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    wav = torch.from_numpy(data)
    if wav.shape[1] > 1:
        if channels == "error":
            raise AudioError(
                f"{path}: has {wav.shape[1]} channels; the models are monaural — pass "
                f"channels='mean' or a channel index"
            )
        if isinstance(channels, int):
            if not 0 <= channels < wav.shape[1]:
                raise AudioError(f"{path}: channel {channels} asked, file has {wav.shape[1]}")
            wav = wav[:, channels]
        else:
            warnings.warn(f"{path}: {wav.shape[1]} channels averaged to mono", stacklevel=2)
            wav = wav.mean(dim=1)
    else:
        wav = wav[:, 0]
    if sample_rate is not None and rate != sample_rate:
        if on_rate_mismatch == "error":
            raise AudioError(
                f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz (resample the file or "
                f"pass on_rate_mismatch='resample')"
            )
        warnings.warn(f"{path}: resampled from {rate} Hz to {sample_rate} Hz", stacklevel=2)
        wav = _resample(wav, rate, sample_rate)
    if check:
        problem = check_audio(wav, str(path))
        if problem:
            raise AudioError(f"{path}: {problem}; remove it or fix it")
    return wav.contiguous()


def _resample(wav: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    if not torch.isfinite(wav).all():
        return wav  # the check reports it; resampling would smear NaNs everywhere
    return torchaudio.functional.resample(wav, rate, target)


def write_audio(path: str | Path, wav: torch.Tensor, sample_rate: int) -> Path:
    """Write ``[T]`` (or ``[C, T]``) float audio as 16-bit PCM WAV, clipped to [-1, 1]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wav.detach().cpu().float().clamp(-1, 1).numpy()
    if data.ndim == 2:
        data = data.T
    sf.write(str(path), data, sample_rate, subtype="PCM_16")
    return path


def list_wavs(folder: str | Path) -> list[Path]:
    """Sorted audio files of a folder (not recursive); a clear error when the folder is absent."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder {folder} not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no .wav/.flac files in {folder}")
    return files


@lru_cache(maxsize=4096)
def _cached(path: str, mtime_ns: int, size: int, sample_rate: int) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported once by scan_files
        return read_audio(path, sample_rate, check=False)


def load(path: str | Path, sample_rate: int, cache: bool = True) -> torch.Tensor:
    """Read and resample a file (memoised per file version: small corpora are read once per
    process; a file rewritten since is read again)."""
    if cache:
        stat = Path(path).stat()
        return _cached(str(path), stat.st_mtime_ns, stat.st_size, sample_rate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_audio(path, sample_rate, check=False)


def scan_files(groups: Sequence[Sequence[Path]], sample_rate: int, what: str) -> list[int]:
    """Indices of the groups whose every file is usable; one warning lists the others.

    A group is the set of files of one item (a noisy/clean pair, a mixture and its sources).
    """
    good, bad = [], []
    for i, files in enumerate(groups):
        reasons = []
        for f in files:
            try:
                problem = check_audio(load(f, sample_rate), str(f))
            except Exception as err:  # unreadable file: report, do not stop the run
                problem = f"unreadable ({err})"
            if problem:
                reasons.append(f"{f}: {problem}")
        (bad if reasons else good).append((i, reasons))
    if bad:
        lines = "; ".join(r for _, rs in bad for r in rs)
        warnings.warn(f"{what}: skipped {len(bad)} item(s): {lines}", stacklevel=2)
    if not good:
        raise AudioError(f"{what}: no usable item left after the checks")
    return [i for i, _ in good]


def equal_length(wavs: Sequence[torch.Tensor], name: str) -> list[torch.Tensor]:
    """Crop waveforms to the shortest, warning when they differ by more than 1%."""
    n = min(w.shape[-1] for w in wavs)
    longest = max(w.shape[-1] for w in wavs)
    if longest > n * 1.01 + 1:
        warnings.warn(f"{name}: sources of unequal length ({n}..{longest}); cropped", stacklevel=2)
    return [w[..., :n] for w in wavs]


def _crop(wavs: Sequence[torch.Tensor], length: int | None, rng: random.Random):
    """The same random crop of ``length`` from aligned waveforms (zero-padded when shorter)."""
    n = wavs[0].shape[-1]
    if length is None:
        return list(wavs)
    if n <= length:
        return [torch.nn.functional.pad(w, (0, length - n)) for w in wavs]
    start = rng.randint(0, n - length)
    return [w[..., start : start + length] for w in wavs]


def mix_at_snr(clean: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Scale ``noise`` so that ``10 log10(|clean|^2 / |noise|^2) = snr_db``; returns the noise."""
    clean_power = clean.square().mean().clamp_min(1e-10)
    noise_power = noise.square().mean().clamp_min(1e-10)
    return noise * torch.sqrt(clean_power / (noise_power * 10 ** (snr_db / 10)))


class PairedFolderDataset(Dataset):
    """Noisy/clean pairs with the same file names in two folders (VoiceBank-DEMAND).

    Items are ``{"noisy": [T], "clean": [T], "name": str}`` at ``sample_rate``; with
    ``segment`` (seconds) a random crop of that length (zero-padded when shorter).
    """

    def __init__(
        self,
        noisy_dir: str | Path,
        clean_dir: str | Path,
        sample_rate: int = 16000,
        segment: float | None = None,
        seed: int = 0,
    ):
        noisy = {p.name: p for p in list_wavs(noisy_dir)}
        clean = {p.name: p for p in list_wavs(clean_dir)}
        common = sorted(set(noisy) & set(clean))
        missing = sorted(set(noisy) ^ set(clean))
        if missing:
            warnings.warn(
                f"{len(missing)} file(s) without a partner in {noisy_dir} / {clean_dir} skipped "
                f"(e.g. {missing[:3]})",
                stacklevel=2,
            )
        if not common:
            raise FileNotFoundError(f"no file names shared by {noisy_dir} and {clean_dir}")
        pairs = [(noisy[n], clean[n]) for n in common]
        keep = scan_files(pairs, sample_rate, f"PairedFolderDataset({noisy_dir})")
        self.pairs = [pairs[i] for i in keep]
        self.sample_rate = sample_rate
        self.segment = None if segment is None else int(segment * sample_rate)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        noisy_path, clean_path = self.pairs[index]
        noisy = load(noisy_path, self.sample_rate)
        clean = load(clean_path, self.sample_rate)
        noisy, clean = equal_length([noisy, clean], noisy_path.name)
        rng = random.Random(hash((self.seed, self.epoch, index)))
        noisy, clean = _crop([noisy, clean], self.segment, rng)
        return {"noisy": noisy, "clean": clean, "name": noisy_path.stem}


class NoiseMixingDataset(Dataset):
    """Clean speech + noise mixed on the fly at an SNR drawn from ``snr_range`` (dB).

    Item ``i`` of epoch ``e`` draws (from a generator seeded by ``seed, e, i``, so a fixed
    ``epoch`` gives a fixed evaluation set): a clean file and a noise file, a crop of ``segment``
    seconds of each (the noise is looped when shorter), and the SNR. ``segment=None`` uses whole
    utterances with the noise cropped or looped to their length.

    Returns ``{"noisy", "clean", "name", "snr"}``.
    """

    def __init__(
        self,
        clean_files: Sequence[str | Path],
        noise_files: Sequence[str | Path],
        sample_rate: int = 16000,
        snr_range: tuple[float, float] = (0.0, 15.0),
        segment: float | None = 2.0,
        length: int = 1000,
        seed: int = 0,
        fixed: bool = False,
    ):
        clean = [Path(p) for p in clean_files]
        noise = [Path(p) for p in noise_files]
        self.clean = [clean[i] for i in scan_files([[p] for p in clean], sample_rate, "clean")]
        self.noise = [noise[i] for i in scan_files([[p] for p in noise], sample_rate, "noise")]
        low, high = snr_range
        if low > high:
            raise ValueError(f"snr_range must be (low, high) with low <= high, got {snr_range}")
        self.sample_rate = sample_rate
        self.snr_range = (float(low), float(high))
        self.segment = None if segment is None else int(segment * sample_rate)
        self.length = length
        self.seed = seed
        self.fixed = fixed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        epoch = 0 if self.fixed else self.epoch
        rng = random.Random(f"{self.seed}-{epoch}-{index}")
        clean_path = self.clean[rng.randrange(len(self.clean))]
        noise_path = self.noise[rng.randrange(len(self.noise))]
        clean = load(clean_path, self.sample_rate)
        (clean,) = _crop([clean], self.segment, rng)
        noise = load(noise_path, self.sample_rate)
        n = clean.shape[-1]
        if noise.shape[-1] < n:
            noise = noise.repeat(math.ceil(n / noise.shape[-1]))
        start = rng.randint(0, noise.shape[-1] - n)
        noise = noise[start : start + n]
        snr = rng.uniform(*self.snr_range)
        noisy = clean + mix_at_snr(clean, noise, snr)
        # Keep the mixture within full scale (the scale is shared, so the SNR is unchanged).
        peak = float(noisy.abs().max())
        if peak > 0.99:
            noisy, clean = noisy * (0.99 / peak), clean * (0.99 / peak)
        name = f"{clean_path.stem}+{noise_path.stem}@{snr:.1f}dB#{index}"
        return {"noisy": noisy, "clean": clean, "name": name, "snr": snr}


class SeparationDataset(Dataset):
    """Mixtures with their reference sources (LibriMix, WSJ0-2mix, CSV or flat layouts).

    Args:
        root: the split folder (``mix/`` or ``mix_clean/`` or ``mix_both/`` + ``s1/``, ``s2/``
            ...), a LibriMix metadata CSV (columns ``mixture_path`` and ``source_<k>_path``;
            relative paths are taken from the CSV's folder), or a flat folder of
            ``<id>_mix.wav`` + ``<id>_source<k>.wav`` (``layout="flat"``).
        num_spks: number of sources.
        sample_rate: rate of the model (files at another rate are resampled, with a warning).
        segment: seconds of a random crop (training), or ``None`` for whole mixtures.
        layout: ``"auto"`` (CSV file, or ``mix*/`` + ``s1/`` folders, else flat), ``"folders"``,
            ``"csv"``, ``"flat"``.

    Items: ``{"mix": [T], "sources": [S, T], "name": str}``.
    """

    def __init__(
        self,
        root: str | Path,
        num_spks: int = 2,
        sample_rate: int = 8000,
        segment: float | None = None,
        layout: str = "auto",
        seed: int = 0,
    ):
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(
                f"separation data {root} not found (LibriMix: generate it with the LibriMix "
                f"scripts; WSJ0-2mix: with the pywsj0-mix scripts)"
            )
        self.items = self._index(root, num_spks, layout)
        keep = scan_files(
            [[m, *s] for m, s in self.items], sample_rate, f"SeparationDataset({root})"
        )
        self.items = [self.items[i] for i in keep]
        self.num_spks = num_spks
        self.sample_rate = sample_rate
        self.segment = None if segment is None else int(segment * sample_rate)
        self.seed = seed
        self.epoch = 0

    @staticmethod
    def _index(root: Path, num_spks: int, layout: str) -> list[tuple[Path, list[Path]]]:
        if layout == "auto":
            if root.is_file():
                layout = "csv"
            elif any((root / d).is_dir() for d in ("mix", "mix_clean", "mix_both")):
                layout = "folders"
            else:
                layout = "flat"
        if layout == "csv":
            with open(root, newline="") as f:
                rows = list(csv.DictReader(f))
            cols = ["mixture_path"] + [f"source_{k}_path" for k in range(1, num_spks + 1)]
            if not rows or any(c not in rows[0] for c in cols):
                raise ValueError(f"{root}: a LibriMix metadata CSV needs the columns {cols}")

            def resolve(p: str) -> Path:
                path = Path(p)
                return path if path.is_absolute() else root.parent / path

            return [(resolve(r[cols[0]]), [resolve(r[c]) for c in cols[1:]]) for r in rows]
        if layout == "folders":
            mix_dir = next(
                root / d for d in ("mix", "mix_clean", "mix_both") if (root / d).is_dir()
            )
            items = []
            for mix in list_wavs(mix_dir):
                sources = [root / f"s{k}" / mix.name for k in range(1, num_spks + 1)]
                missing = [s for s in sources if not s.is_file()]
                if missing:
                    raise FileNotFoundError(f"{mix}: reference source(s) missing: {missing}")
                items.append((mix, sources))
            return items
        if layout == "flat":
            items = []
            for mix in sorted(root.glob("*_mix.wav")):
                stem = mix.name[: -len("_mix.wav")]
                sources = [root / f"{stem}_source{k}.wav" for k in range(1, num_spks + 1)]
                if all(s.is_file() for s in sources):
                    items.append((mix, sources))
            if not items:
                raise FileNotFoundError(f"no <id>_mix.wav with <id>_source<k>.wav files in {root}")
            # Natural order: item2 before item10.
            items.sort(key=lambda it: [int(t) if t.isdigit() else t for t in _tokens(it[0].name)])
            return items
        raise ValueError(f"unknown layout {layout!r}; use auto, folders, csv or flat")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        mix_path, source_paths = self.items[index]
        mix = load(mix_path, self.sample_rate)
        sources = [load(p, self.sample_rate) for p in source_paths]
        mix, *sources = equal_length([mix, *sources], mix_path.name)
        rng = random.Random(f"{self.seed}-{self.epoch}-{index}")
        mix, *sources = _crop([mix, *sources], self.segment, rng)
        return {"mix": mix, "sources": torch.stack(sources), "name": mix_path.stem}


def _tokens(name: str) -> list[str]:
    import re

    return re.findall(r"\d+|\D+", name)


class SpeechMixingDataset(Dataset):
    """Mixtures of ``num_spks`` utterances of different speakers, made on the fly.

    ``speakers`` maps a speaker name to its utterance files. Item ``i`` of epoch ``e`` (seeded)
    picks ``num_spks`` distinct speakers, one utterance and a crop of ``segment`` seconds of
    each, and gains so that the sources' levels differ by up to ``level_range`` dB (WSJ0-2mix
    mixes at 0-5 dB relative level); the mixture is their sum, scaled below full scale.
    """

    def __init__(
        self,
        speakers: dict[str, Sequence[str | Path]],
        num_spks: int = 2,
        sample_rate: int = 8000,
        segment: float = 2.0,
        level_range: float = 5.0,
        length: int = 1000,
        seed: int = 0,
        fixed: bool = False,
    ):
        self.speakers = {}
        for name, files in speakers.items():
            files = [Path(f) for f in files]
            keep = scan_files([[f] for f in files], sample_rate, f"speaker {name}")
            self.speakers[name] = [files[i] for i in keep]
        if len(self.speakers) < num_spks:
            raise ValueError(
                f"SpeechMixingDataset: {num_spks} sources need as many speakers, got "
                f"{len(self.speakers)}"
            )
        self.names = sorted(self.speakers)
        self.num_spks = num_spks
        self.sample_rate = sample_rate
        self.segment = int(segment * sample_rate)
        self.level_range = level_range
        self.length = length
        self.seed = seed
        self.fixed = fixed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = random.Random(f"{self.seed}-{0 if self.fixed else self.epoch}-{index}")
        chosen = rng.sample(self.names, self.num_spks)
        sources = []
        for name in chosen:
            wav = load(rng.choice(self.speakers[name]), self.sample_rate)
            (wav,) = _crop([wav], self.segment, rng)
            rms = wav.square().mean().sqrt().clamp_min(1e-6)
            gain_db = rng.uniform(-self.level_range / 2, self.level_range / 2)
            sources.append(wav / rms * 0.05 * 10 ** (gain_db / 20))
        sources = torch.stack(sources)
        mix = sources.sum(0)
        peak = float(mix.abs().max())
        if peak > 0.99:
            mix, sources = mix * (0.99 / peak), sources * (0.99 / peak)
        return {"mix": mix, "sources": sources, "name": "+".join(chosen) + f"#{index}"}


def collate_fixed(items: list[dict]) -> dict:
    """Stack items; waveforms of unequal length are zero-padded to the longest, with
    ``lengths [B]`` giving the real lengths."""
    out: dict = {"name": [it["name"] for it in items]}
    for key in items[0]:
        if key == "name":
            continue
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            n = max(v.shape[-1] for v in values)
            out[key] = torch.stack(
                [torch.nn.functional.pad(v, (0, n - v.shape[-1])) for v in values]
            )
            if key in ("noisy", "mix"):
                out["lengths"] = torch.tensor([v.shape[-1] for v in values])
        else:
            out[key] = torch.tensor(values)
    return out


class _AudioDataModule(pl.LightningDataModule):
    """Loaders shared by the audio data modules (training crops, whole-utterance evaluation)."""

    def __init__(self, batch_size: int, eval_batch_size: int, num_workers: int, seed: int):
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set = self.val_set = self.test_set = None

    def set_epoch(self, epoch: int) -> None:
        """New random crops / mixtures each epoch (called by the task at each epoch start)."""
        if self.train_set is not None:
            self.train_set.epoch = epoch

    def _loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_fixed,
            generator=generator if shuffle else None,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


class VoiceBankDemandDataModule(_AudioDataModule):
    """VoiceBank-DEMAND: ``root/{clean,noisy}_trainset_28spk_wav`` and ``{clean,noisy}_testset_wav``.

    The 11,572 training pairs (28 speakers) train, the 824 test pairs (2 speakers) test;
    ``val_fraction`` of the training pairs (by sorted name) validate. Audio is resampled to
    ``sample_rate`` (16 kHz for FRCRN); training uses random crops of ``segment`` seconds.
    """

    def __init__(
        self,
        root: str,
        sample_rate: int = 16000,
        segment: float = 2.0,
        batch_size: int = 4,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        train_dirs: tuple[str, str] = ("noisy_trainset_28spk_wav", "clean_trainset_28spk_wav"),
        test_dirs: tuple[str, str] = ("noisy_testset_wav", "clean_testset_wav"),
        seed: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.root = Path(root)
        self.sample_rate = sample_rate
        self.segment = segment
        self.val_fraction = val_fraction
        self.train_dirs, self.test_dirs = train_dirs, test_dirs

    def setup(self, stage: str | None = None) -> None:
        r = self.root
        train = PairedFolderDataset(
            r / self.train_dirs[0],
            r / self.train_dirs[1],
            self.sample_rate,
            self.segment,
            self.seed,
        )
        val = PairedFolderDataset(
            r / self.train_dirs[0], r / self.train_dirs[1], self.sample_rate, None, self.seed
        )
        n_val = max(1, int(len(train) * self.val_fraction))
        val.pairs = train.pairs[-n_val:]
        train.pairs = train.pairs[:-n_val]
        self.train_set, self.val_set = train, val
        self.test_set = PairedFolderDataset(
            r / self.test_dirs[0], r / self.test_dirs[1], self.sample_rate, None, self.seed
        )


def _resolve_files(folder: Path, names: Sequence[str] | None) -> list[Path]:
    files = list_wavs(folder)
    if names is None:
        return files
    by_stem = {p.stem: p for p in files}
    missing = [n for n in names if Path(n).stem not in by_stem]
    if missing:
        raise FileNotFoundError(f"{folder}: files not found: {missing}")
    return [by_stem[Path(n).stem] for n in names]


class NoiseMixingDataModule(_AudioDataModule):
    """Clean speech and noise folders mixed on the fly, with held-out clean *and* noise files.

    Args:
        clean_dir: folder of clean utterances.
        noise_dir: folder of noise recordings.
        test_clean: names (stems) of the clean files held out for testing; the rest train.
        test_noise: names of the noise files held out for testing.
        sample_rate: model rate (files are resampled).
        snr_range: SNRs (dB) drawn uniformly for every mixture.
        segment: training crop (seconds); evaluation uses whole utterances.
        train_items: mixtures per training epoch (new mixtures each epoch).
        val_items, test_items: fixed mixtures for validation (training files, other draws) and
            test (held-out files).
    """

    def __init__(
        self,
        clean_dir: str,
        noise_dir: str,
        test_clean: list[str],
        test_noise: list[str],
        sample_rate: int = 16000,
        snr_range: tuple[float, float] = (0.0, 15.0),
        segment: float = 2.0,
        train_items: int = 500,
        val_items: int = 8,
        test_items: int = 24,
        batch_size: int = 4,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.clean_dir, self.noise_dir = Path(clean_dir), Path(noise_dir)
        self.test_clean, self.test_noise = list(test_clean), list(test_noise)
        self.sample_rate = sample_rate
        self.snr_range = tuple(snr_range)
        self.segment = segment
        self.train_items, self.val_items, self.test_items = train_items, val_items, test_items

    def splits(self) -> dict[str, list[Path]]:
        """Files of each split: ``train_clean``, ``train_noise``, ``test_clean``, ``test_noise``."""
        clean, noise = list_wavs(self.clean_dir), list_wavs(self.noise_dir)
        test_clean = _resolve_files(self.clean_dir, self.test_clean)
        test_noise = _resolve_files(self.noise_dir, self.test_noise)
        train_clean = [p for p in clean if p not in test_clean]
        train_noise = [p for p in noise if p not in test_noise]
        if not train_clean or not train_noise:
            raise ValueError("NoiseMixingDataModule: the held-out lists leave no training file")
        return {
            "train_clean": train_clean,
            "train_noise": train_noise,
            "test_clean": test_clean,
            "test_noise": test_noise,
        }

    def setup(self, stage: str | None = None) -> None:
        s = self.splits()
        common = {"sample_rate": self.sample_rate, "snr_range": self.snr_range}
        self.train_set = NoiseMixingDataset(
            s["train_clean"],
            s["train_noise"],
            segment=self.segment,
            length=self.train_items,
            seed=self.seed,
            **common,
        )
        self.val_set = NoiseMixingDataset(
            s["train_clean"],
            s["train_noise"],
            segment=None,
            length=self.val_items,
            seed=self.seed + 1,
            fixed=True,
            **common,
        )
        self.test_set = NoiseMixingDataset(
            s["test_clean"],
            s["test_noise"],
            segment=None,
            length=self.test_items,
            seed=self.seed + 2,
            fixed=True,
            **common,
        )


class SeparationDataModule(_AudioDataModule):
    """Separation sets: LibriMix / WSJ0-2mix split folders or CSVs, or on-the-fly mixing.

    Args:
        train, val, test: each a split folder (``mix*/`` + ``s<k>/``), a LibriMix metadata CSV,
            or a flat folder (see :class:`SeparationDataset`); ``None`` leaves the split out.
        train_speakers: instead of ``train``, a folder whose sub-folders are speakers (their
            audio files are utterances) for :class:`SpeechMixingDataset`.
        num_spks, sample_rate: sources and model rate (8 kHz: Libri2Mix/WSJ0-2mix "8k min").
        segment: training crop in seconds (MossFormer2 trains on 2 s at 8 kHz... 4 s); whole
            mixtures for validation and test.
        train_items: mixtures per epoch with ``train_speakers``.
        val_items: when ``val`` is ``None`` and ``train_speakers`` is set, fixed synthetic
            mixtures of the training speakers validate.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        train_speakers: str | None = None,
        num_spks: int = 2,
        sample_rate: int = 8000,
        segment: float = 2.0,
        train_items: int = 500,
        val_items: int = 8,
        batch_size: int = 2,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if train is None and train_speakers is None and test is None:
            raise ValueError("SeparationDataModule: give train, train_speakers or test")
        self.train, self.val, self.test = train, val, test
        self.train_speakers = train_speakers
        self.num_spks, self.sample_rate, self.segment = num_spks, sample_rate, segment
        self.train_items, self.val_items = train_items, val_items

    def _speakers(self) -> dict[str, list[Path]]:
        root = Path(self.train_speakers)
        if not root.is_dir():
            raise FileNotFoundError(f"speaker folder {root} not found")
        speakers = {d.name: list_wavs(d) for d in sorted(root.iterdir()) if d.is_dir()}
        if not speakers:
            raise FileNotFoundError(f"{root} has no speaker sub-folders with audio files")
        return speakers

    def setup(self, stage: str | None = None) -> None:
        kw = {"num_spks": self.num_spks, "sample_rate": self.sample_rate}
        if self.train_speakers is not None:
            speakers = self._speakers()
            self.train_set = SpeechMixingDataset(
                speakers, segment=self.segment, length=self.train_items, seed=self.seed, **kw
            )
            if self.val is None:
                self.val_set = SpeechMixingDataset(
                    speakers,
                    segment=self.segment,
                    length=self.val_items,
                    seed=self.seed + 1,
                    fixed=True,
                    **kw,
                )
        elif self.train is not None:
            self.train_set = SeparationDataset(
                self.train, segment=self.segment, seed=self.seed, **kw
            )
        if self.val is not None:
            self.val_set = SeparationDataset(self.val, segment=None, **kw)
        if self.test is not None:
            self.test_set = SeparationDataset(self.test, segment=None, **kw)

    def val_dataloader(self):
        return [] if self.val_set is None else super().val_dataloader()

    def test_dataloader(self):
        if self.test_set is None:
            raise ValueError("SeparationDataModule: no test split was given (test=...)")
        return super().test_dataloader()
