import pytest
from torch import nn

from mixerzoo.core import registry
from mixerzoo.core.registry import (
    UnknownNameError,
    create_model,
    list_mixers,
    list_models,
    register_mixer,
    register_model,
)


def test_duplicate_mixer_registration_is_an_error():
    assert "attention" in list_mixers()
    with pytest.raises(ValueError, match="already registered"):
        register_mixer("attention")(nn.Identity)


def test_model_registry_variants_and_domains(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", registry._Registry("model", ()))

    @register_model("toy_small", domain="toy", width=4)
    @register_model("toy", domain="toy")
    class Toy(nn.Module):
        def __init__(self, width: int = 2):
            super().__init__()
            self.width = width

    assert create_model("toy").width == 2
    assert create_model("toy_small").width == 4
    assert create_model("TOY_SMALL", width=8).width == 8
    assert list_models("toy") == ["toy", "toy_small"]
    assert list_models("other") == []
    with pytest.raises(UnknownNameError, match="Known models: toy, toy_small"):
        create_model("toys_big")
    with pytest.raises(ValueError, match="already registered"):
        register_model("toy", domain="toy")(Toy)


def test_real_models_are_registered():
    assert "itransformer" in list_models("timeseries")
