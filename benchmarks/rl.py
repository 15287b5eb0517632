"""RL benchmarks: backbone speed, PPO on popgym under a time budget, S4WM imagination.

Three measurements, each printing a markdown table (and writing it, with plots, to ``--out``):

``speed``
    An S5 stack (popjaxrl's layer: width 256, state 256, ``full_glu``; one layer and the 4-layer
    stack) forward over a ``[2, 16384, 256]`` stream against ``torch.nn.LSTM(256, 256)`` on the
    same input, side by side in one process, at ``--threads`` CPU threads (median of
    ``--repeats`` alternating runs); with lower bounds for the 4-layer stack (its matrix products
    alone, in float32 and bfloat16, and its recurrences alone) and the LSTM in bfloat16.

``ppo``
    PPO on popgym RepeatPreviousEasy with the S5, GRU and memoryless (MLP) agents of
    ``configs/rl/ppo_{s5,gru,mlp}_repeat_previous.yaml``, each for ``--minutes`` of wall time:
    training return at the end (mean over the last updates), return on 64 fresh evaluation
    episodes, environment steps done; learning curves as a PNG.

``s4wm``
    S4WM on FourRooms (``configs/rl/s4wm_four_rooms.yaml``) with the S4D, GRU and attention
    backbones after the same number of training steps: generation MSE of frames imagined after a
    100-frame context at horizons 50 / 100 / 200, training time, and the time of one training
    step at two sequence lengths; MSE-vs-horizon plot and a strip of true vs imagined frames.

Usage::

    python benchmarks/rl.py speed
    python benchmarks/rl.py ppo --minutes 30
    python benchmarks/rl.py s4wm --steps 1500

Run timed measurements one at a time (``flock /work/notes/cpu.lock ...`` on a shared machine).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "rl"


def _optimizer(section: dict):
    """An optimiser factory from a config's ``optimizer`` section (class path + init args)."""
    module, _, name = section["class_path"].rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    return functools.partial(cls, **section.get("init_args", {}))


def _trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**defaults, **kwargs})


# --- speed -----------------------------------------------------------------------------------


