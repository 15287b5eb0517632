"""The error every time-series data check raises."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A data file or frame that cannot be used as it is; the message says how to fix it."""
