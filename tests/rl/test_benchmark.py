"""benchmarks/rl.py runs each of its measurements end to end at tiny sizes and writes its table."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("rl_bench", REPO / "benchmarks" / "rl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_table(tmp_path):
    _bench().main(["--out", str(tmp_path), "speed", "--length", "64", "--repeats", "1"])
    table = (tmp_path / "speed.md").read_text()
    assert "| torch.nn.LSTM(256, 256) |" in table and "| S5, 4-layer stack (popjaxrl) |" in table
    assert "| torch.nn.LSTM(256, 256), bfloat16 |" in table
    assert "| matrix products alone (the 4-layer stack's 16), bfloat16 |" in table
    # header, rule, 4 models, the scan and the products alone, the bf16 LSTM and the stack's
    # three lower bounds
    assert table.count("\n| ") == 12


def test_ppo_table(tmp_path):
    tiny = {"num_envs": 2, "num_steps": 8, "d_model": 8, "n_layers": 1, "updates_per_epoch": 1}
    tiny.update(encoder_hidden=8, head_hidden=8, num_minibatches=1, update_epochs=1)
    _bench().main(
        ["--out", str(tmp_path), "ppo", "--minutes", "0.05", "--archs", "gru", "mlp",
         "--eval-episodes", "2", "--set", json.dumps(tiny)]
    )  # fmt: skip
    table = (tmp_path / "ppo.md").read_text()
    assert "| gru (gru) |" in table and "| mlp (none) |" in table
    history = json.loads((tmp_path / "ppo_gru_history.json").read_text())
    assert history and history[-1]["env_steps"] == 16 * len(history)
    assert (tmp_path / "ppo_repeat_previous.png").stat().st_size > 0


def test_s4wm_table(tmp_path):
    data = {"root": str(tmp_path / "data"), "env_kwargs": {"max_steps": 16, "context_steps": 8}}
    data.update(train_episodes=2, val_episodes=1, test_episodes=2, seq_len=16, val_seq_len=16)
    data.update(batch_size=2)
    model = {"d_model": 8, "n_layers": 1, "hidden": 8, "cnn_depth": 4, "n_latents": 2}
    _bench().main(
        ["--out", str(tmp_path), "s4wm", "--steps", "1", "--context", "8", "--lengths", "8",
         "16", "--horizons", "4", "8", "--time-repeats", "1", "--backbones", "s4d", "gru",
         "--set-data", json.dumps(data), "--set-model", json.dumps(model)]
    )  # fmt: skip
    table = (tmp_path / "s4wm.md").read_text()
    assert "| backbone | MSE @ 4 | MSE @ 8 |" in table and "s/step @ T=16" in table
    assert "| s4d |" in table and "| gru |" in table
    for name in ("s4wm_four_rooms_mse.png", "s4wm_four_rooms_strip.png"):
        assert (tmp_path / name).stat().st_size > 0
