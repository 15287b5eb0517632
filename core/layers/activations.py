"""Activations by name, so that configs and constructors can say ``activation: gelu``."""

from __future__ import annotations

from torch import nn

__all__ = ["get_activation", "ACTIVATIONS"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def get_activation(name: str) -> nn.Module:
    """An activation module by name (gelu, relu, silu/swish, elu, tanh, sigmoid, identity)."""
    try:
        return ACTIVATIONS[name.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None
