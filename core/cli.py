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

Errors: a run that fails (bad data, an unknown model, mixer or option, a missing file) prints one
message, ``mixerzoo: error: ...``, saying what was wrong and what to do, and exits with status 1
(2 for a bad command line or config): no traceback, no usage dump. A misspelt ``class_path`` lists
the closest classes and the registered models, an unknown option the closest valid ones.
``--debug`` (or ``MIXERZOO_TRACEBACK=1``) shows the full message and the traceback instead.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from mixerzoo.core import plugins
from mixerzoo.core.registry import get_model_class, list_models, unavailable_domains

__all__ = ["MixerzooCLI", "explain_parse_error", "instantiate_trainer", "main"]

_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
TRACEBACK_ENV = "MIXERZOO_TRACEBACK"
_HINT = f"run with --debug (or {TRACEBACK_ENV}=1) for the full message and traceback"


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

    def __init__(self, *args: Any, debug: bool = False, **kwargs: Any):
        self.debug = debug
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
        kwargs.setdefault("parser_kwargs", self._subcommand_help())
        super().__init__(pl.LightningModule, pl.LightningDataModule, *args, **kwargs)

    def _subcommand_help(self) -> dict[str, dict[str, str]]:
        """Descriptions of ``mixerzoo <subcommand> --help`` that say where a class's options are:
        one ``--data.help`` / ``--model.help`` line per domain of the run (all without a config)."""
        per_domain = []
        for domain, module in sorted(self.domain_modules.items()):
            classes = _lightning_classes({domain: module})
            data = [c.__name__ for c in classes if issubclass(c, pl.LightningDataModule)]
            tasks = [c.__name__ for c in classes if issubclass(c, pl.LightningModule)]
            if data or tasks:
                shown = [f"--data.help {name}" for name in data[:2]]
                shown += [f"--model.help {name}" for name in tasks[:1]]
                per_domain.append(f"{domain}: {', '.join(shown)}")
        text = (
            "The options of a task or data class: --model.help CLASS, --data.help CLASS"
            + (f" ({'; '.join(per_domain)})" if per_domain else "")
            + ". --print_config shows a config's resolved values; --debug shows tracebacks."
        )
        verbs = {"fit": "Train", "validate": "Validate", "test": "Test", "predict": "Predict"}
        return {name: {"description": f"{verb}. {text}"} for name, verb in verbs.items()}

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        plain_error = parser.error

        def error(message: str, ex: Exception | None = None):
            if self.debug:
                plain_error(f"{message}\n{known_models_hint()}", ex)
            _fail(explain_parse_error(message, parser, list(self.domain_modules)), status=2)

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


def _lightning_classes(modules: dict) -> list[type]:
    """Task and data-module classes defined under the given domain packages."""
    prefixes = tuple(f"{module.__name__}." for module in modules.values())
    found, stack = [], [pl.LightningModule, pl.LightningDataModule]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__.startswith(prefixes) and not sub.__name__.startswith("_"):
                found.append(sub)
    return sorted(set(found), key=lambda c: (c.__module__, c.__name__))


def _class_candidates(domains: Iterable[str]) -> list[str]:
    """Class paths and names a ``class_path`` may name: the registered models and the tasks and
    data modules of ``domains``, by defining module and by the packages that export them."""
    classes = {get_model_class(n) for d in domains for n in list_models(d)}
    loaded = {d: sys.modules[m] for d, m in plugins.domain_modules().items() if m in sys.modules}
    classes |= set(_lightning_classes(loaded))
    names = set()
    for cls in classes:
        if not inspect.isclass(cls):
            continue
        names |= {cls.__name__, f"{cls.__module__}.{cls.__qualname__}"}
        parts = cls.__module__.split(".")
        for i in range(1, len(parts)):
            package = sys.modules.get(".".join(parts[:i]))
            if package is not None and getattr(package, cls.__name__, None) is cls:
                names.add(f"{package.__name__}.{cls.__name__}")
    return sorted(names)


def _init_options(class_path: str) -> list[str]:
    """Constructor arguments of the class at ``class_path`` (empty when it does not import)."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        params = inspect.signature(cls).parameters.values()
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _closest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _parser_keys(parser) -> list[str]:
    """The option names of ``parser`` and of its subcommands' parsers."""
    keys: list[str] = []
    for action in getattr(parser, "_actions", []):
        for sub in (getattr(action, "choices", None) or {}).values():
            if hasattr(sub, "_actions"):
                keys += _parser_keys(sub)
        if not action.dest.endswith(".help") and action.dest not in ("help", "config"):
            keys.append(action.dest)
    return list(dict.fromkeys(k for k in keys if k not in ("print_config", "subcommand")))


