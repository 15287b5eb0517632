"""The ``mixerzoo`` command: LightningCLI over the tasks and data modules of every domain.

Usage::

    mixerzoo fit --config configs/timeseries/itransformer_etth1.yaml
    mixerzoo test --config <same> --ckpt_path runs/<name>/version_0/checkpoints/best.ckpt
    mixerzoo predict --config <same> --ckpt_path <ckpt>

Models and data modules are chosen in subclass mode, by full class path
(``mixerzoo.timeseries.ForecastTask``) or by class name alone (``ForecastTask``). The command
imports only the domains its config and arguments name (``core.plugins``: a full path names its
domain, a bare class name is looked up in the domains' sources without importing them); with none
named (``mixerzoo fit --help``) it imports every installed domain. A domain may define
``configure_cli(parser)`` to set its trainer defaults and link arguments; a value the user sets
for a linked argument is an error (the link would silently replace it).

Runs go to ``runs/<config name>/version_N/`` (a ``CSVLogger``; the config's ``trainer.logger``
overrides it). After ``fit``, when the data module has a test split, the best checkpoint is
evaluated on it and the test metrics are printed (the Time-Series-Library "train then test"
protocol), whatever the domain.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from mixerzoo.core import plugins
from mixerzoo.core.registry import get_model_class, list_models, unavailable_domains

__all__ = ["MixerzooCLI", "instantiate_trainer", "main"]

_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


# --- what a run names, read before the parser is built -----------------------------------


def _load_config(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None  # the parser reports unreadable configs itself


def _walk(value: Any, base: Path, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf of a config, following nested config files."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, base, f"{prefix}{key}.")
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, base, prefix)
    else:
        yield prefix.rstrip("."), value
        if isinstance(value, str) and value.endswith(_CONFIG_SUFFIXES):
            nested = base / value
            if nested.is_file():
                yield from _walk(_load_config(nested), nested.parent, prefix)


class _RunInputs:
    """The keys and values a run sets: its config files (nested ones too) and its arguments.

    Args:
        args: the command-line arguments (without the program name) or a config dict.
    """

    def __init__(self, args: list[str] | dict | None):
        self.leaves: list[tuple[str, Any]] = []
        self.config_names: list[str] = []
        if isinstance(args, dict):
            self.leaves += list(_walk(args, Path.cwd()))
            return
        tokens = [str(t) for t in args or []]
        i = 0
        while i < len(tokens):
            key, value = "", tokens[i]
            if value.startswith("-"):
                key, eq, value = value.partition("=")
                if not eq:
                    has_value = i + 1 < len(tokens) and not tokens[i + 1].startswith("-")
                    value = tokens[i + 1] if has_value else ""
                    i += has_value
                key = key.lstrip("-").removesuffix("+")
            self._add(key, value)
            i += 1

    def _add(self, key: str, value: str) -> None:
        self.leaves.append((key, value))
        is_config = key in ("config", "c")
        path = Path(value)
        if value.endswith(_CONFIG_SUFFIXES) and path.is_file():
            if is_config:
                self.config_names.append(path.stem)
            prefix = "" if is_config else f"{key}." if key else ""
            self.leaves += list(_walk(_load_config(path), path.parent, prefix))
        elif is_config and ":" in value:  # a config given inline as YAML
            try:
                self.leaves += list(_walk(yaml.safe_load(value), Path.cwd()))
            except yaml.YAMLError:
                pass  # the parser reports it

    def domains(self) -> list[str]:
        """The installed domains the run names (full class paths and bare class names)."""
        found: list[str] = []
        for _, value in self.leaves:
            if isinstance(value, str):
                for domain in plugins.domain_of(value.strip()):
                    if domain not in found:
                        found.append(domain)
        return found

    def set_keys(self) -> set[str]:
        """Dotted keys the run sets, without ``init_args`` (``model.model.seq_len``)."""
        return {_plain_key(key) for key, _ in self.leaves if key}


def _plain_key(key: str) -> str:
    return ".".join(part for part in key.split(".") if part not in ("init_args", "dict_kwargs"))


# --- the parser and the CLI --------------------------------------------------------------


class MixerzooArgumentParser(LightningArgumentParser):
    """LightningArgumentParser that remembers its argument links (to reject linked values)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mixerzoo_links: list[tuple[str, str]] = []

    def link_arguments(self, source, target, compute_fn=None, apply_on="parse"):  # noqa: D102
        sources = (source,) if isinstance(source, str) else tuple(source)
        self.mixerzoo_links += [(s, target) for s in sources]
        return super().link_arguments(source, target, compute_fn, apply_on)


