"""Every registered mixer plugs into the vision backbones by name (DESIGN.md: swapping the mixer
is one config line): MambaOut and EfficientVMamba train a step with it; ViR with any causal mixer
gives the same output in its parallel, chunkwise and recurrent forms."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core import create_mixer, list_mixers
from mixerzoo.core.testing import assert_close
from mixerzoo.vision.models import EfficientVMamba, MambaOut, ViR

D = 16
MIXERS = list_mixers()
CAUSAL = [name for name in MIXERS if create_mixer(name, d_model=D).causal]


def _train_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    loss = torch.nn.functional.cross_entropy(model(x), torch.arange(x.shape[0]) % 3)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("mixer", MIXERS)
def test_mambaout_with_every_mixer(mixer):
    torch.manual_seed(0)
    model = MambaOut(num_classes=3, depths=(1,), dims=(D,), stem_stride=4, mixer=mixer)
    _train_step(model, torch.randn(2, 3, 16, 16))


@pytest.mark.parametrize("mixer", ["ss2d", "attention", "mamba", "gated_cnn"])
def test_efficientvmamba_with_other_mixers(mixer):
    torch.manual_seed(0)
    model = EfficientVMamba(
        num_classes=3, dims=(D, D, D, D), depths=(1, 0, 0, 0), patch_size=2, mixer=mixer
    )
    _train_step(model, torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("mixer", CAUSAL)
def test_vir_recurrent_equals_parallel_with_every_causal_mixer(mixer):
    torch.manual_seed(0)
    model = (
        ViR(
            img_size=16,
            patch_size=8,
            embed_dim=D,
            depth=1,
            num_heads=2,
            num_classes=3,
            mixer=mixer,
            chunk_size=2,
        )
        .double()
        .eval()
    )
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        outs = {}
        for mode in ("parallel", "chunkwise", "recurrent"):
            model.mode = mode
            outs[mode] = model(x)
    assert_close(outs["recurrent"], outs["parallel"], rtol=1e-8, atol=1e-10, msg=mixer)
    assert_close(outs["chunkwise"], outs["parallel"], rtol=1e-8, atol=1e-10, msg=mixer)
