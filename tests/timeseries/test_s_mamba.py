"""S-Mamba: the official architecture's parameter count and its bidirectional Mamba layers."""

import math

import torch

from mixerzoo.core import create_model
from mixerzoo.core.mixers.mamba import Mamba


def _mamba_params(d, d_state, d_conv, expand):
    # mamba-ssm's Mamba block: in_proj (no bias), depthwise conv (bias), x_proj (no bias),
    # dt_proj (bias), A_log, D, out_proj (no bias).
    di, r = expand * d, math.ceil(d / 16)
    return (
        d * 2 * di
        + (di * d_conv + di)
        + di * (r + 2 * d_state)
        + (r * di + di)
        + di * d_state
        + di
        + di * d
    )


def test_parameter_count_matches_the_official_architecture():
    L, H, d, d_ff, n_state, layers = 96, 96, 32, 48, 2, 2
    model = create_model(
        "s_mamba", seq_len=L, pred_len=H, d_model=d, d_ff=d_ff, d_state=n_state, e_layers=layers
    )
    per_layer = 2 * _mamba_params(d, n_state, 2, 1) + (d * d_ff + d_ff) + (d_ff * d + d) + 4 * d
    expected = (L * d + d) + layers * per_layer + 2 * d + (d * H + H)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_layer_is_forward_plus_reversed_mamba_over_variates_without_mixer_dropout():
    torch.manual_seed(0)
    model = create_model(
        "s_mamba", seq_len=24, pred_len=6, d_model=16, d_ff=16, d_state=2, e_layers=1
    )
    block = model.blocks[0]
    assert block.mixer_dropout.p == 0.0 and block.dropout.p == 0.1
    fwd, bwd = [m for m in block.mixer.modules() if isinstance(m, Mamba)]
    tokens = torch.randn(2, 5, 16)
    expected = fwd(tokens)[0] + bwd(tokens.flip(1))[0].flip(1)
    torch.testing.assert_close(block.mixer(tokens)[0], expected)
    # Every variate token influences every other (bidirectional), unlike a causal scan.
    model.eval()
    x = torch.randn(1, 24, 5)
    x2 = x.clone()
    x2[..., -1] = torch.randn(1, 24)
    assert not torch.allclose(model(x)[..., 0], model(x2)[..., 0])


def test_forecast_shape():
    model = create_model("s_mamba", seq_len=24, pred_len=6, d_model=16, d_ff=16, d_state=2)
    assert model(torch.randn(3, 24, 7), torch.randn(3, 24, 4)).shape == (3, 6, 7)
