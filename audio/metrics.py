"""Speech metrics: SI-SNR, permutation-invariant SI-SNR, SI-SNR improvement, PESQ and STOI.

Thin wrappers over torchmetrics' functional audio metrics (which call the ``pesq`` and
``pystoi`` packages for PESQ and STOI):

- :func:`si_snr` — scale-invariant signal-to-noise ratio (Le Roux et al., "SDR — half-baked or
  well done?", ICASSP 2019, arXiv 1811.02508), zero-mean, in dB, per utterance;
- :func:`pit_si_snr` — the best mean SI-SNR over all assignments of estimates to references
  (permutation-invariant training, Yu et al., ICASSP 2017, arXiv 1607.00325) and the assignment;
- :func:`pesq` / :func:`stoi` — per-utterance PESQ (ITU-T P.862, narrow or wide band) and STOI
  (Taal et al., 2011), returning NaN (with the reason) where the reference C code refuses an
  utterance (silence, too short), so that one bad file never stops an evaluation.

torchmetrics adds ``eps`` to both energies, so an all-zero estimate scores a finite value
(0 dB) with a finite gradient, and an all-zero reference a large negative finite value.
"""

from __future__ import annotations

import math
import warnings

import torch
from torchmetrics.functional.audio import (
    permutation_invariant_training,
    scale_invariant_signal_noise_ratio,
)

__all__ = ["si_snr", "si_snr_improvement", "pit_si_snr", "pesq", "stoi", "reorder_sources"]


def _check_pair(estimate: torch.Tensor, reference: torch.Tensor, where: str, dims: int) -> None:
    if estimate.shape != reference.shape or estimate.dim() != dims:
        shape = "[B, T]" if dims == 2 else "[B, S, T]"
        raise ValueError(
            f"{where}: estimate and reference must both be {shape} with equal shapes, got "
            f"{tuple(estimate.shape)} and {tuple(reference.shape)} (crop or pad the sources to "
            f"one length first)"
        )


def si_snr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SI-SNR in dB of ``estimate [B, T]`` against ``reference [B, T]`` -> ``[B]``."""
    _check_pair(estimate, reference, "si_snr", 2)
    return scale_invariant_signal_noise_ratio(estimate, reference)


def si_snr_improvement(
    estimate: torch.Tensor, reference: torch.Tensor, mixture: torch.Tensor
) -> torch.Tensor:
    """``SI-SNR(estimate) - SI-SNR(mixture)`` in dB, ``[B, T]`` inputs -> ``[B]``."""
    return si_snr(estimate, reference) - si_snr(mixture, reference)


def pit_si_snr(
    estimates: torch.Tensor, references: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation-invariant SI-SNR of ``estimates [B, S, T]`` against ``references [B, S, T]``.

    Returns:
        ``(best [B], perm [B, S])``: the best mean SI-SNR over speakers (dB) and the assignment,
        ``perm[b, j]`` = index of the estimate matched with reference ``j`` (so
        :func:`reorder_sources` ``(estimates, perm)[:, j]`` goes with ``references[:, j]``).
    """
    _check_pair(estimates, references, "pit_si_snr", 3)
    best, perm = permutation_invariant_training(
        estimates,
        references,
        scale_invariant_signal_noise_ratio,
        mode="speaker-wise",
        eval_func="max",
    )
    return best, perm


def reorder_sources(estimates: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``estimates [B, S, T]`` reordered by ``perm [B, S]`` from :func:`pit_si_snr`."""
    index = perm[..., None].expand_as(estimates)
    return estimates.gather(1, index)


def pesq(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int, mode: str = "wb"):
    """Per-utterance PESQ ``[B]`` (``mode`` ``"wb"``: 16 kHz only; ``"nb"``: 8 or 16 kHz).

    Utterances the P.862 code rejects (no speech detected, too short) give NaN with a warning.
    """
    from torchmetrics.functional.audio.pesq import perceptual_evaluation_speech_quality

    _check_pair(estimate, reference, "pesq", 2)
    if mode == "wb" and sample_rate != 16000:
        raise ValueError(f"wide-band PESQ needs 16 kHz audio, got {sample_rate} Hz (use mode='nb')")
    if sample_rate not in (8000, 16000):
        raise ValueError(f"PESQ is defined at 8 or 16 kHz, got {sample_rate} Hz; resample first")
    scores = []
    for est, ref in zip(estimate.detach().cpu().double(), reference.detach().cpu().double()):
        try:
            value = perceptual_evaluation_speech_quality(est, ref, sample_rate, mode)
            scores.append(float(value))
        except Exception as err:  # the C library raises its own error types
            warnings.warn(
                f"PESQ undefined for one utterance ({err}); recorded as NaN", stacklevel=2
            )
            scores.append(math.nan)
    return torch.tensor(scores, dtype=torch.float64)


def stoi(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int, extended: bool = False):
    """Per-utterance STOI ``[B]`` in [0, 1] (resampled to 10 kHz inside pystoi)."""
    from torchmetrics.functional.audio.stoi import short_time_objective_intelligibility

    _check_pair(estimate, reference, "stoi", 2)
    scores = []
    for est, ref in zip(estimate.detach().cpu().double(), reference.detach().cpu().double()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pystoi warns on short inputs; NaN/0 says enough
            value = short_time_objective_intelligibility(est, ref, sample_rate, extended)
        scores.append(float(value))
    return torch.tensor(scores, dtype=torch.float64)
