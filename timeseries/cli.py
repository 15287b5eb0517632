"""How forecasting runs are set up: the trainer defaults and the argument links.

One place for the settings every forecasting recipe shares (Time-Series-Library's loop: at most 10
epochs, early stopping with patience 3 on the validation loss, the best checkpoint tested and used
for predictions), used by both drivers:

- the ``mixerzoo`` command, through :func:`configure_cli` (the domain's CLI hook, see
  ``mixerzoo.core.plugins``): the defaults of the ``trainer:`` section of every forecasting config,
  and the links that make the model's ``seq_len``/``pred_len``/``label_len`` those of the data;
- the :class:`~mixerzoo.timeseries.Forecaster`, which builds its trainer from
  :func:`trainer_defaults` with ``mixerzoo.core.cli.instantiate_trainer``, as the command does.

A config's own ``trainer:`` keys override these defaults (its ``callbacks:`` list replaces the
default list); ``mixerzoo fit --config <cfg> --print_config`` shows the result.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LINKS", "configure_cli", "trainer_defaults"]

# (data argument, model argument): the model's window lengths are the data module's.
_MODEL = "model.init_args.model.init_args."
LINKS = tuple(
    (f"data.init_args.{name}", _MODEL + name) for name in ("seq_len", "pred_len", "label_len")
)


def trainer_defaults(
    patience: int = 3,
    max_epochs: int = 10,
    validation: bool = True,
    checkpoint: dict[str, Any] | None = None,
    writer: bool = True,
) -> dict[str, Any]:
    """The ``trainer:`` settings of the forecasting recipes, in config form.

    Args:
        patience: validation epochs without improvement before early stopping.
        max_epochs: most training epochs.
        validation: keep the best validation checkpoint and stop early; ``False`` leaves both
            out (training without a validation split).
        checkpoint: more ``ModelCheckpoint`` arguments (e.g. ``dirpath``, ``save_last``).
        writer: add the ``ForecastWriter`` (``predictions.npz``, CSV and plot after ``predict``).

    Returns:
        A dict as a YAML ``trainer:`` section holds it (callbacks as ``class_path``/``init_args``).
    """
    callbacks: list[dict[str, Any]] = []
    if validation:
        callbacks += [
            {
                "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                "init_args": {
                    "monitor": "val_loss",
                    "mode": "min",
                    "filename": "best",
                    "save_last": True,
                    **(checkpoint or {}),
                },
            },
            {
                "class_path": "pytorch_lightning.callbacks.EarlyStopping",
                "init_args": {"monitor": "val_loss", "mode": "min", "patience": patience},
            },
        ]
    if writer:
        callbacks.append({"class_path": "mixerzoo.timeseries.ForecastWriter"})
    return {"devices": 1, "max_epochs": max_epochs, "callbacks": callbacks}


def configure_cli(parser) -> None:
    """The domain's hook of the ``mixerzoo`` command: trainer defaults and the window links.

    Args:
        parser: the ``LightningArgumentParser`` of the subcommand.
    """
    parser.set_defaults({f"trainer.{key}": value for key, value in trainer_defaults().items()})
    for source, target in LINKS:
        parser.link_arguments(source, target)
