"""How classification runs of the ``mixerzoo`` command are set up: the trainer defaults.

Every classification config gets, unless its own ``trainer:`` section says otherwise (its
``callbacks:`` list replaces this one): the best checkpoint by validation top-1 (``best.ckpt``,
tested after ``fit`` and used by ``predict``), the last checkpoint for resuming, the
learning-rate monitor, and the :class:`~mixerzoo.vision.task.ClassificationWriter`
(``predictions.csv`` and ``confusion_matrix.png`` after ``predict``). ``mixerzoo fit --config
<cfg> --print_config`` shows the result.
"""

from __future__ import annotations

from typing import Any

__all__ = ["configure_cli", "trainer_defaults"]


def trainer_defaults(writer: bool = True) -> dict[str, Any]:
    """The ``trainer:`` defaults of classification runs, in config form.

    Args:
        writer: add the ``ClassificationWriter``.
    """
    callbacks: list[dict[str, Any]] = [
        {
            "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
            "init_args": {
                "monitor": "val_acc1",
                "mode": "max",
                "filename": "best",
                "save_last": True,
            },
        },
        {
            "class_path": "pytorch_lightning.callbacks.LearningRateMonitor",
            "init_args": {"logging_interval": "epoch"},
        },
    ]
    if writer:
        callbacks.append({"class_path": "mixerzoo.vision.task.ClassificationWriter"})
    return {"callbacks": callbacks}


def configure_cli(parser) -> None:
    """The domain's hook of the ``mixerzoo`` command (see ``mixerzoo.core.plugins``).

    Args:
        parser: the ``LightningArgumentParser`` of the subcommand.
    """
    parser.set_defaults({f"trainer.{key}": value for key, value in trainer_defaults().items()})
