"""S-Mamba: the official architecture's parameter count and its bidirectional Mamba layers."""

import copy
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


def _token_influence(mixer, tokens: torch.Tensor) -> torch.Tensor:
    """``[T, T]``: entry (t, s) is how much output token t depends on input token s."""
    rows = []
    for t in range(tokens.shape[1]):
        x = tokens.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(mixer(x)[0][:, t].sum(), x)
        rows.append(grad.abs().sum(dim=(0, 2)))
    return torch.stack(rows)


def test_layer_is_a_forward_and_a_reversed_mamba_over_variates_summed_without_mixer_dropout():
    """Checked by properties, not by re-computing the layer: the two Mamba blocks read the
    variate tokens in opposite orders (one causal, one anti-causal), their outputs add up, and
    swapping them mirrors the layer."""
    torch.manual_seed(0)
    model = create_model(
        "s_mamba", seq_len=24, pred_len=6, d_model=16, d_ff=16, d_state=2, e_layers=1
    ).double()
    block = model.blocks[0]
    assert block.mixer_dropout.p == 0.0 and block.dropout.p == 0.1
    mixer = block.mixer
    assert isinstance(mixer.forward_mamba, Mamba) and isinstance(mixer.backward_mamba, Mamba)
    tokens = torch.randn(2, 5, 16, dtype=torch.float64)

    def without(direction: str):
        silent = copy.deepcopy(mixer)
        getattr(silent, direction).out_proj.weight.data.zero_()
        return silent

    forward_only, backward_only = without("backward_mamba"), without("forward_mamba")
    lower = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    causal = _token_influence(forward_only, tokens)
    anti = _token_influence(backward_only, tokens)
    assert torch.all(causal[~lower] == 0) and torch.all(causal[lower] > 0)
    assert torch.all(anti[lower.T.logical_not()] == 0) and torch.all(anti[lower.T] > 0)
    # The forward direction alone is the forward block, unscaled; the two directions add up
    # (the layer is their sum, nothing else).
    torch.testing.assert_close(forward_only(tokens)[0], mixer.forward_mamba(tokens)[0])
    torch.testing.assert_close(mixer(tokens)[0], forward_only(tokens)[0] + backward_only(tokens)[0])
    # Swapping the two blocks and reversing the tokens reverses the output.
    swapped = copy.deepcopy(mixer)
    swapped.forward_mamba, swapped.backward_mamba = swapped.backward_mamba, swapped.forward_mamba
    torch.testing.assert_close(swapped(tokens.flip(1))[0], mixer(tokens)[0].flip(1))
    # Every variate's forecast depends on every other variate (bidirectional).
    model.eval()
    x = torch.randn(1, 24, 5, dtype=torch.float64)
    x2 = x.clone()
    x2[..., -1] = torch.randn(1, 24, dtype=torch.float64)
    assert not torch.allclose(model(x)[..., 0], model(x2)[..., 0])


def test_forecast_shape():
    model = create_model("s_mamba", seq_len=24, pred_len=6, d_model=16, d_ff=16, d_state=2)
    assert model(torch.randn(3, 24, 7), torch.randn(3, 24, 4)).shape == (3, 6, 7)