class MixerzooCLI(LightningCLI):
    """LightningCLI in subclass mode with mixerzoo's defaults (seed 2021, runs under ``runs/``,
    test after fit) and the domains as plug-ins (see the module docstring).

    Raises:
        MissingExtraError: a named domain's extra is not installed (the message names it).
        ValueError: the run sets an argument that a domain links to another.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        argv = kwargs.get("args")
        self.inputs = _RunInputs(sys.argv[1:] if argv is None else argv)
        named = self.inputs.domains()
        if named:
            self.domain_modules = {name: plugins.load_domain(name) for name in named}
        else:
            self.domain_modules, _ = plugins.load_domains()
        name = self.inputs.config_names[0] if self.inputs.config_names else "mixerzoo"
        self.run_name = name
        kwargs.setdefault("seed_everything_default", 2021)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("parser_class", MixerzooArgumentParser)
        super().__init__(pl.LightningModule, pl.LightningDataModule, *args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        plain_error = parser.error

        # A class path that does not resolve: add the registered models to the message.
        def error(message: str, ex: Exception | None = None):
            if "import path" in message:
                message = f"{message}\n{known_models_hint()}"
            plain_error(message, ex)

        parser.error = error
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Every domain's runs land in runs/<config name>/version_N (a config may say otherwise).
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": "pytorch_lightning.loggers.CSVLogger",
                    "init_args": {"save_dir": "runs", "name": self.run_name},
                },
                "trainer.default_root_dir": f"runs/{self.run_name}",
            }
        )
        for module in self.domain_modules.values():
            configure = getattr(module, "configure_cli", None)
            if callable(configure):
                configure(parser)

    def before_instantiate_classes(self) -> None:
        parser = self._parser(self.subcommand)
        given = self.inputs.set_keys()
        for source, target in getattr(parser, "mixerzoo_links", []):
            if _plain_key(target) in given:
                raise ValueError(
                    f"{target} is linked to {source} (it always takes that value); set "
                    f"{source} instead and remove {target} from the config and arguments"
                )

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


def known_models_hint(domains: Iterable[str] | None = None) -> str:
    """One line per domain: registered model names and the class to put in ``class_path``."""
    lines = []
    for domain in plugins.domain_modules() if domains is None else domains:
        entries = []
        for name in list_models(domain):
            cls = get_model_class(name)
            entries.append(f"{name} ({cls.__module__}.{cls.__qualname__})")
        if entries:
            lines.append(f"  {domain}: " + ", ".join(entries))
    for domain, why in sorted(unavailable_domains().items()):
        lines.append(f"  {domain}: not available ({why})")
    return (
        "Registered models (use the class path, or the class name, in class_path):\n"
        + "\n".join(lines)
    )


def instantiate_trainer(settings: dict[str, Any]) -> pl.Trainer:
    """A ``Trainer`` from settings written as a config's ``trainer:`` section, parsed and built
    by the same parser as the ``mixerzoo`` command (callbacks and loggers as ``class_path`` /
    ``init_args`` dicts).

    Args:
        settings: e.g. ``{"max_epochs": 10, "callbacks": [{"class_path": "...", ...}]}``.
    """
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_lightning_class_args(pl.Trainer, "trainer")
    config = parser.parse_object({"trainer": settings})
    # As LightningCLI.instantiate_trainer: the parser builds the callbacks and loggers, the
    # trainer is built from the resulting arguments.
    arguments = parser.instantiate_classes(config).trainer
    return pl.Trainer(**{key: arguments[key] for key in arguments.keys()})


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``mixerzoo`` console script."""
    MixerzooCLI(args=args)


if __name__ == "__main__":
    main()
