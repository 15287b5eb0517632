"""Numerical kernels, one sub-package per operator family (naive / chunk / triton paths)."""

from mixerzoo.core.ops.linear_scan import linear_scan
from mixerzoo.core.ops.selective_scan import selective_scan

__all__: list[str] = ["linear_scan", "selective_scan"]
