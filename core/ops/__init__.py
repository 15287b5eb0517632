"""Numerical kernels, one sub-package per operator family (naive / chunk / triton paths)."""

__all__: list[str] = []
