"""Arguments that shrink every ``configs/rl`` YAML to a few seconds on tiny data the run makes
itself (a handful of short episodes in ``tmp_path``), keeping the config's task, environment and
backbone. Used by ``tests/rl/test_configs.py`` (and usable by the repository-wide config test)."""

from __future__ import annotations

from pathlib import Path


def overrides(config: dict, tmp_path: Path) -> list[str]:
    """CLI arguments for ``mixerzoo fit --config <config>`` at a tiny size."""
    model = config["model"]["init_args"]
    if config["model"]["class_path"].endswith("PPOTask"):
        args = [
            "--model.init_args.num_envs", "4",
            "--model.init_args.num_steps", "16",
            "--model.init_args.update_epochs", "1",
            "--model.init_args.num_minibatches", "2",
            "--model.init_args.d_model", "16",
            "--model.init_args.encoder_hidden", "8",
            "--model.init_args.head_hidden", "8",
            "--data.init_args.eval_episodes", "2",
        ]  # fmt: skip
        if model.get("mixer") == "s5":
            args += ["--model.init_args.mixer_kwargs", '{"d_state": 8, "activation": "full_glu"}']
        if model.get("env") == "MetaCartPole":
            args += ["--model.init_args.env_kwargs", '{"n_trials": 2, "trial_steps": 10}']
        return args
    wm = model["model"]["init_args"]
    data = config["data"]["init_args"]
    env_kwargs = dict(data.get("env_kwargs") or {})
    env_kwargs.update(max_steps=24, context_steps=12)
    args = [
        "--model.init_args.model.init_args.d_model", "16",
        "--model.init_args.model.init_args.n_layers", "1",
        "--model.init_args.model.init_args.n_latents", "4",
        "--model.init_args.model.init_args.n_classes", "4",
        "--model.init_args.model.init_args.hidden", "16",
        "--model.init_args.model.init_args.cnn_depth", "4",
        "--model.init_args.eval_context", "12",
        "--data.init_args.root", str(tmp_path / "replay"),
        "--data.init_args.env_kwargs", repr(env_kwargs).replace("'", '"'),
        "--data.init_args.train_episodes", "2",
        "--data.init_args.val_episodes", "1",
        "--data.init_args.test_episodes", "1",
        "--data.init_args.seq_len", "24",
        "--data.init_args.val_seq_len", "24",
        "--data.init_args.batch_size", "2",
        "--data.init_args.windows_per_epoch", "2",
    ]  # fmt: skip
    if wm.get("mixer") == "s4d":
        args += ["--model.init_args.model.init_args.mixer_kwargs", '{"d_state": 8}']
    if wm.get("mixer") == "attention":
        args += ["--model.init_args.model.init_args.mixer_kwargs", '{"n_heads": 2}']
    return args
