"""The ``mixerzoo`` command: LightningCLI over every registered task and data module.

Usage::

    mixerzoo fit --config configs/timeseries/itransformer_etth1.yaml
    mixerzoo test --config <same> --ckpt_path runs/<name>/version_0/checkpoints/best.ckpt
    mixerzoo predict --config <same> --ckpt_path <ckpt>

Models and data modules are chosen in subclass mode, by full class path
(``mixerzoo.timeseries.ForecastTask``) or by class name alone (``ForecastTask``). After ``fit``,
when the data module has a test split, the best checkpoint is evaluated on it and the test metrics
are printed (the Time-Series-Library "train then test" protocol).
"""

from __future__ import annotations

import importlib

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from mixerzoo.core.registry import get_model_class, list_models

__all__ = ["MixerzooCLI", "main"]

# The CLI is the one place that loads the domain packages (by name, so that ``core`` keeps no
# import-time dependency on them); importing them registers their models, tasks and data modules.
DOMAINS = ("timeseries", "vision", "medical", "audio", "rl")


def load_domains() -> None:
    for domain in DOMAINS:
        importlib.import_module(f"mixerzoo.{domain}")


def known_models_hint() -> str:
    """One line per domain: registered model names and the class to put in ``class_path``."""
    lines = []
    for domain in DOMAINS:
        names = list_models(domain)
        if names:
            entries = []
            for name in names:
                cls = get_model_class(name)
                entries.append(f"{name} ({cls.__module__}.{cls.__qualname__})")
            lines.append(f"  {domain}: " + ", ".join(entries))
    return (
        "Registered models (use the class path, or the class name, in class_path):\n"
        + "\n".join(lines)
    )


class MixerzooCLI(LightningCLI):
    """LightningCLI in subclass mode with mixerzoo's defaults (seed 2021, test after fit)."""

    def __init__(self, *args, **kwargs):
        load_domains()
        kwargs.setdefault("seed_everything_default", 2021)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        super().__init__(pl.LightningModule, pl.LightningDataModule, *args, **kwargs)

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        plain_error = parser.error

        # A class path that does not resolve: add the registered models to the message.
        def error(message: str, ex: Exception | None = None):
            if "import path" in message:
                message = f"{message}\n{known_models_hint()}"
            plain_error(message, ex)

        parser.error = error
        return parser

    def after_fit(self) -> None:
        trainer, datamodule = self.trainer, self.datamodule
        if (
            datamodule is None
            or not _overrides(datamodule, "test_dataloader")
            or trainer.interrupted
        ):
            return
        callback = trainer.checkpoint_callback
        ckpt = "best" if callback is not None and getattr(callback, "best_model_path", "") else None
        results = trainer.test(self.model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        if trainer.is_global_zero and results:
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(results[0].items()))
            source = f"checkpoint {callback.best_model_path}" if ckpt else "final weights"
            print(f"\nTest results ({source}): {metrics}", flush=True)


def _overrides(obj: object, method: str) -> bool:
    return getattr(type(obj), method, None) is not getattr(pl.LightningDataModule, method, None)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``mixerzoo`` console script."""
    MixerzooCLI(args=args)


if __name__ == "__main__":
    main()
