"""ForecastTask: the training objective is MSE on the horizon unless the model defines its own
``training_loss`` hook; validation stays MSE on the horizon either way."""

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from mixerzoo.timeseries import ForecastDataModule, ForecastTask

L, LABEL, H, C = 16, 4, 6, 3

# training_step is called directly in most tests: Lightning warns that self.log has no trainer.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`:UserWarning")


class Linear(nn.Module):
    """A per-variable linear map of the lookback onto the horizon, without an objective."""

    def __init__(self, seq_len: int = L, pred_len: int = H):
        super().__init__()
        self.seq_len, self.pred_len = seq_len, pred_len
        self.proj = nn.Linear(seq_len, pred_len)

    def forward(self, x, x_mark=None, x_dec=None, x_mark_dec=None):
        return self.proj(x.transpose(1, 2)).transpose(1, 2)


class WithObjective(Linear):
    """``Linear`` whose own objective is a known value (3.25) plus a term with a gradient."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def training_loss(self, x, y, x_mark=None, x_dec=None, x_mark_dec=None):
        self.calls.append((x, y, x_mark, x_dec, x_mark_dec))
        pred = self(x)
        return 3.25 + 0.0 * pred.sum(), pred


def _batch(b: int = 2, n_vars: int = C) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(b, L, n_vars, generator=g),
        "y": torch.randn(b, LABEL + H, n_vars, generator=g),
        "x_mark": torch.randn(b, L, 4, generator=g),
        "y_mark": torch.randn(b, LABEL + H, 4, generator=g),
    }


def test_a_model_without_a_hook_trains_on_the_horizon_mse():
    torch.manual_seed(0)
    task = ForecastTask(Linear(), score_target_only=False)
    batch = _batch()
    loss = task.training_step(batch, 0)
    expected = ((task.model(batch["x"]) - batch["y"][:, LABEL:]) ** 2).mean()
    torch.testing.assert_close(loss, expected)


def test_the_models_training_loss_replaces_the_mse_with_the_common_inputs():
    torch.manual_seed(0)
    task = ForecastTask(WithObjective(), score_target_only=False)
    batch = _batch()
    loss = task.training_step(batch, 0)
    assert loss.item() == 3.25
    (x, y, x_mark, x_dec, x_mark_dec) = task.model.calls[0]
    assert x is batch["x"] and x_mark is batch["x_mark"] and x_mark_dec is batch["y_mark"]
    torch.testing.assert_close(y, batch["y"][:, LABEL:])  # the horizon truth only
    # Decoder input as for forward: the start token, then zeros over the horizon.
    torch.testing.assert_close(x_dec[:, :LABEL], batch["y"][:, :LABEL])
    assert not x_dec[:, LABEL:].any()


def test_target_only_scoring_of_several_variables_keeps_the_target_mse_and_warns():
    torch.manual_seed(0)
    task = ForecastTask(WithObjective(), score_target_only=True)
    batch = _batch()
    with pytest.warns(UserWarning, match="training with MSE on the target"):
        loss = task.training_step(batch, 0)
    pred = task.model(batch["x"])
    torch.testing.assert_close(loss, F.mse_loss(pred[..., -1:], batch["y"][:, LABEL:, -1:]))
    assert not task.model.calls
    # One variable (features S): the hook applies.
    assert task.training_step(_batch(n_vars=1), 0).item() == 3.25


def test_a_wrong_forecast_shape_from_the_hook_is_a_clear_error():
    class Short(WithObjective):
        def training_loss(self, x, y, *args):
            return y.sum(), y[:, 1:]

    with pytest.raises(ValueError, match="does not match the target"):
        ForecastTask(Short(), score_target_only=False).training_step(_batch(), 0)


def test_fit_logs_the_hooks_loss_and_validates_with_the_mse(small_csv):
    pl.seed_everything(0)
    dm = ForecastDataModule(str(small_csv), seq_len=L, label_len=LABEL, pred_len=H, batch_size=8)
    task = ForecastTask(WithObjective())
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=dm)
    metrics = trainer.callback_metrics
    assert metrics["train_loss"].item() == 3.25
    assert len(task.model.calls) == 2
    # Validation: MSE of the horizon forecast over the first two validation batches.
    task.eval()
    with torch.no_grad():
        sq, count = 0.0, 0
        for i, batch in enumerate(dm.val_dataloader()):
            if i == 2:
                break
            err = task.model(batch["x"]) - batch["y"][:, -H:]
            sq, count = sq + (err**2).sum(), count + err.numel()
    torch.testing.assert_close(metrics["val_loss"], sq / count)


def test_a_resumed_fit_continues_exactly_as_the_uninterrupted_one(small_csv, tmp_path):
    """Shuffling and dropout draw the same numbers after a resume: equal weights at the end."""
    from mixerzoo.timeseries.models.itransformer import ITransformer

    def fit(max_epochs, run_dir, ckpt_path=None):
        pl.seed_everything(0)
        dm = ForecastDataModule(
            str(small_csv), seq_len=48, label_len=12, pred_len=12, batch_size=16
        )
        model = ITransformer(
            seq_len=48, pred_len=12, d_model=16, d_ff=16, n_heads=2, e_layers=1, dropout=0.3
        )
        task = ForecastTask(model)
        trainer = pl.Trainer(
            max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=run_dir,
            callbacks=[pl.callbacks.ModelCheckpoint(dirpath=run_dir, save_last=True)],
        )  # fmt: skip
        # The checkpoint loads with torch.load(weights_only=True), Lightning's default.
        trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
        return torch.cat([p.detach().flatten() for p in task.parameters()])

    straight = fit(3, tmp_path / "straight")
    interrupted = fit(2, tmp_path / "resumed")
    resumed = fit(3, tmp_path / "resumed", ckpt_path=str(tmp_path / "resumed" / "last.ckpt"))
    assert not torch.equal(interrupted, straight)
    assert torch.equal(resumed, straight)
