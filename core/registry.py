"""Name -> constructor registries for mixers and models.

Mixers and models register themselves with a decorator when their module is imported::

    @register_mixer("attention")
    class Attention(Mixer): ...

    @register_model("itransformer", domain="timeseries")
    class ITransformer(nn.Module): ...

and are built by name: ``create_mixer("attention", d_model=64)``. Unknown names and duplicate
registrations raise errors that list what is known, so a typo in a config is caught at once.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "register_mixer",
    "create_mixer",
    "list_mixers",
    "get_mixer_class",
    "register_model",
    "create_model",
    "list_models",
    "get_model_class",
    "UnknownNameError",
]

# Modules whose import registers things; imported lazily on the first lookup so that
# ``create_model("itransformer")`` works without the caller importing the domain package.
_MIXER_MODULES = ("mixerzoo.core.mixers",)
_MODEL_MODULES = (
    "mixerzoo.timeseries",
    "mixerzoo.vision",
    "mixerzoo.medical",
    "mixerzoo.audio",
    "mixerzoo.rl",
)


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
    def __init__(self, kind: str, modules: tuple[str, ...]):
        self.kind = kind
        self._modules = modules
        self._entries: dict[str, _Entry] = {}
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._modules:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as err:
                # Only tolerate the module itself being absent, never a broken import inside it.
                if err.name != module:
                    raise

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
        if key not in self._entries:
            known = sorted(self._entries)
            close = difflib.get_close_matches(str(key), known, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(known)}"
            )
        return self._entries[key].builder

    def names(self, domain: str | None = None) -> list[str]:
        self._load()
        return sorted(k for k, e in self._entries.items() if domain is None or e.domain == domain)


_MIXERS = _Registry("mixer", _MIXER_MODULES)
_MODELS = _Registry("model", _MODEL_MODULES)


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
    """Sorted names of registered models, optionally only those of one ``domain``."""
    return _MODELS.names(domain)
