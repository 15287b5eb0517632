"""S4WM: the KL with balancing and free bits, parallel vs recurrent agreement, imagination, the
data pipeline (collection, replay folder, window alignment) and a short learning check."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.distributions import Categorical, kl_divergence

from mixerzoo.core.testing import assert_close
from mixerzoo.rl.world_model import (
    S4WM,
    EpisodeReplay,
    ReplayMismatchError,
    SequenceDataset,
    WorldModelDataModule,
    WorldModelTask,
    collect_episodes,
    imagination_mse,
    kl_balanced,
    mse_table,
    save_strip,
)

BACKBONES = {"s4d": {"d_state": 8}, "s5": {"d_state": 8}, "gru": {}, "attention": {"n_heads": 2}}


def _model(mixer: str, **kw) -> S4WM:
    torch.manual_seed(0)
    return S4WM(
        image_shape=(3, 12, 12),
        n_actions=3,
        mixer=mixer,
        mixer_kwargs=BACKBONES[mixer],
        d_model=16,
        n_layers=2,
        n_latents=4,
        n_classes=5,
        hidden=16,
        cnn_depth=4,
        **kw,
    ).double()


def _batch(b=2, t=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    action = torch.nn.functional.one_hot(torch.randint(3, (b, t), generator=g), 3).double()
    action[:, 0] = 0
    return {
        "obs": torch.rand(b, t, 3, 12, 12, generator=g, dtype=torch.float64),
        "action": action,
        "reward": torch.randn(b, t, generator=g, dtype=torch.float64),
    }


def test_kl_balanced_against_torch_distributions():
    torch.manual_seed(0)
    post = torch.randn(3, 5, 4, 6).log_softmax(-1)
    prior = torch.randn(3, 5, 4, 6).log_softmax(-1)
    kl = kl_divergence(Categorical(logits=post), Categorical(logits=prior)).sum(-1)
    loss, plain = kl_balanced(post, prior, balance=0.7, free_nats=0.0)
    assert plain.item() == pytest.approx(kl.mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx(kl.mean().item(), rel=1e-5)  # same value, both branches
    clipped, _ = kl_balanced(post, prior, balance=0.7, free_nats=100.0)
    assert clipped.item() == pytest.approx(100.0)  # free bits: below 100 nats costs nothing
    # Balancing: the prior's gradient carries alpha, the posterior's 1 - alpha.
    post.requires_grad_(True)
    prior.requires_grad_(True)
    loss, _ = kl_balanced(post, prior, balance=0.7, free_nats=0.0)
    loss.backward()
    p_ref, q_ref = post.detach().clone().requires_grad_(), prior.detach().clone().requires_grad_()
    kl_divergence(Categorical(logits=p_ref), Categorical(logits=q_ref)).sum(-1).mean().backward()
    assert_close(prior.grad, 0.7 * q_ref.grad)
    assert_close(post.grad, 0.3 * p_ref.grad)


@pytest.mark.parametrize("mixer", sorted(BACKBONES))
def test_parallel_and_recurrent_modes_agree(mixer):
    """Teacher-forced on the same latents, the parallel forward (training) and the step-by-step
    recurrence (imagination) give the same backbone states, priors, frames and rewards."""
    model = _model(mixer).eval()
    batch = _batch()
    with torch.no_grad():
        out = model(batch["obs"], batch["action"], sample=False)
        z = out["z"]
        state, z_prev = None, torch.zeros_like(z[:, 0])
        for t in range(z.shape[1]):
            g = model.backbone_inputs(z_prev, batch["action"][:, t], offset=t)
            h, state = model.backbone.step(g, state)
            h = model.out_norm(h)
            assert_close(h, out["h"][:, t], msg=f"{mixer} h[{t}]")
            assert_close(model.prior_logits(h), out["prior"][:, t], msg=f"{mixer} prior[{t}]")
            assert_close(model.decode(h, z[:, t]), out["recon"][:, t], msg=f"{mixer} frame[{t}]")
            assert_close(model.predict_reward(h, z[:, t]), out["reward"][:, t])
            z_prev = z[:, t]


def test_imagination_continues_the_parallel_context():
    """The first imagined step equals the prior the parallel forward gives at that step; a
    mode-imagination is deterministic; hundreds of steps run in recurrent mode."""
    model = _model("s4d").eval()
    batch = _batch(t=12)
    with torch.no_grad():
        out = model(batch["obs"], batch["action"], sample=False)
        im = model.imagine(
            batch["obs"][:, :8], batch["action"][:, :8], batch["action"][:, 8:], sample=False
        )
    # Step 9 of the parallel pass saw z_8 from the posterior; imagination's first step too.
    z_first = model.sample(out["prior"][:, 8], mode=True)
    assert_close(im["z"][:, 0], z_first)
    assert_close(im["frames"][:, 0], model.decode(out["h"][:, 8], z_first))
    model = model.float()
    long_actions = torch.nn.functional.one_hot(torch.randint(3, (1, 300)), 3).float()
    with torch.no_grad():
        long = model.imagine(
            batch["obs"][:1, :4].float(), batch["action"][:1, :4].float(), long_actions
        )
    assert long["frames"].shape == (1, 300, 3, 12, 12) and torch.isfinite(long["frames"]).all()


def test_imagination_mse_and_outputs(tmp_path):
    model = _model("gru")
    batch = _batch(t=10)
    result = imagination_mse(model, batch, context=4)
    assert result["mse"].shape == (2, 6)
    expected = (result["imagined"].clamp(0, 1) - batch["obs"][:, 4:]).square().mean((2, 3, 4))
    assert_close(result["mse"], expected)
    with pytest.raises(ValueError, match="context \\+ horizon <= 10"):
        imagination_mse(model, batch, context=4, horizon=7)
    table = mse_table({"s4d": np.array([0.1, 0.2, 0.3])}, [1, 3, 5])
    assert "| s4d | 0.1000 | 0.3000 | n/a |" in table
    path = save_strip(
        result["true"][0], {"gru": result["imagined"][0]}, tmp_path / "s.png", every=2, scale=1
    )
    import matplotlib.pyplot as plt

    image = plt.imread(path)
    assert image.shape[:2] == (2 * 14, 3 * 14)  # two rows of 3 frames of 12 px + 1 px borders


def test_bad_inputs():
    model = _model("s4d")
    batch = _batch()
    with pytest.raises(ValueError, match="obs must have shape"):
        model(batch["obs"][:, :, :, :8], batch["action"])
    with pytest.raises(ValueError, match="one-hot previous action"):
        model(batch["obs"], batch["action"][..., :2])
    with pytest.raises(ValueError, match="divisible by 4"):
        S4WM(image_shape=(3, 10, 10))
    with pytest.raises(TypeError, match="reset must be a torch.bool tensor"):
        model(batch["obs"], batch["action"], reset=torch.zeros(2, 9))


def test_collection_replay_and_alignment(tmp_path):
    kwargs = {"max_steps": 15, "context_steps": 5}
    replay = collect_episodes(
        "TwoRooms", 3, tmp_path / "r", policy="scripted", seed=4, env_kwargs=kwargs
    )
    assert len(replay) == 3
    episode = replay.load(1)
    assert episode["obs"].shape == (16, 28, 28, 3) and episode["action"].shape == (15,)
    # Collecting again reuses the files; another request on the same folder is refused.
    again = collect_episodes(
        "TwoRooms", 3, tmp_path / "r", policy="scripted", seed=4, env_kwargs=kwargs
    )
    np.testing.assert_array_equal(again.load(1)["obs"], episode["obs"])
    with pytest.raises(ReplayMismatchError, match="holds other episodes"):
        EpisodeReplay(
            tmp_path / "r", {"env": "TwoRooms", "env_kwargs": kwargs, "policy": "random", "seed": 4}
        )
    data = SequenceDataset([replay.load(i) for i in range(3)], seq_len=6, n_actions=4, windows=None)
    item = data.window(1, 3)
    np.testing.assert_allclose(item["obs"].permute(0, 2, 3, 1).numpy() * 255, episode["obs"][3:9])
    assert item["action"].argmax(-1).tolist() == episode["action"][2:8].tolist()
    np.testing.assert_array_equal(item["reward"].numpy(), episode["reward"][2:8])
    first = data.window(1, 0)
    assert first["action"][0].sum() == 0 and first["start"][0] and not item["start"].any()
    with pytest.raises(ValueError, match="seq_len 20 must be in \\[1, 16\\]"):
        SequenceDataset([episode], seq_len=20, n_actions=4)


@pytest.mark.slow
def test_world_model_learns_the_rooms(tmp_path):
    """A few hundred steps on TwoRooms make imagination clearly better than at initialisation:
    after a 12-frame context, the imagined frames' MSE falls below half its initial value."""
    pl.seed_everything(0)
    dm = WorldModelDataModule(
        env="TwoRooms",
        env_kwargs={"max_steps": 24, "context_steps": 12, "room_size": 3},
        root=str(tmp_path),
        train_episodes=16,
        val_episodes=4,
        test_episodes=4,
        seq_len=24,
        batch_size=8,
        windows_per_epoch=64,
    )
    model = S4WM(
        image_shape=(3, 28, 28), n_actions=4, mixer="s4d", mixer_kwargs={"d_state": 16},
        d_model=32, n_layers=1, n_latents=8, n_classes=8, hidden=64, cnn_depth=8,
    )  # fmt: skip
    task = WorldModelTask(model, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3), eval_context=12)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    before = imagination_mse(model, batch, 12)["mse"].mean().item()
    trainer = pl.Trainer(
        max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(task, dm)
    after = imagination_mse(model, batch, 12)["mse"].mean().item()
    assert after < 0.5 * before, (before, after)


def test_predict_writes_table_plot_and_strip(tmp_path):
    from mixerzoo.rl.world_model import ImaginationWriter

    dm = WorldModelDataModule(
        env="TwoRooms",
        env_kwargs={"max_steps": 16, "context_steps": 8},
        root=str(tmp_path / "data"),
        train_episodes=2,
        val_episodes=1,
        test_episodes=3,
        seq_len=16,
        batch_size=2,
    )
    model = S4WM(
        n_actions=4, mixer="gru", d_model=8, n_layers=1, n_latents=2, hidden=8, cnn_depth=4
    )
    task = WorldModelTask(model, eval_context=8)
    writer = ImaginationWriter(output_dir=str(tmp_path / "out"), horizons=[1, 8], every=4)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False
    )
    trainer.predict(task, dm)
    out = tmp_path / "out"
    arrays = np.load(out / "predictions.npz")
    assert arrays["mse"].shape == (3, 8) and arrays["imagined"].shape == (3, 8, 3, 28, 28)
    table = (out / "imagination_mse.md").read_text()
    assert f"| gru | {arrays['mse'].mean(0)[0]:.4f} | {arrays['mse'].mean(0)[7]:.4f} |" in table
    assert (out / "imagination_mse.png").stat().st_size > 0
    assert (out / "imagination_strip.png").stat().st_size > 0
