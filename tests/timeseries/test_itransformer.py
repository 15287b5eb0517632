"""iTransformer: shapes, the official parameter count, and the per-window normalisation."""

import pytest
import torch

from mixerzoo.core import create_model
from mixerzoo.timeseries import ITransformer


def _official_param_count(L, H, d, d_ff, layers, with_marks=True):
    # Independent count from the paper's architecture: Linear(L, d) embedding; per layer four
    # d x d attention projections, a d -> d_ff -> d FFN and two LayerNorms; final LayerNorm;
    # Linear(d, H) projector.
    per_layer = 4 * (d * d + d) + (d * d_ff + d_ff) + (d_ff * d + d) + 2 * 2 * d
    return (L * d + d) + layers * per_layer + 2 * d + (d * H + H)


def test_parameter_count_matches_the_architecture():
    model = ITransformer(seq_len=96, pred_len=96, d_model=256, d_ff=256, e_layers=2)
    assert sum(p.numel() for p in model.parameters()) == _official_param_count(96, 96, 256, 256, 2)


def test_output_shape_with_and_without_marks():
    model = create_model("itransformer", seq_len=24, pred_len=12, d_model=32, d_ff=64, n_heads=4)
    x, marks = torch.randn(2, 24, 5), torch.randn(2, 24, 4)
    assert model(x, marks).shape == (2, 12, 5)
    assert model(x).shape == (2, 12, 5)


def test_use_norm_makes_the_forecast_equivariant_to_affine_maps_of_each_variate():
    torch.manual_seed(0)
    model = ITransformer(
        seq_len=24, pred_len=12, d_model=32, d_ff=64, n_heads=4, use_marks=False
    ).eval()
    x = torch.randn(3, 24, 4, dtype=torch.float64)
    model.double()
    scale = torch.tensor([2.0, 0.5, 3.0, 1.0], dtype=torch.float64)
    shift = torch.tensor([10.0, -4.0, 0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        y2 = model(x * scale + shift)
    # The 1e-5 variance epsilon makes it approximate; it is exact as eps -> 0.
    torch.testing.assert_close(y2, y * scale + shift, rtol=1e-3, atol=1e-3)


def test_mixer_kwargs_override_the_attention_defaults():
    # (Every compatible mixer in place of attention: test_mixer_swap.py.)
    model = ITransformer(
        seq_len=24, pred_len=6, d_model=16, d_ff=16, mixer="attention", mixer_kwargs={"n_heads": 2}
    )
    assert (
        model.blocks[0].mixer.n_heads == 2 and ITransformer(d_model=16).blocks[0].mixer.n_heads == 8
    )


def test_wrong_lookback_is_a_clear_error():
    model = ITransformer(seq_len=24, pred_len=6, d_model=16, d_ff=16, n_heads=2)
    with pytest.raises(ValueError, match=r"x must have shape \[B, 24, C\]"):
        model(torch.randn(1, 30, 3))
