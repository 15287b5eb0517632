"""Audio benchmarks: model cost and speed, separation metrics on real Libri2Mix, training data.

Subcommands (each prints a markdown table; ``benchmarks/RESULTS.md`` records them)::

    python benchmarks/audio.py profile [--models frcrn frcrn_cpu mossformer2 mossformer2_small]
        parameters (ours and the official count), MACs per second of audio (counted by
        torch.utils.flop_counter on 4 s of audio), CPU real-time factor at 2 threads offline
        and, for FRCRN, streaming (FRCRNStreamer fed 320-sample chunks, one 20 ms hop, or the
        sizes given by --stream-chunks), best of --repeats runs; --official-peer adds the offline
        RTF of the official FRCRN computation (the reference forward of tests/audio/test_frcrn.py)
        in the same run.
    python benchmarks/audio.py stream-compare --rev REV [--model frcrn] [--chunks 0 320 1600]
        FRCRN real-time factor offline (chunk 0) and streaming, the working tree's model against
        audio/models/frcrn.py as it was at git revision REV, side by side in one process
        (interleaved rounds, best of each).
    python benchmarks/audio.py separation-eval --data ../shared/data/audio/libri2mix_8k \\
        [--checkpoint runs/.../best.ckpt] [--official-outputs DIR]
        PIT SI-SNRi on the 36 real Libri2Mix mixtures; metric sanity checks (a reference scores
        very high, the mixture scores the SI-SNR predicted by the sources' energies).
    python benchmarks/audio.py make-speakers --out runs/audio_speakers
        training speech for the separation proof, kept apart from Libri2Mix: VCTK p234 (one
        speaker folder) and espeak-ng voices (one folder each), 8 kHz WAVs.

Timed runs belong under the CPU lock (``flock /work/notes/cpu.lock python benchmarks/...``).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mixerzoo.audio.data import SeparationDataset, list_wavs, read_audio, write_audio
from mixerzoo.audio.metrics import pit_si_snr, si_snr
from mixerzoo.audio.models import FRCRN, FRCRNStreamer, MossFormer2, mossformer2_small

OFFICIAL_PARAMS = {"frcrn": 13_963_604, "mossformer2": 55_735_410}

FRCRN_KWARGS = {
    "frcrn": dict(se_pooling="causal"),
    "frcrn_cpu": dict(channels=16, se_pooling="causal"),
}
MODELS = {
    "frcrn": lambda: FRCRN(**FRCRN_KWARGS["frcrn"]),
    "frcrn_cpu": lambda: FRCRN(**FRCRN_KWARGS["frcrn_cpu"]),
    "mossformer2": lambda: MossFormer2(sample_rate=8000),
    "mossformer2_16k": lambda: MossFormer2(sample_rate=16000),
    "mossformer2_small": lambda: mossformer2_small(),
}


def macs_per_second(model: torch.nn.Module, seconds: float = 4.0) -> float:
    x = torch.randn(1, int(seconds * model.sample_rate))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() / 2 / seconds


def real_time_factor(model, seconds: float, repeats: int = 3) -> float:
    x = torch.randn(1, int(seconds * model.sample_rate)) * 0.1
    with torch.no_grad():
        model(x[:, : model.sample_rate])  # warm-up
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    return best / seconds


def streaming_rtf(
    model: FRCRN, seconds: float, chunk: int = 320, streamer_cls=FRCRNStreamer
) -> float:
    x = torch.randn(1, int(seconds * model.sample_rate)) * 0.1
    streamer = streamer_cls(model)
    for i in range(0, model.sample_rate, chunk):  # warm-up second
        streamer.process(x[:, i : i + chunk])
    streamer.reset()
    start = time.perf_counter()
    for i in range(0, x.shape[-1], chunk):
        streamer.process(x[:, i : i + chunk])
    streamer.flush()
    return (time.perf_counter() - start) / seconds


def official_frcrn_rtf(seconds: float, repeats: int) -> float:
    """Offline RTF of the official FRCRN computation: the reference forward transcribed from
    ClearerVoice-Studio's code in ``tests/audio/test_frcrn.py`` (four real convolutions per
    complex one, its ``[B, C, F, T, 2]`` layout, global SE), with full-size random weights in the
    official layout. The official package itself is not installable offline."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / "audio" / "test_frcrn.py"
    spec = importlib.util.spec_from_file_location("frcrn_official_reference", path)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    sd = reference.official_state_dict(128)
    x = torch.randn(1, int(seconds * 16000)) * 0.1
    with torch.no_grad():
        reference.ref_frcrn(x[:, :16000], sd)  # warm-up
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            reference.ref_frcrn(x, sd)
            best = min(best, time.perf_counter() - start)
    return best / seconds


