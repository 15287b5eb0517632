"""mixerzoo: modern sequence mixers and the domain models built on them.

Sub-packages: ``core`` (mixers, ops, blocks, registry, CLI), ``timeseries``, ``vision``,
``medical``, ``audio``, ``rl``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
