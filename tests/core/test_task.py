"""core.task: the base task's optimiser and scheduler, weight-decay flags, plain hyper-parameters,
epoch hook and parameter counts, and the base prediction writer."""

import functools

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mixerzoo.core.task import BaseTask, PredictionWriter, concatenate_predictions


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.scale = nn.Parameter(torch.ones(1))
        self.frozen = nn.Parameter(torch.ones(5), requires_grad=False)
        self.epochs: list[int] = []

    def forward(self, x):
        return self.linear(x) * self.scale

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


class Regression(BaseTask):
    """A minimal domain task: MSE regression, with a plain and a non-plain extra argument."""

    def __init__(self, model, optimizer=torch.optim.Adam, lr_scheduler=None, *, alpha=0.5,
                 loss=None, lr_scheduler_interval="epoch"):  # fmt: skip
        super().__init__(model, optimizer, lr_scheduler, lr_scheduler_interval)
        self.alpha = alpha
        self.loss = loss or nn.MSELoss()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss(self.model(x), y)

    def predict_step(self, batch, batch_idx):
        x, _ = batch
        return {"pred": self.model(x), "x": x, "names": [f"item{i}" for i in range(len(x))]}


def _loader(n: int = 10, batch_size: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)


def _trainer(tmp_path, **kw) -> pl.Trainer:
    kw = {"max_epochs": 1, "logger": False, "enable_checkpointing": False, **kw}
    return pl.Trainer(
        accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, **kw,
    )  # fmt: skip


def test_checkpoints_hold_plain_hyper_parameters_and_load_weights_only(tmp_path):
    task = Regression(Net(), alpha=0.25, loss=nn.L1Loss())
    assert dict(task.hparams) == {
        "alpha": 0.25, "lr_scheduler_interval": "epoch", "lr_scheduler_monitor": "val_loss",
    }  # fmt: skip
    trainer = _trainer(tmp_path)
    trainer.fit(task, _loader())
    trainer.save_checkpoint(tmp_path / "task.ckpt")
    checkpoint = torch.load(tmp_path / "task.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["alpha"] == 0.25
    assert {"python", "numpy", "torch"} <= set(checkpoint["rng_state"])


def test_flagged_parameters_are_not_decayed_when_the_optimiser_decays():
    """AdamW with zero gradients only decays: the flagged parameter keeps its value."""
    net = Net()
    net.scale._no_weight_decay = True
    task = Regression(net, functools.partial(torch.optim.AdamW, lr=0.1, weight_decay=0.5))
    optimizer = task.configure_optimizers()
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.5, 0.0]
    for p in task.parameters():
        p.grad = torch.zeros_like(p)
    weight = net.linear.weight.detach().clone()
    optimizer.step()
    assert torch.equal(net.scale.detach(), torch.ones(1))
    torch.testing.assert_close(net.linear.weight.detach(), weight * (1 - 0.1 * 0.5))
    # Without weight decay the optimiser gets the parameters as they are: one group.
    plain = Regression(net, functools.partial(torch.optim.Adam, lr=0.1)).configure_optimizers()
    assert len(plain.param_groups) == 1


@pytest.mark.parametrize("interval, steps", [("epoch", 2), ("step", 6)])
def test_the_scheduler_steps_per_epoch_or_per_step(interval, steps, tmp_path):
    task = Regression(
        Net(),
        functools.partial(torch.optim.SGD, lr=1.0),
        functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
        lr_scheduler_interval=interval,
    )
    trainer = _trainer(tmp_path, max_epochs=2)
    trainer.fit(task, _loader(n=12))  # 3 batches per epoch
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.5**steps


def test_plateau_scheduler_watches_the_monitored_metric():
    task = Regression(Net(), lr_scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau)
    config = task.configure_optimizers()
    assert config["lr_scheduler"]["monitor"] == "val_loss"
    with pytest.raises(ValueError, match="lr_scheduler_interval must be 'epoch' or 'step'"):
        Regression(Net(), lr_scheduler_interval="batch")


def test_the_model_hears_each_epoch_and_the_parameter_counts_are_logged(tmp_path, capsys):
    net = Net()
    task = Regression(net)
    trainer = _trainer(tmp_path, max_epochs=3, logger=pl.loggers.CSVLogger(tmp_path))
    trainer.fit(task, _loader())
    assert net.epochs == [0, 1, 2]
    assert (task.n_parameters, task.n_trainable_parameters) == (3 + 1 + 1 + 5, 3 + 1 + 1)
    hparams = yaml.safe_load(
        (tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").read_text()
    )
    assert hparams["n_parameters"] == 10 and hparams["n_trainable_parameters"] == 5


def test_concatenate_predictions_joins_tensors_arrays_and_lists():
    outputs = [
        {"a": torch.ones(2, 3, dtype=torch.bfloat16), "b": np.zeros((2,)), "c": ["x", "y"]},
        {"a": torch.zeros(1, 3, dtype=torch.bfloat16), "b": np.ones((1,)), "c": ["z"]},
    ]
    arrays = concatenate_predictions(outputs)
    assert arrays["a"].dtype == np.float32 and arrays["a"].shape == (3, 3)
    np.testing.assert_array_equal(arrays["a"][:, 0], [1, 1, 0])
    np.testing.assert_array_equal(arrays["b"], [0, 0, 1])
    assert arrays["c"].tolist() == ["x", "y", "z"]


def test_the_writer_hands_the_whole_epoch_to_write_in_the_run_folder(tmp_path):
    class Recording(PredictionWriter):
        def write(self, arrays, out_dir, trainer, pl_module):
            self.seen = (arrays, out_dir)
            return super().write(arrays, out_dir, trainer, pl_module) + [out_dir / "extra"]

    writer = Recording()
    logger = pl.loggers.CSVLogger(tmp_path, name="run")
    trainer = _trainer(tmp_path, logger=logger, callbacks=[writer])
    task = Regression(Net())
    trainer.predict(task, _loader(n=10, batch_size=4), return_predictions=False)
    arrays, out_dir = writer.seen
    assert out_dir == tmp_path / "run" / "version_0"
    assert arrays["pred"].shape == (10, 1) and arrays["names"].shape == (10,)
    with torch.no_grad():
        expected = task.model(torch.cat([b[0] for b in _loader(n=10, batch_size=4)]))
    np.testing.assert_allclose(arrays["pred"], expected.numpy(), rtol=1e-6)
    saved = np.load(out_dir / "predictions.npz")
    np.testing.assert_array_equal(saved["x"], arrays["x"])