def cmd_profile(args) -> None:
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    chunks = args.stream_chunks
    streaming = " | ".join(f"RTF streaming ({c / 16:g} ms chunks)" for c in chunks)
    print(f"| model | params (ours) | official | MACs / s audio | RTF offline | {streaming} |")
    print("| --- | --- | --- | --- | --- |" + " --- |" * len(chunks))
    for name in args.models:
        torch.manual_seed(0)
        model = MODELS[name]().eval()
        params = sum(p.numel() for p in model.parameters())
        official = OFFICIAL_PARAMS.get(name.replace("_16k", ""), None)
        macs = macs_per_second(model)
        stream = " | ".join("-" for _ in chunks)
        if args.no_timing:
            rtf_text = "-"
        else:
            rtf_text = f"{real_time_factor(model, args.seconds, args.repeats):.3f}"
            if isinstance(model, FRCRN):
                # Best of --repeats, as offline (one run is at the mercy of the machine's drift).
                stream = " | ".join(
                    f"{min(streaming_rtf(model, args.seconds, c) for _ in range(args.repeats)):.3f}"
                    for c in chunks
                )
        off = f"{official / 1e6:.2f} M" if official else "-"
        print(
            f"| {name} | {params / 1e6:.2f} M | {off} | {macs / 1e9:.2f} G | {rtf_text} | {stream} |",
            flush=True,
        )
        if name == "frcrn" and args.official_peer and not args.no_timing:
            official_rtf = official_frcrn_rtf(args.seconds, args.repeats)
            dashes = " | ".join("-" for _ in chunks)
            print(
                f"| frcrn, official computation (peer) | 13.96 M | 13.96 M | - | "
                f"{official_rtf:.3f} | {dashes} |",
                flush=True,
            )


def _frcrn_module_at(rev: str) -> types.ModuleType:
    """``audio/models/frcrn.py`` as it was at git revision ``rev``, imported as a module of its own
    (without its registry entry, which the current module holds) to run beside the current one."""
    import mixerzoo.core.registry as registry

    root = Path(__file__).resolve().parents[1]
    shown = subprocess.run(
        ["git", "show", f"{rev}:audio/models/frcrn.py"], cwd=root, capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise SystemExit(
            f"stream-compare: cannot read audio/models/frcrn.py at revision {rev!r} from the git "
            f"checkout {root} ({shown.stderr.strip()}); give a commit of this repository"
        )
    source = shown.stdout
    name = f"frcrn_at_{rev}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    saved = registry.register_model
    registry.register_model = lambda *args, **kwargs: lambda obj: obj
    try:
        exec(compile(source, f"{rev}:audio/models/frcrn.py", "exec"), module.__dict__)
    finally:
        registry.register_model = saved
    return module


def cmd_stream_compare(args) -> None:
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.model}\n")
    versions = {
        f"at {args.rev}": _frcrn_module_at(args.rev),
        "working tree": sys.modules[FRCRN.__module__],
    }
    models = {}
    for label, module in versions.items():
        torch.manual_seed(0)
        models[label] = (module, module.FRCRN(**FRCRN_KWARGS[args.model]).eval())
    labels = list(models)
    print(f"| chunk | RTF {labels[0]} | RTF {labels[1]} | speed-up |")
    print("| --- | --- | --- | --- |")
    for chunk in args.chunks:
        best = dict.fromkeys(labels, math.inf)
        for _ in range(args.rounds):
            for label, (module, model) in models.items():
                if chunk == 0:
                    rtf = real_time_factor(model, args.seconds, repeats=1)
                else:
                    rtf = streaming_rtf(model, args.seconds, chunk, module.FRCRNStreamer)
                best[label] = min(best[label], rtf)
        what = "offline" if chunk == 0 else f"{chunk / 16:g} ms"
        before, after = best[labels[0]], best[labels[1]]
        print(f"| {what} | {before:.3f} | {after:.3f} | {before / after:.2f}x |", flush=True)


