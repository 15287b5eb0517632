"""Inference on files of any length: chunked overlap-add, model loading, spectrogram plots.

``chunked(fn, wav, chunk, overlap)`` runs a model over windows of ``chunk`` samples that overlap
by ``overlap`` samples and cross-fades them with complementary linear ramps, so memory is
bounded by the chunk whatever the file length. For separators the speaker order of each window
is matched to the previous one on their overlap (the permutation with the highest correlation)
before the cross-fade. FRCRN can also stream frame by frame
(:class:`~mixerzoo.audio.models.FRCRNStreamer`).

Command line (also reachable as ``mixerzoo predict`` with a config and the
:class:`~mixerzoo.audio.task.AudioPredictionWriter` callback)::

    python -m mixerzoo.audio.inference enhance noisy.wav --model frcrn \\
        --checkpoint runs/frcrn_vctk_cpu/version_0/checkpoints/best.ckpt --out enhanced/
    python -m mixerzoo.audio.inference separate mix.wav --model mossformer2 \\
        --checkpoint MossFormer2_SS_16K/last_best_checkpoint.pt --official --sample-rate 16000

Each input gives ``<stem>_enhanced.wav`` (or ``<stem>_s1.wav``, ``<stem>_s2.wav``, ...) at the
model's rate (inputs at another rate are resampled, with a warning; stereo is averaged) and
``<stem>.png`` with the spectrograms of input, outputs and (``--reference``) references.
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from mixerzoo.audio.data import read_audio, write_audio
from mixerzoo.core.registry import create_model

__all__ = [
    "chunked",
    "load_model",
    "enhance",
    "separate",
    "plot_spectrograms",
    "main",
]


def _ramp(n: int, device, dtype) -> torch.Tensor:
    return (torch.arange(1, n + 1, device=device, dtype=dtype)) / (n + 1)


def _best_permutations(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """``perm [B, S]``: the order of ``current [B, S, n]`` sources that best matches
    ``previous [B, S, n]`` (highest summed cosine similarity)."""
    s = current.shape[1]
    sim = torch.nn.functional.cosine_similarity(
        previous[:, :, None, :], current[:, None, :, :], dim=-1
    )  # [B, S_prev, S_cur]
    perms = list(itertools.permutations(range(s)))
    scores = torch.stack([sim[:, range(s), list(p)].sum(-1) for p in perms], dim=-1)
    best = scores.argmax(-1)
    return torch.tensor([perms[int(i)] for i in best], device=current.device)


@torch.no_grad()
def chunked(
    fn: Callable[[torch.Tensor], torch.Tensor],
    wav: torch.Tensor,
    chunk: int,
    overlap: int,
    min_length: int = 1,
) -> torch.Tensor:
    """Apply ``fn`` (``[B, n] -> [B, n]`` or ``[B, S, n]``) over overlapping windows of ``wav``.

    Args:
        fn: the model.
        wav: ``[B, L]``.
        chunk: window length in samples.
        overlap: samples shared by consecutive windows (cross-faded), ``< chunk``.
        min_length: windows (and whole inputs) shorter than this are zero-padded for ``fn`` and
            cropped after (one model frame).

    Returns:
        ``[B, L]`` or ``[B, S, L]``.
    """
    if not 0 <= overlap < chunk:
        raise ValueError(
            f"chunked: need 0 <= overlap < chunk, got overlap={overlap}, chunk={chunk}"
        )

    def run(piece: torch.Tensor) -> torch.Tensor:
        n = piece.shape[-1]
        if n < min_length:
            piece = torch.nn.functional.pad(piece, (0, min_length - n))
        return fn(piece)[..., :n]

    length = wav.shape[-1]
    if length <= chunk:
        return run(wav)
    hop = chunk - overlap
    out = None
    starts = list(range(0, max(length - overlap, 1), hop))
    for i, start in enumerate(starts):
        piece = run(wav[:, start : start + chunk])
        n = piece.shape[-1]
        if out is None:
            out = piece.new_zeros(piece.shape[:-1] + (length,))
        if i > 0 and overlap > 0:
            shared = min(overlap, n)
            if piece.dim() == 3:
                perm = _best_permutations(out[..., start : start + shared], piece[..., :shared])
                piece = piece.gather(1, perm[..., None].expand_as(piece))
            fade_in = _ramp(shared, piece.device, piece.dtype)
            out[..., start : start + shared] *= 1 - fade_in
            out[..., start : start + shared] += piece[..., :shared] * fade_in
            out[..., start + shared : start + n] = piece[..., shared:]
        else:
            out[..., start : start + n] = piece
    return out


def load_model(
    name: str,
    checkpoint: str | Path | None = None,
    official: bool = False,
    **kwargs,
) -> torch.nn.Module:
    """Build a registered audio model and load weights (eval mode).

    Args:
        name: registered model name (``frcrn``, ``mossformer2``, ``mossformer2_small``).
        checkpoint: a Lightning checkpoint of an audio task (``state_dict`` with ``model.``
            keys), a plain state dict, or (``official=True``) an official ClearerVoice-Studio
            checkpoint, mapped by the model's documented key map.
        official: the checkpoint is in the official layout.
        kwargs: model constructor arguments.
    """
    model = create_model(name, **kwargs)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if official:
            state = state.get("model", state)
            from mixerzoo.audio.models.frcrn import FRCRN, frcrn_official_key_map
            from mixerzoo.audio.models.mossformer2 import mossformer2_official_key_map

            mapper = (
                frcrn_official_key_map if isinstance(model, FRCRN) else mossformer2_official_key_map
            )
            state = mapper(state)
        elif "state_dict" in state:
            state = {
                k[len("model.") :]: v
                for k, v in state["state_dict"].items()
                if k.startswith("model.")
            }
        model.load_state_dict(state, strict=True)
    return model.eval()


def _model_frame(model: torch.nn.Module) -> int:
    return getattr(model, "kernel_size", None) or getattr(model, "win_len", 1)


@torch.no_grad()
def enhance(
    model: torch.nn.Module, wav: torch.Tensor, chunk_s: float = 20.0, overlap_s: float = 1.0
):
    """Enhance ``wav [L]`` or ``[B, L]`` at the model's rate, chunked beyond ``chunk_s`` seconds."""
    rate = model.sample_rate
    squeeze = wav.dim() == 1
    x = wav[None] if squeeze else wav
    y = chunked(model, x, int(chunk_s * rate), int(overlap_s * rate), _model_frame(model))
    return y[0] if squeeze else y