def explain_parse_error(message: str, parser=None, domains: Iterable[str] = ()) -> str:
    """One clear message for a jsonargparse error (which nests every class it tried).

    Args:
        message: the parser's error message.
        parser: the parser that failed (its keys are the candidates for an unknown option).
        domains: the run's domains (their models are listed for an unknown class path).
    """
    lines = [line.strip().lstrip("- ").strip() for line in message.splitlines() if line.strip()]
    keys = [m.group(1) for line in lines if (m := re.match(r'Parser key "([^"]+)":', line))]
    problems = [
        (i, m.group(1))
        for i, line in enumerate(lines)
        if (m := re.match(r"Problem with given class_path '([^']+)':", line))
    ]
    where = f" (in {'.init_args.'.join(keys)})" if keys else ""
    if problems:
        i, class_path = problems[-1]
        reason = next((line for line in lines[i + 1 :] if not line.startswith("Parser key")), "")
        option = re.match(r"Option '([^']+)' is not accepted", reason)
        if option:
            options = _init_options(class_path)
            name = option.group(1)
            listed = f" Its options: {', '.join(options)}." if options else ""
            return f"{class_path} has no option {name!r}{where}{_closest(name, options)}{listed}"
        bad = re.search(r"(?:dot import path string:|Import path) (\S+)", reason)
        unresolved = bad or re.search(r"has no attribute|No module named|not a subclass", reason)
        if unresolved:
            wrong = bad.group(1) if bad else class_path
            domains = list(domains) or list(plugins.domain_modules())
            candidates = _class_candidates(domains)
            if "." not in wrong:
                candidates = [c for c in candidates if "." not in c]
            return (
                f"unknown class_path {wrong!r}{where}{_closest(wrong, candidates)}\n"
                + known_models_hint(domains)
            )
        return f"{class_path}: {reason}{where}"
    option = re.search(r"Option '([^']+)' is not accepted", message)
    if option:
        name = option.group(1)
        return f"unknown option {name!r}{_closest(name, _parser_keys(parser))}"
    refused = re.search(r"(Group|Subcommand) '([^']+)' does not accept option '([^']+)'", message)
    if refused:
        kind, owner, name = refused.groups()
        keys = _parser_keys(parser)
        if kind == "Group":
            keys = [k[len(owner) + 1 :] for k in keys if k.startswith(owner + ".")]
            return f"{owner} has no option {name!r}{_closest(name, keys)}"
        return f"unknown option {name!r}{_closest(name, keys)}"
    if "Errors:" in lines:
        # A class that failed to build: jsonargparse lists what each candidate type said.
        errors = lines[lines.index("Errors:") + 1 :]
        cause = next((e for e in errors if not e.startswith(("Expected a <class", "Given"))), None)
        if cause is not None:
            return cause + where
    given = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")), None
    )
    if keys and given is not None:
        expected = re.findall(r"Expected a <class '([^']+)'>", message)
        want = f" (expected {' or '.join(dict.fromkeys(expected))})" if expected else ""
        return f"invalid value {given!r} for {keys[-1]}{want}"
    return (
        " ".join(lines[:2])
        if lines and lines[0].endswith(":")
        else (lines[0] if lines else message)
    )


def _fail(message: str, status: int = 1) -> None:
    print(f"mixerzoo: error: {message}\n({_HINT})", file=sys.stderr, flush=True)
    raise SystemExit(status)


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
    """Entry point of the ``mixerzoo`` console script.

    Args:
        args: the arguments (default ``sys.argv[1:]``); ``--debug`` anywhere among them, or
            ``MIXERZOO_TRACEBACK=1``, shows full errors and tracebacks.
    """
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get(TRACEBACK_ENV, "").lower() in ("1", "true", "yes")
    argv = [a for a in argv if a != "--debug"]
    if args is None:
        # LightningCLI reads the command line itself when it gets no args (and warns otherwise).
        sys.argv[1:] = argv
    try:
        MixerzooCLI(args=None if args is None else argv, debug=debug)
    except Exception as err:  # the command's last resort: one message, unless asked for more
        if debug:
            raise
        message = str(err)
        if "Given value" in message or "Errors:" in message:  # raised while building a class
            _fail(explain_parse_error(message))
        _fail(f"{type(err).__name__}: {message}" if message else type(err).__name__)


if __name__ == "__main__":
    main()
