"""Name -> constructor registries for mixers and models.

Mixers and models register themselves with a decorator when their module is imported::

    @register_mixer("attention")
    class Attention(Mixer): ...

    @register_model("itransformer", domain="timeseries")
    class ITransformer(nn.Module): ...

and are built by name: ``create_mixer("attention", d_model=64)``. Unknown names and duplicate
registrations raise errors that list what is known, so a typo in a config is caught at once.

Models of a domain register when the domain is imported. A lookup imports nothing it does not
need: a name already registered is returned at once; on a miss, the installed domains not yet
imported are (``core.plugins``: the ``mixerzoo.domains`` entry points, never a list here), and the
lookup is tried again. A domain whose extra is missing is skipped, and an unknown name's error says
which extra would add that domain's models.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mixerzoo.core import plugins

__all__ = [
    "register_mixer",
    "create_mixer",
    "list_mixers",
    "get_mixer_class",
    "register_model",
    "create_model",
    "list_models",
    "get_model_class",
    "unavailable_domains",
    "UnknownNameError",
]

# The core module whose import registers every mixer; imported on the first lookup.
_MIXER_MODULES = ("mixerzoo.core.mixers",)


class UnknownNameError(KeyError):
    """A registry lookup with a name that was never registered."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable.
        return str(self.args[0])


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Callable[..., Any]
    domain: str | None


class _Registry:
    """Entries of one kind, and how to load the modules that register them.

    Args:
        kind: ``"mixer"`` or ``"model"`` (for messages).
        modules: modules imported on the first lookup (the core mixers).
        domains: also import the plug-in domains on a miss (``core.plugins``).
    """

    def __init__(self, kind: str, modules: tuple[str, ...] = (), domains: bool = False):
        self.kind = kind
        self._modules = modules
        self._domains = domains
        self._entries: dict[str, _Entry] = {}
        self._loaded = False
        # Domains whose import failed for a missing extra: name -> message naming the extra.
        self._unavailable: dict[str, str] = {}

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._modules:
            importlib.import_module(module)

    def _load_domains(self, names: list[str] | None = None) -> None:
        if self._domains and names != []:
            _, unavailable = plugins.load_domains(names)
            self._unavailable.update(unavailable)

    def register(self, name: str, builder: Callable[..., Any], domain: str | None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        key = name.lower()
        if key in self._entries:
            old = self._entries[key].builder
            raise ValueError(
                f"{self.kind} {name!r} is already registered (by "
                f"{old.__module__}.{getattr(old, '__qualname__', old)}); pick another name"
            )
        self._entries[key] = _Entry(key, builder, domain)

    def get(self, name: str) -> Callable[..., Any]:
        self._load()
        key = name.lower() if isinstance(name, str) else name
        if key not in self._entries and self._domains:
            # First the domain whose sources register the name, then (a name registered some
            # other way) every domain.
            self._load_domains(list(plugins.domain_of_model(str(key))))
            if key not in self._entries:
                self._load_domains()
        if key not in self._entries:
            known = sorted(self._entries)
            close = difflib.get_close_matches(str(key), known, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            missing = "".join(
                f" Domain {domain!r} is not available: {why}"
                for domain, why in sorted(self._unavailable.items())
            )
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: "
                f"{', '.join(known)}.{missing}"
            )
        return self._entries[key].builder

    def names(self, domain: str | None = None) -> list[str]:
        self._load()
        if domain is None or domain in plugins.domain_modules():
            self._load_domains(None if domain is None else [domain])
        return sorted(k for k, e in self._entries.items() if domain is None or e.domain == domain)

    def unavailable(self) -> dict[str, str]:
        """Domains that could not be imported for a missing extra -> the message naming it."""
        return dict(self._unavailable)


_MIXERS = _Registry("mixer", _MIXER_MODULES)
_MODELS = _Registry("model", domains=True)


def register_mixer(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator registering a mixer under ``name`` (case-insensitive)."""

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        _MIXERS.register(name, builder, domain="core")
        return builder

    return decorator


def create_mixer(name: str, d_model: int, **kwargs: Any):
    """Build the mixer registered as ``name`` with model width ``d_model``.

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the known names.
    """
    return _MIXERS.get(name)(d_model, **kwargs)


def get_mixer_class(name: str) -> Callable[..., Any]:
    """The class (or builder) registered as mixer ``name``."""
    return _MIXERS.get(name)


def list_mixers() -> list[str]:
    """Sorted names of all registered mixers."""
    return _MIXERS.names()


def register_model(
    name: str, domain: str, **defaults: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a model constructor under ``name`` in ``domain``.

    ``defaults`` registers a named size variant: ``@register_model("vir_tiny", "vision",
    depth=12)`` makes ``create_model("vir_tiny")`` call the class with ``depth=12`` (caller
    keyword arguments still override). Stack several decorators for several variants.
    """

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        if defaults:

            def variant(**kwargs: Any):
                return builder(**{**defaults, **kwargs})

            variant.__qualname__ = f"{builder.__qualname__}[{name}]"
            variant.__module__ = builder.__module__
            _MODELS.register(name, variant, domain)
        else:
            _MODELS.register(name, builder, domain)
        return builder

    return decorator


def create_model(name: str, **kwargs: Any):
    """Build the model registered as ``name``; unknown names list the known ones."""
    return _MODELS.get(name)(**kwargs)


def get_model_class(name: str) -> Callable[..., Any]:
    """The class (or variant builder) registered as model ``name``."""
    return _MODELS.get(name)


def list_models(domain: str | None = None) -> list[str]:
    """Sorted names of registered models, optionally only those of one ``domain``.

    Imports the installed domains (only ``domain`` when given) so that every model is listed;
    domains whose extra is missing are left out (see :func:`unavailable_domains`).
    """
    return _MODELS.names(domain)


def unavailable_domains() -> dict[str, str]:
    """Installed domains whose import failed for a missing extra -> the message naming the extra
    (filled by the lookups that imported domains)."""
    return _MODELS.unavailable()
