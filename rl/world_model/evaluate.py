"""Evaluation of world models: generation MSE against the horizon, tables, plots, frame strips.

The measure of "Facing Off World Model Backbones: RNNs, Transformers, and S4" (Deng et al., 2023,
arXiv 2307.02064) for long-term imagination: given a context of real frames (and all actions),
the model imagines the following frames in recurrent mode; the generation MSE at horizon ``k`` is
the mean squared error (pixels in ``[0, 1]``, averaged over pixels and episodes) between the
``k``-th imagined frame and the true one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mixerzoo.rl.world_model.model import S4WM

__all__ = ["imagination_mse", "mse_table", "plot_mse", "save_strip"]


@torch.no_grad()
def imagination_mse(
    model: S4WM,
    batch: dict[str, torch.Tensor],
    context: int,
    horizon: int | None = None,
    sample: bool = True,
) -> dict[str, torch.Tensor]:
    """Imagine ``horizon`` frames after ``context`` real ones and compare with the truth.

    Args:
        model: the world model.
        batch: ``obs [B, T, C, H, W]``, ``action [B, T, A]`` (previous actions).
        context: number of context frames.
        horizon: imagined frames (default: the rest of the sequence, ``T - context``).
        sample: sample the prior (as the paper) or take its mode.

    Returns:
        ``mse [B, horizon]`` per episode and step, ``true`` and ``imagined`` frames
        ``[B, horizon, C, H, W]``, ``reward [B, horizon]`` (imagined rewards).
    """
    obs, action = batch["obs"], batch["action"]
    total = obs.shape[1]
    horizon = total - context if horizon is None else horizon
    if context < 1 or horizon < 1 or context + horizon > total:
        raise ValueError(
            f"imagination_mse: need context >= 1, horizon >= 1 and context + horizon <= {total} "
            f"(sequence length), got context {context}, horizon {horizon}"
        )
    was_training = model.training
    model.eval()
    try:
        out = model.imagine(
            obs[:, :context], action[:, :context], action[:, context : context + horizon], sample
        )
    finally:
        model.train(was_training)
    true = obs[:, context : context + horizon]
    mse = (out["frames"].clamp(0, 1) - true).square().flatten(2).mean(-1)
    return {"mse": mse, "true": true, "imagined": out["frames"], "reward": out["reward"]}


def mse_table(
    curves: dict[str, np.ndarray], horizons: Sequence[int], extra: dict[str, dict] | None = None
) -> str:
    """A markdown table of generation MSE at ``horizons`` (1-based steps after the context).

    Args:
        curves: name -> mean MSE per imagined step ``[H]``.
        horizons: steps to report (each <= ``H``).
        extra: name -> {column: value} extra columns (e.g. training time).
    """
    extra = extra or {}
    extra_cols = list(dict.fromkeys(k for cols in extra.values() for k in cols))
    head = ["backbone", *[f"MSE @ {h}" for h in horizons], *extra_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, curve in curves.items():
        cells = [name]
        for h in horizons:
            cells.append(f"{curve[h - 1]:.4f}" if h <= len(curve) else "n/a")
        cells += [str(extra.get(name, {}).get(col, "")) for col in extra_cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_mse(curves: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Plot MSE against the imagination horizon, one line per backbone, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
    ax.set_xlabel("imagination horizon (steps after the context)")
    ax.set_ylabel("generation MSE")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_strip(
    true: torch.Tensor | np.ndarray,
    imagined: dict[str, torch.Tensor | np.ndarray] | torch.Tensor | np.ndarray,
    path: str | Path,
    every: int = 10,
    scale: int = 2,
) -> Path:
    """A PNG strip: the true frames on top, each model's imagined frames below, every ``every``
    steps.

    Args:
        true: ``[H, C, H, W]`` frames in ``[0, 1]`` (one episode).
        imagined: ``[H, C, H, W]`` or name -> such frames.
        path: PNG file.
        every: step between shown frames.
        scale: pixel upscaling.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def row(frames) -> np.ndarray:
        frames = np.asarray(torch.as_tensor(frames).clamp(0, 1).cpu())[::every]
        tiles = [
            np.pad(f.transpose(1, 2, 0), ((1, 1), (1, 1), (0, 0)), constant_values=1.0)
            for f in frames
        ]
        return np.concatenate(tiles, 1)

    rows = [row(true)]
    if not isinstance(imagined, dict):
        imagined = {"imagined": imagined}
    rows += [row(frames) for frames in imagined.values()]
    image = np.concatenate(rows, 0)
    image = np.repeat(np.repeat(image, scale, 0), scale, 1)
    path = Path(path)
    plt.imsave(path, image)
    return path