def _load(name: str, checkpoint: str | None) -> torch.nn.Module:
    from mixerzoo.audio.inference import load_model

    return load_model(name, checkpoint, sample_rate=8000)


def cmd_separation_eval(args) -> None:
    torch.set_num_threads(args.threads)
    data = SeparationDataset(args.data, num_spks=2, sample_rate=8000, layout="flat")
    rows = []
    for i in range(len(data)):
        item = data[i]
        mix, src = item["mix"].double(), item["sources"].double()
        # Sanity 1: a reference scored against itself is (numerically) perfect.
        self_score = float(si_snr(src[:1], src[:1]))
        # Sanity 2: the mixture is a1 s1 + a2 s2 (the sample files' sources were rescaled one by
        # one; least-squares gains); for nearly orthogonal sources its SI-SNR against s_k is the
        # energy ratio 10 log10(|a_k s_k|^2 / |a_j s_j|^2) of the scaled sources.
        gains = torch.linalg.lstsq(src.T, mix[:, None]).solution[:, 0]
        residual = float((mix - gains @ src).norm() / mix.norm())
        mix_scores = si_snr(mix[None].expand(2, -1), src)
        scaled = gains[:, None] * (src - src.mean(-1, keepdim=True))
        energy = scaled.square().sum(-1)
        predicted = 10 * torch.log10(energy / energy.flip(0))
        rows.append((item["name"], self_score, mix_scores, predicted, residual))
    print("Metric sanity on the 36 real Libri2Mix mixtures (8 kHz):\n")
    self_min = min(r[1] for r in rows)
    diff = max(float((r[2] - r[3]).abs().max()) for r in rows)
    mean_in = sum(float(r[2].mean()) for r in rows) / len(rows)
    print(f"- SI-SNR of a reference against itself: min {self_min:.1f} dB over the 36")
    print(f"- mixture SI-SNR vs the sources' energy ratio: max |diff| {diff:.3f} dB")
    print(f"- mean input SI-SNR (mixture vs each source): {mean_in:.2f} dB")
    print(f"- mixture = a1 s1 + a2 s2: max relative residual {max(r[4] for r in rows):.1e}\n")
    results = {}
    if args.official_outputs:
        folder = Path(args.official_outputs)
        scores = []
        for i in range(len(data)):
            item = data[i]
            stem = item["name"][: -len("_mix")]
            est = torch.stack(
                [read_audio(folder / f"{stem}_source{k}hat.wav", 8000) for k in (1, 2)]
            )
            n = min(est.shape[-1], item["mix"].shape[-1])
            best, _ = pit_si_snr(est[None, :, :n].double(), item["sources"][None, :, :n].double())
            mix_in = si_snr(item["mix"][None, :n].expand(2, -1), item["sources"][:, :n]).mean()
            scores.append(float(best) - float(mix_in))
        results["official MossFormer2 outputs (published samples)"] = scores
    for spec in args.models:
        name, _, ckpt = spec.partition("=")
        torch.manual_seed(args.seed)
        model = _load(name, ckpt or None)
        scores = []
        with torch.no_grad():
            for i in range(len(data)):
                item = data[i]
                est = model(item["mix"][None])
                best, _ = pit_si_snr(est.double(), item["sources"][None].double())
                mix_in = si_snr(item["mix"][None].expand(2, -1), item["sources"]).mean()
                scores.append(float(best) - float(mix_in))
        label = f"{name} ({'checkpoint ' + ckpt if ckpt else f'untrained, seed {args.seed}'})"
        results[label] = scores
    if results:
        print("| model | mean PIT SI-SNRi (dB) | min | max |")
        print("| --- | --- | --- | --- |")
        for label, scores in results.items():
            print(
                f"| {label} | {sum(scores) / len(scores):.2f} | {min(scores):.2f} | {max(scores):.2f} |"
            )