@torch.no_grad()
def separate(
    model: torch.nn.Module, wav: torch.Tensor, chunk_s: float = 20.0, overlap_s: float = 1.0
):
    """Separate ``wav [L]`` (or ``[B, L]``) into ``[S, L]`` (or ``[B, S, L]``), chunked."""
    return enhance(model, wav, chunk_s, overlap_s)


def plot_spectrograms(
    panels: dict[str, torch.Tensor], sample_rate: int, path: str | Path, title: str = ""
) -> Path:
    """Log-magnitude spectrograms of waveforms ``[T]`` stacked in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_fft = 512 if sample_rate > 8000 else 256
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels)), squeeze=False)
    for ax, (name, wav) in zip(axes[:, 0], panels.items()):
        wav = wav.detach().float().cpu()
        spec = torch.stft(
            wav, n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True
        ).abs()
        db = 20 * torch.log10(spec + 1e-6)
        duration = wav.shape[-1] / sample_rate
        ax.imshow(
            db.numpy(),
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=(0, duration, 0, sample_rate / 2000),
            vmin=float(db.max()) - 80,
            vmax=float(db.max()),
        )
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    """``python -m mixerzoo.audio.inference {enhance,separate} FILES ...`` (see module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m mixerzoo.audio.inference")
    parser.add_argument("mode", choices=("enhance", "separate"))
    parser.add_argument("inputs", nargs="+", help="audio files")
    parser.add_argument("--model", default=None, help="registered model name")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--official", action="store_true", help="official checkpoint layout")
    parser.add_argument("--sample-rate", type=int, default=None, help="model rate")
    parser.add_argument("--model-args", default="{}", help="JSON dict of model arguments")
    parser.add_argument("--out", default="enhanced", help="output folder")
    parser.add_argument("--chunk", type=float, default=20.0, help="seconds per window")
    parser.add_argument("--overlap", type=float, default=1.0, help="seconds of cross-fade")
    parser.add_argument("--reference", nargs="*", default=[], help="reference files to plot")
    parser.add_argument("--strict-rate", action="store_true", help="refuse other sample rates")
    args = parser.parse_args(argv)
    import json

    kwargs = json.loads(args.model_args)
    if args.sample_rate:
        kwargs["sample_rate"] = args.sample_rate
    name = args.model or ("frcrn" if args.mode == "enhance" else "mossformer2")
    model = load_model(name, args.checkpoint, args.official, **kwargs)
    if args.checkpoint is None:
        warnings.warn(
            f"{name}: no --checkpoint given, running randomly initialised weights", stacklevel=1
        )
    rate = model.sample_rate
    policy = "error" if args.strict_rate else "resample"
    out_dir = Path(args.out)
    written = []
    for path in args.inputs:
        wav = read_audio(path, rate, on_rate_mismatch=policy)
        stem = Path(path).stem
        y = enhance(model, wav, args.chunk, args.overlap)
        panels = {"input": wav}
        if y.dim() == 1:
            written.append(write_audio(out_dir / f"{stem}_enhanced.wav", y, rate))
            panels["enhanced"] = y
        else:
            for k, s in enumerate(y, start=1):
                written.append(write_audio(out_dir / f"{stem}_s{k}.wav", s, rate))
                panels[f"source {k}"] = s
        for k, ref in enumerate(args.reference, start=1):
            panels[f"reference {k}"] = read_audio(ref, rate, on_rate_mismatch=policy)[
                : wav.shape[-1]
            ]
        written.append(plot_spectrograms(panels, rate, out_dir / f"{stem}.png", title=stem))
    for p in written:
        print(p)
    return written


if __name__ == "__main__":
    main()
