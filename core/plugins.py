"""Domain plug-ins: how ``core`` finds the domain packages without naming them.

A domain (time series, vision, ...) plugs in with one entry point in the group
``mixerzoo.domains`` of its distribution's ``pyproject.toml``::

    [project.entry-points."mixerzoo.domains"]
    timeseries = "mixerzoo.timeseries"

The name is the domain (the ``domain=`` of its ``register_model`` calls); the value is the module
whose import registers everything the domain offers: its models (``register_model``), and the
Lightning tasks, data modules and callbacks that configs name. That module may also define

- ``configure_cli(parser)``: called by the ``mixerzoo`` command for runs that name the domain, to
  set trainer defaults and link arguments (``parser.set_defaults``, ``parser.link_arguments``);
- third-party imports guarded by :func:`require`, so that a missing extra says what to install.

Nothing is imported until asked for: :func:`load_domain` imports one domain, and
:func:`domain_of` tells which domain a class path belongs to by reading the path
(``mixerzoo.<domain>....``) or, for a bare class name, the domain sources (not importing them), so
that a run imports only the domain its config names. After adding or renaming an entry point,
reinstall the package (``pip install -e .``): entry points are read from the installed metadata.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

__all__ = [
    "ENTRY_POINT_GROUP",
    "MissingExtraError",
    "domain_modules",
    "domain_of",
    "domain_of_model",
    "load_domain",
    "load_domains",
    "require",
]

ENTRY_POINT_GROUP = "mixerzoo.domains"


class MissingExtraError(ModuleNotFoundError):
    """A third-party package of an optional extra is not installed; the message says which extra
    to install."""


def require(module: str, extra: str) -> ModuleType:
    """Import a third-party ``module`` that the package extra ``extra`` provides.

    Domains call it before importing their dependencies, e.g. at the top of their
    ``__init__``: ``require("monai", extra="medical")``.

    Args:
        module: import name, e.g. ``"monai"``, ``"sklearn"``.
        extra: the extra of ``mixerzoo`` that installs it, e.g. ``"medical"``.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: ``module`` (or a package it needs) is not installed; the message names
            the extra: ``pip install "mixerzoo[<extra>]"``.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = err.name or module
        raise MissingExtraError(
            f"{module!r} is needed by the mixerzoo extra [{extra}] and could not be imported "
            f'(missing module {missing!r}). Install the extra: pip install "mixerzoo[{extra}]" '
            f'(from a clone: pip install -e ".[{extra}]")',
            name=missing,
        ) from err


@functools.lru_cache(maxsize=1)
def domain_modules() -> dict[str, str]:
    """Domain name -> module to import, from the installed ``mixerzoo.domains`` entry points."""
    found = {ep.name: ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return dict(sorted(found.items()))


def load_domain(name: str) -> ModuleType:
    """Import the domain ``name`` (registering its models, tasks and data modules).

    Raises:
        KeyError: no installed domain of that name; the message lists the installed ones.
        MissingExtraError: the domain's extra is not installed.
    """
    modules = domain_modules()
    if name not in modules:
        raise KeyError(
            f"no mixerzoo domain {name!r}; installed domains: {', '.join(modules) or 'none'} "
            f"(entry points of the group {ENTRY_POINT_GROUP!r}; reinstall the package after "
            f"changing them)"
        )
    return importlib.import_module(modules[name])


def load_domains(names: list[str] | None = None) -> tuple[dict[str, ModuleType], dict[str, str]]:
    """Import several domains (default: all installed), skipping those whose extra is missing.

    Returns:
        ``(loaded, unavailable)``: domain -> module, and domain -> the reason it could not be
        imported (the :class:`MissingExtraError` message, which names the extra to install).
    """
    loaded, unavailable = {}, {}
    for name in domain_modules() if names is None else names:
        try:
            loaded[name] = load_domain(name)
        except MissingExtraError as err:
            unavailable[name] = str(err)
    return loaded, unavailable


_CLASS = re.compile(r"^class\s+([A-Za-z_]\w*)\s*[(:]", re.MULTILINE)
_MODEL = re.compile(r"register_model\(\s*[\"']([^\"']+)[\"']")


@functools.lru_cache(maxsize=1)
def _source_index() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """``(classes, models)``: class name -> domains whose sources define a class of that name, and
    model name -> domains whose sources call ``register_model`` with it. The sources are read,
    not imported, so that finding the domain of a name costs no import."""
    classes: dict[str, set[str]] = {}
    models: dict[str, set[str]] = {}
    for domain, module in domain_modules().items():
        # find_spec imports the parent package (``mixerzoo``), never the domain itself.
        spec = importlib.util.find_spec(module)
        if spec is None:
            continue
        roots = spec.submodule_search_locations or ([spec.origin] if spec.origin else [])
        for root in map(Path, roots):
            for path in root.rglob("*.py") if root.is_dir() else [root]:
                text = path.read_text(encoding="utf-8", errors="replace")
                for name in _CLASS.findall(text):
                    classes.setdefault(name, set()).add(domain)
                for name in _MODEL.findall(text):
                    models.setdefault(name.lower(), set()).add(domain)
    freeze = lambda index: {k: tuple(sorted(v)) for k, v in index.items()}  # noqa: E731
    return freeze(classes), freeze(models)


def domain_of_model(name: str) -> tuple[str, ...]:
    """The domains whose sources register a model called ``name`` (without importing them)."""
    return _source_index()[1].get(name.lower(), ())


def domain_of(class_path: str) -> tuple[str, ...]:
    """The domains a class path or bare class name may belong to, without importing them.

    ``"mixerzoo.timeseries.ForecastTask"`` -> ``("timeseries",)``; ``"ForecastTask"`` -> the
    domains whose sources define a class ``ForecastTask``; anything else (``torch.optim.Adam``,
    ``mixerzoo.core...``) -> ``()``.
    """
    modules = domain_modules()
    parts = class_path.split(".")
    if len(parts) > 1:
        for domain, module in modules.items():
            if class_path == module or class_path.startswith(module + "."):
                return (domain,)
        return ()
    return _source_index()[0].get(class_path, ())