def bench_speed(args) -> str:
    from mixerzoo.core.ops.linear_scan import linear_scan
    from mixerzoo.rl.backbone import MixerStack

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    width = 256
    x = torch.randn(args.batch, args.length, width)
    s5 = {"d_state": 256, "activation": "full_glu"}
    models = {
        "S5, 1 layer (state 256, full_glu)": MixerStack(width, "s5", 1, s5),
        "S5, 4-layer stack (popjaxrl)": MixerStack(width, "s5", 4, s5),
        "S5, 1 layer, SSM only (no output gate)": MixerStack(
            width, "s5", 1, {"d_state": 256, "activation": "none"}
        ),
        "torch.nn.LSTM(256, 256)": torch.nn.LSTM(width, width, batch_first=True),
    }
    # The S5 recurrence alone (what linear_scan computes inside one layer): P/2 = 128 complex
    # modes per step, the input projection done beforehand.
    layer = models["S5, 1 layer (state 256, full_glu)"].blocks[0].mixer
    with torch.no_grad():
        lam, b_bar, _ = layer.discrete_parameters()
        bu = torch.einsum("bth,ph->btp", x.to(b_bar.dtype), b_bar)
    models["linear_scan alone (S5's recurrence, 128 complex modes)"] = lambda _: linear_scan(
        lam.expand_as(bu), bu
    )
    # The floor a full_glu layer cannot go below on this machine: its four [H, H]-sized matrix
    # products (input and output projections of the SSM, the GLU's value and gate) and nothing else.
    weights = [torch.randn(width, width) / width**0.5 for _ in range(4)]

    def products(inp: torch.Tensor, ws: list[torch.Tensor], layers: int = 1) -> None:
        # Each product's output is dropped before the next, so the allocator reuses its memory
        # as a layer's consumed activations would be (keeping all of them times page faults).
        for _ in range(layers):
            for w in ws:
                torch.matmul(inp, w)

    models["matrix products alone (one full_glu layer's 4 projections)"] = lambda inp: products(
        inp, weights
    )
    # Lower bounds for the whole 4-layer stack (what the target is about): its 16 products, in
    # float32 and in bfloat16 (the CPU's matrix units; input and weights cast beforehand, so no
    # cast is timed), and its 4 recurrences. Beside them the LSTM in bfloat16, the peer's answer
    # to the same trick.
    lstm_bf16 = torch.nn.LSTM(width, width, batch_first=True).to(torch.bfloat16)
    x_bf16 = x.to(torch.bfloat16)
    weights_bf16 = [w.to(torch.bfloat16) for w in weights]
    models["torch.nn.LSTM(256, 256), bfloat16"] = lambda _: lstm_bf16(x_bf16)
    models["matrix products alone (the 4-layer stack's 16)"] = lambda inp: products(inp, weights, 4)
    models["matrix products alone (the 4-layer stack's 16), bfloat16"] = lambda _: products(
        x_bf16, weights_bf16, 4
    )

    def recurrences(_, layers: int = 4) -> None:
        for _ in range(layers):
            linear_scan(lam.expand_as(bu), bu)

    models["linear_scan alone x 4 (the 4-layer stack's recurrences)"] = recurrences
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():
            model(x)  # warm-up
        for _ in range(args.repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    lstm = statistics.median(times["torch.nn.LSTM(256, 256)"])
    lines = [
        f"Forward over x [{args.batch}, {args.length}, {width}] (float32 unless a row says "
        f"bfloat16, no grad), "
        f"{args.threads} CPU threads, median of {args.repeats} alternating runs:",
        "",
        "| model | median (ms) | min - max (ms) | speed-up vs LSTM |",
        "| --- | --- | --- | --- |",
    ]
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(
            f"| {name} | {med * 1e3:.0f} | {min(ts) * 1e3:.0f} - {max(ts) * 1e3:.0f} | "
            f"{lstm / med:.2f}x |"
        )
    return "\n".join(lines)


# --- ppo -------------------------------------------------------------------------------------


def _ppo_task(arch: str, overrides: dict):
    from mixerzoo.rl import PPOTask

    config = yaml.safe_load((CONFIGS / f"ppo_{arch}_repeat_previous.yaml").read_text())
    init = dict(config["model"]["init_args"])
    optimizer = _optimizer(init.pop("optimizer"))
    init.update(overrides)
    return PPOTask(**init, optimizer=optimizer), config


def bench_ppo(args) -> str:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    overrides = json.loads(args.set) if args.set else {}
    for arch in args.archs:
        pl.seed_everything(args.seed)
        task, config = _ppo_task(arch, overrides)
        trainer = _trainer(max_time={"minutes": args.minutes}, max_epochs=100_000)
        start = time.perf_counter()
        trainer.fit(task)
        wall = time.perf_counter() - start
        history = task.history
        curves[arch] = history
        last = [
            h["episode_return"] for h in history[-args.last :] if np.isfinite(h["episode_return"])
        ]
        evaluation = task.evaluate(num_episodes=args.eval_episodes, seed=10_000)
        rows.append(
            {
                "agent": arch,
                "backbone": task.agent.backbone.mixer_name,
                "parameters": sum(p.numel() for p in task.parameters()),
                "updates": len(history),
                "env_steps": int(task.env_steps),
                "wall_s": wall,
                "train_return": float(np.mean(last)) if last else float("nan"),
                "eval_return": evaluation["return_mean"],
                "eval_std": evaluation["return_std"],
            }
        )
        (out / f"ppo_{arch}_history.json").write_text(json.dumps(history))
        print(json.dumps(rows[-1]), flush=True)
    _plot_ppo(curves, out / "ppo_repeat_previous.png")
    lines = [
        f"PPO on popgym RepeatPreviousEasy, {args.minutes:g} min of wall time per agent, "
        f"{args.threads} CPU threads, seed {args.seed}; train return: mean over the last "
        f"{args.last} updates; eval: {args.eval_episodes} fresh episodes (sampled actions).",
        "",
        "| agent | parameters | updates | env steps | train return | eval return (std) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['agent']} ({r['backbone']}) | {r['parameters']:,} | {r['updates']} | "
            f"{r['env_steps']:,} | {r['train_return']:.3f} | {r['eval_return']:.3f} "
            f"({r['eval_std']:.3f}) |"
        )
    return "\n".join(lines)


def _plot_ppo(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for arch, history in curves.items():
        steps = [h["env_steps"] for h in history]
        secs = [h["seconds"] / 60 for h in history]
        ret = [h["episode_return"] for h in history]
        axes[0].plot(steps, ret, label=arch)
        axes[1].plot(secs, ret, label=arch)
    axes[0].set_xlabel("environment steps")
    axes[1].set_xlabel("wall time (min)")
    for ax in axes:
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- s4wm ------------------------------------------------------------------------------------


def _wm_parts(mixer: str, data_overrides: dict, model_overrides: dict):
    from mixerzoo.rl import S4WM, WorldModelDataModule, WorldModelTask

    config = yaml.safe_load((CONFIGS / "s4wm_four_rooms.yaml").read_text())
    task_args = dict(config["model"]["init_args"])
    model_args = dict(task_args.pop("model")["init_args"])
    if mixer != model_args["mixer"]:
        model_args.pop("mixer_kwargs", None)
    model_args["mixer"] = mixer
    model_args.update(model_overrides)
    optimizer = _optimizer(task_args.pop("optimizer"))
    data_args = {**config["data"]["init_args"], **data_overrides}
    data = WorldModelDataModule(**data_args)
    model = S4WM(**model_args)
    task = WorldModelTask(model, optimizer=optimizer, **task_args)
    return task, data, config


def _step_seconds(task, batch, repeats: int) -> float:
    optimizer = task.optimizer_factory(task.parameters())
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        loss, _ = task.model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_s4wm(args) -> str:
    from mixerzoo.rl.world_model import imagination_mse, mse_table, plot_mse, save_strip

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_overrides = json.loads(args.set_data) if args.set_data else {}
    model_overrides = json.loads(args.set_model) if args.set_model else {}
    curves, extra, strips = {}, {}, {}
    true_strip = None
    for mixer in args.backbones:
        pl.seed_everything(args.seed)
        task, data, _ = _wm_parts(mixer, data_overrides, model_overrides)
        data.prepare_data()
        data.setup()
        # Time of one training step (forward, backward, Adam) at each sequence length, on a
        # separate copy of the model so that training below starts from the same weights.
        step_times = {}
        probe, _, _ = _wm_parts(mixer, data_overrides, model_overrides)
        for length in args.lengths:
            batch = next(iter(torch.utils.data.DataLoader(data.train_set, data.batch_size)))
            batch = {k: v[:, :length] for k, v in batch.items()}
            step_times[length] = _step_seconds(probe, batch, args.time_repeats)
        del probe
        trainer = _trainer(max_steps=args.steps, max_epochs=100_000, limit_val_batches=0,
                           gradient_clip_val=100.0)  # fmt: skip
        start = time.perf_counter()
        trainer.fit(task, data)
        wall = time.perf_counter() - start
        context = args.context or task.eval_context
        mses, imagined = [], None
        torch.manual_seed(args.seed)
        for batch in data.test_dataloader():
            result = imagination_mse(task.model, batch, context)
            mses.append(result["mse"])
            if imagined is None:
                imagined, true_strip = result["imagined"][0], result["true"][0]
        curve = torch.cat(mses).mean(0).numpy()
        curves[mixer] = curve
        strips[mixer] = imagined
        n_params = sum(p.numel() for p in task.model.parameters())
        extra[mixer] = {
            "parameters": f"{n_params:,}",
            "train time (s)": f"{wall:.0f}",
            **{f"s/step @ T={n}": f"{t:.2f}" for n, t in step_times.items()},
        }
        np.save(out / f"s4wm_{mixer}_mse.npy", curve)
        print(mixer, {h: float(curve[h - 1]) for h in args.horizons if h <= len(curve)},
              extra[mixer], flush=True)  # fmt: skip
    plot_mse(curves, out / "s4wm_four_rooms_mse.png", "FourRooms: imagination after 100 frames")
    save_strip(true_strip, strips, out / "s4wm_four_rooms_strip.png", every=10)
    header = (
        f"S4WM on FourRooms, {args.steps} training steps per backbone (batch "
        f"{data.batch_size} x {data.seq_len} frames), {args.threads} CPU threads, seed "
        f"{args.seed}; generation MSE of frames imagined after a {context}-frame context, "
        f"averaged over {len(data.test_set)} test episodes."
    )
    return header + "\n\n" + mse_table(curves, args.horizons, extra)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/benchmarks_rl")
    sub = parser.add_subparsers(dest="what", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--length", type=int, default=16384)
    sp.add_argument("--batch", type=int, default=2)
    sp.add_argument("--repeats", type=int, default=5)
    pp = sub.add_parser("ppo")
    pp.add_argument("--minutes", type=float, default=30.0)
    pp.add_argument("--archs", nargs="+", default=["s5", "gru", "mlp"])
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--last", type=int, default=10)
    pp.add_argument("--eval-episodes", type=int, default=64)
    pp.add_argument("--set", default="", help="JSON of PPOTask arguments to override")
    wp = sub.add_parser("s4wm")
    wp.add_argument("--steps", type=int, default=1500)
    wp.add_argument("--backbones", nargs="+", default=["s4d", "gru", "attention"])
    wp.add_argument("--horizons", type=int, nargs="+", default=[50, 100, 200])
    wp.add_argument("--lengths", type=int, nargs="+", default=[150, 300])
    wp.add_argument("--time-repeats", type=int, default=3)
    wp.add_argument("--seed", type=int, default=0)
    wp.add_argument("--set-data", default="", help="JSON of WorldModelDataModule overrides")
    wp.add_argument("--set-model", default="", help="JSON of S4WM overrides")
    wp.add_argument("--context", type=int, default=None, help="default: the config's")
    args = parser.parse_args(argv)
    table = {"speed": bench_speed, "ppo": bench_ppo, "s4wm": bench_s4wm}[args.what](args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.what}.md").write_text(table + "\n")
    print("\n" + table)
    print(
        f"\n(command: python benchmarks/rl.py {' '.join(sys.argv[1:] if argv is None else argv)})"
    )


if __name__ == "__main__":
    main()