SENTENCES = [
    "the birch canoe slid on the smooth planks",
    "glue the sheet to the dark blue background",
    "it is easy to tell the depth of a well",
    "these days a chicken leg is a rare dish",
    "rice is often served in round bowls",
    "the juice of lemons makes fine punch",
    "the box was thrown beside the parked truck",
    "four hours of steady work faced us",
    "a large size in stockings is hard to sell",
    "the boy was there when the sun rose",
    "a rod is used to catch pink salmon",
    "the source of the huge river is the clear spring",
    "kick the ball straight and follow through",
    "help the woman get back to her feet",
    "a pot of tea helps to pass the evening",
    "smoky fires lack flame and heat",
    "the soft cushion broke the man's fall",
    "the salt breeze came across from the sea",
    "the girl at the booth sold fifty bonds",
    "the small pup gnawed a hole in the sock",
]

VOICES = [
    ("en-us", 40, 160),
    ("en-gb", 60, 150),
    ("en-gb-scotland", 30, 170),
    ("en-029", 70, 140),
    ("en-gb-x-rp", 50, 175),
    ("en-us+f2", 75, 155),
    ("en-gb+f4", 85, 165),
    ("en-us-nyc", 35, 145),
]


def cmd_make_speakers(args) -> None:
    out = Path(args.out)
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        sys.exit("espeak-ng not found: apt-get install espeak-ng (Debian) to synthesise speech")
    rng = random.Random(0)
    for voice, pitch, speed in VOICES:
        folder = out / f"espeak_{voice.replace('+', '_')}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.utterances):
            words = " ".join(rng.sample(SENTENCES, 2))
            with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
                subprocess.run(
                    [
                        espeak,
                        "-v",
                        voice,
                        "-p",
                        str(pitch),
                        "-s",
                        str(speed),
                        "-w",
                        tmp.name,
                        words,
                    ],
                    check=True,
                    capture_output=True,
                )
                wav = read_audio(tmp.name, 8000)
            write_audio(folder / f"{i:03d}.wav", 0.9 * wav / wav.abs().max(), 8000)
    vctk = out / "vctk_p234"
    vctk.mkdir(parents=True, exist_ok=True)
    for path in list_wavs(args.vctk):
        write_audio(vctk / path.name, read_audio(path, 8000), 8000)
    print(f"speaker folders in {out}: {sorted(p.name for p in out.iterdir())}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("profile")
    p.add_argument(
        "--models", nargs="+", default=["frcrn", "frcrn_cpu", "mossformer2", "mossformer2_small"]
    )
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-timing", action="store_true", help="parameters and MACs only")
    p.add_argument(
        "--official-peer",
        action="store_true",
        help="after frcrn, the offline RTF of the official computation (tests' reference forward)",
    )
    p.add_argument(
        "--stream-chunks",
        type=int,
        nargs="+",
        default=[320],
        help="FRCRN streaming chunk sizes in samples at 16 kHz (320 = one 20 ms hop)",
    )
    p = sub.add_parser("stream-compare")
    p.add_argument("--rev", required=True, help="git revision of the model to compare against")
    p.add_argument("--model", choices=sorted(FRCRN_KWARGS), default="frcrn")
    p.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        default=[0, 320, 1600, 3200, 4800],
        help="chunk sizes in samples at 16 kHz (0: offline)",
    )
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("separation-eval")
    p.add_argument("--data", default="../shared/data/audio/libri2mix_8k")
    p.add_argument("--models", nargs="*", default=[], help="NAME or NAME=CHECKPOINT")
    p.add_argument("--official-outputs", default=None, help="folder of <id>_source<k>hat.wav")
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("make-speakers")
    p.add_argument("--out", default="runs/audio_speakers")
    p.add_argument("--vctk", default="../shared/data/audio/vctk_p234")
    p.add_argument("--utterances", type=int, default=20)
    args = parser.parse_args(argv)
    {
        "profile": cmd_profile,
        "stream-compare": cmd_stream_compare,
        "separation-eval": cmd_separation_eval,
        "make-speakers": cmd_make_speakers,
    }[args.cmd](args)


if __name__ == "__main__":
    main()
