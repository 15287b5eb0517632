"""xLSTM-UNet: shapes, strides, parameter counts and placement rules against expectations worked
out by hand from the official code's definition, the mixer swap, bad inputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core import create_mixer, create_model
from mixerzoo.medical.models.xlstm_unet import (
    MixerLayer,
    XLSTMUNet,
    depth_rule,
    encoder_layer_plan,
    feature_map_sizes,
)


def _n(module):
    return sum(p.numel() for p in module.parameters())


# --- closed-form parameter counts (from the architecture, not from the code) ------------------
def res_block(cin, cout, k, d, project):
    """conv(k) + IN + conv(k) + IN (+ 1x1 conv), all convs with bias, IN affine."""
    n = cin * cout * k**d + cout + 2 * cout + cout * cout * k**d + cout + 2 * cout
    return n + (cin * cout + cout if project else 0)


def vil_layer(dim):
    """Pre-LN weight (D) + ViL mLSTM block: up-projection D x 4D, q/k/v block-diagonal (blocks of
    4 over 2D: 3 x 2D x 4), causal conv (2D x 4 + 2D), input and forget gates (3 x 2D -> 4 heads,
    with bias), head-norm weight (2D), skip (2D), down-projection 2D x D."""
    return (
        dim
        + 4 * dim * dim
        + 3 * 2 * dim * 4
        + 2 * dim * 5
        + 2 * (3 * 2 * dim * 4 + 4)
        + 4 * dim
        + 2 * dim * dim
    )


def bot_2d_count(cin, classes, feats, k=3, blocks=2, d=2):
    n = len(feats)
    enc_blocks, dec_blocks = depth_rule([blocks] * n, [blocks] * (n - 1))
    total = res_block(cin, feats[0], k, d, True) + (enc_blocks[0] - 1) * res_block(
        feats[0], feats[0], k, d, False
    )
    prev = feats[0]
    for s, f in enumerate(feats):
        total += res_block(prev, f, k, d, True) + (enc_blocks[s] - 1) * res_block(f, f, k, d, False)
        prev = f
    total += vil_layer(feats[-1])
    for s in range(n - 1):
        below, skip = feats[n - 1 - s], feats[n - 2 - s]
        concat = s < n - 2 or d == 3  # the official 2-D decoder drops the full-resolution skip
        total += below * skip + skip  # upsampling 1x1 conv
        total += res_block(2 * skip if concat else skip, skip, k, d, True)
        total += (dec_blocks[s] - 1) * res_block(skip, skip, k, d, False)
        total += skip * classes + classes  # segmentation head
    return total


def test_vil_layer_parameter_count_matches_the_published_block():
    for dim in (8, 32, 256):
        assert _n(MixerLayer(dim, 2, "mlstm")) == vil_layer(dim) == 6 * dim * dim + 87 * dim + 8


@pytest.mark.parametrize("d", [2, 3])
def test_bot_parameter_count_by_hand(d):
    feats = [8, 16, 32, 64]
    model = XLSTMUNet(d, in_channels=2, num_classes=3, features=feats, strides=[1, 2, 2, 2])
    assert _n(model) == bot_2d_count(2, 3, feats, d=d)


def test_depth_rule_matches_the_official_indices():
    # ceil(S/2) .. S-1 -> 1 encoder block; ceil((S-1)/2 + 0.5) .. S-2 -> 1 decoder block.
    assert depth_rule([2] * 8, [2] * 7) == ([2, 2, 2, 2, 1, 1, 1, 1], [2, 2, 2, 2, 1, 1, 1])
    assert depth_rule([2] * 7, [2] * 6) == ([2, 2, 2, 2, 1, 1, 1], [2, 2, 2, 2, 1, 1])
    assert depth_rule([2] * 6, [2] * 5) == ([2, 2, 2, 1, 1, 1], [2, 2, 2, 1, 1])
    assert depth_rule([3] * 5, [3] * 4) == ([3, 3, 3, 1, 1], [3, 3, 3, 1])


def test_encoder_placement_rules_2d_and_3d():
    # 2-D: a ViL layer after stage s > 1 of the other parity than S; an extra block after stage 1.
    assert encoder_layer_plan("enc", 2, 8) == [
        "none", "conv", "none", "mixer", "none", "mixer", "none", "mixer",
    ]  # fmt: skip
    assert encoder_layer_plan("enc", 2, 7) == [
        "none", "conv", "mixer", "none", "mixer", "none", "mixer",
    ]  # fmt: skip
    # 3-D: extra blocks after stages 0-2, ViL after every later stage.
    assert encoder_layer_plan("enc", 3, 6) == ["conv", "conv", "conv", "mixer", "mixer", "mixer"]
    assert encoder_layer_plan("bot", 3, 6) == ["none"] * 6


def test_token_rule_channels_where_positions_do_not_exceed_channels():
    strides = [(1, 1)] + [(2, 2)] * 7
    sizes = feature_map_sizes((512, 512), strides)
    assert sizes == [
        (512, 512),
        (256, 256),
        (128, 128),
        (64, 64),
        (32, 32),
        (16, 16),
        (8, 8),
        (4, 4),
    ]
    feats = [32, 64, 128, 256, 512, 512, 512, 512]
    model = XLSTMUNet(2, 1, 2, "enc", feats, [1] + [2] * 7, patch_size=(512, 512))
    # positions 256, 64, 16 <= 512 channels at stages 5-7; 1024 > 512 at stage 4.
    assert model.channel_tokens == [False] * 5 + [True] * 3
    layers = model.encoder.mixer_layers
    assert (
        isinstance(layers[3], MixerLayer) and not layers[3].channel_tokens and layers[3].dim == 256
    )
    assert layers[5].channel_tokens and layers[5].dim == 16 * 16
    assert layers[7].channel_tokens and layers[7].dim == 4 * 4
    # 3-D, anisotropic last stride: [64,160,192] -> last stage 4 x 5 x 6 = 120 <= 320.
    strides3 = [1, 2, 2, 2, 2, (1, 2, 2)]
    feats3 = [32, 64, 128, 256, 320, 320]
    model3 = XLSTMUNet(3, 1, 14, "enc", feats3, strides3, patch_size=(64, 160, 192))
    assert model3.channel_tokens == [False] * 5 + [True]
    assert model3.encoder.mixer_layers[5].dim == 120
    assert model3.encoder.mixer_layers[4].dim == 320  # 4 x 10 x 12 = 480 positions > 320


@pytest.mark.parametrize(
    "d,strides,size",
    [
        (2, [1, 2, 2, 2], (32, 48)),
        (3, [1, 2, (1, 2, 2), 2], (16, 16, 24)),
    ],
)
@pytest.mark.parametrize("variant", ["bot", "enc"])
def test_output_shapes_and_strides(d, strides, size, variant):
    model = XLSTMUNet(d, 2, 3, variant, [4, 8, 8, 16], strides, patch_size=size)
    x = torch.randn(2, 2, *size)
    outs = model(x)
    # Expected by hand: cumulative strides of stages 0..2 (the deepest stage has no output).
    cumulative, factor = [], [1] * d
    for s in strides[:3]:
        s = [s] * d if isinstance(s, int) else s
        factor = [f * t for f, t in zip(factor, s)]
        cumulative.append(tuple(factor))
    assert model.output_strides() == cumulative
    assert [tuple(o.shape) for o in outs] == [
        (2, 3, *(n // f for n, f in zip(size, fac))) for fac in cumulative
    ]
    model.eval()
    assert model(x).shape == (2, 3, *size)


def test_first_stride_must_be_one_and_inputs_must_divide():
    with pytest.raises(ValueError, match="first stage must have stride 1"):
        XLSTMUNet(2, 1, 2, features=[4, 8], strides=[2, 2])
    model = XLSTMUNet(2, 1, 2, features=[4, 8, 16], strides=[1, 2, 2])
    with pytest.raises(ValueError, match="not divisible by the network's total stride"):
        model(torch.randn(1, 1, 30, 32))


def test_a_2d_network_refuses_a_3d_volume_and_wrong_channels():
    model = XLSTMUNet(2, 1, 2, features=[4, 8], strides=[1, 2])
    with pytest.raises(ValueError, match="3-D volume needs spatial_dims=3"):
        model(torch.randn(1, 1, 8, 16, 16))
    with pytest.raises(ValueError, match="expected 1 input channel"):
        model(torch.randn(1, 3, 16, 16))


def test_enc_needs_its_patch_size():
    with pytest.raises(ValueError, match="needs patch_size"):
        XLSTMUNet(2, 1, 2, "enc", [4, 8, 16], [1, 2, 2])
    model = XLSTMUNet(2, 1, 2, "enc", [4, 8, 16, 64], [1, 2, 2, 2], patch_size=(16, 16))
    assert model.channel_tokens[3]  # 2 x 2 positions <= 64 channels
    with pytest.raises(ValueError, match="channels as tokens"):
        model(torch.randn(1, 1, 32, 32))


def test_mixer_layer_is_a_residual_vil_block_over_raster_tokens():
    torch.manual_seed(0)
    layer = MixerLayer(8, 2, "mlstm")
    x = torch.randn(2, 8, 3, 5)
    # Independent expression: raster-flatten, x + mLSTM(LayerNorm(x)), reshape back.
    tokens = x.flatten(2).transpose(1, 2)
    normed = F.layer_norm(tokens, (8,), layer.norm.weight, None, 1e-5)
    expected = tokens + layer.mixer(normed)[0]
    expected = expected.transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(layer(x), expected)
    # The scan is causal in raster order: changing the last position leaves the others.
    x2 = x.clone()
    x2[:, :, -1, -1] += 1.0
    diff = (layer(x2) - layer(x)).abs().flatten(2).amax((0, 1))
    assert diff[:-1].max() == 0 and diff[-1] > 0


def test_reversed_scan_and_channel_tokens():
    torch.manual_seed(0)
    fwd = MixerLayer(8, 3, "mlstm")
    rev = MixerLayer(8, 3, "mlstm", reverse=True)
    rev.load_state_dict(fwd.state_dict())
    x = torch.randn(1, 8, 2, 3, 4)
    # Reversed raster order = the forward layer on the spatially flipped volume, flipped back.
    torch.testing.assert_close(rev(x), fwd(x.flip(2, 3, 4)).flip(2, 3, 4))
    # Channel tokens: the channels are the sequence, each of width H*W*D.
    chan = MixerLayer(24, 3, "mlstm", channel_tokens=True)
    seq = x.reshape(1, 8, 24)
    normed = F.layer_norm(seq, (24,), chan.norm.weight, None, 1e-5)
    torch.testing.assert_close(chan(x), (seq + chan.mixer(normed)[0]).view(x.shape))


def test_official_width_fallback_for_widths_not_divisible_by_4():
    layer = MixerLayer(6, 2, "mlstm")  # official: qkv block 2 and 2 heads
    assert layer.mixer.n_heads == 2 and layer.mixer.q_proj.block_size == 2


def test_he_initialisation_of_the_convolutions():
    model = XLSTMUNet(2, 1, 2, features=[16, 32, 64], strides=[1, 2, 2])
    conv = model.encoder.stages[2][0].conv2  # 64 x 64 x 3 x 3
    fan_in = 64 * 9
    expected_std = math.sqrt(2.0 / (1 + 0.01**2) / fan_in)
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.05
    assert all(
        (m.bias == 0).all()
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d) and m.bias is not None
    )


def _param_shapes(model, skip):
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if skip not in k}


@pytest.mark.parametrize("variant", ["bot", "enc"])
def test_mixer_swap_changes_only_the_mixers_and_each_trains(variant):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32)
    y = (x > 0.5).long()[:, 0]
    shapes = {}
    for mixer in ("mlstm", "mamba", "attention"):
        torch.manual_seed(0)
        model = XLSTMUNet(
            2, 1, 2, variant, [8, 16, 32, 32], [1, 2, 2, 2], patch_size=(32, 32), mixer=mixer
        )
        shapes[mixer] = _param_shapes(model, ".mixer.")
        kinds = {type(m.mixer).__name__ for m in model.modules() if isinstance(m, MixerLayer)}
        assert kinds == {type(create_mixer(mixer, 8)).__name__}
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(8):
            outs = model(x)
            loss = F.cross_entropy(outs[0], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.6 * losses[0], (mixer, losses)
        # The mixer layers get gradients (they are in the computation).
        grads = [
            p.grad
            for m in model.modules()
            if isinstance(m, MixerLayer)
            for p in m.mixer.parameters()
        ]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads if g is not None)
    assert shapes["mlstm"] == shapes["mamba"] == shapes["attention"]


def test_registered_variants():
    model = create_model(
        "xlstm_unet_enc", features=[4, 8, 16], strides=[1, 2, 2], patch_size=(16, 16)
    )
    assert isinstance(model, XLSTMUNet) and model.variant == "enc"
    assert create_model("xlstm_unet_bot", features=[4, 8], strides=[1, 2]).variant == "bot"


def test_full_resolution_skip_switch():
    feats = [4, 8, 16]
    official = XLSTMUNet(2, 1, 2, features=feats, strides=[1, 2, 2])
    with_skip = XLSTMUNet(2, 1, 2, features=feats, strides=[1, 2, 2], full_resolution_skip=True)
    # The last decoder stage's first conv and projection take 2 x 4 instead of 4 channels.
    extra = 4 * 4 * 9 + 4 * 4
    assert _n(with_skip) - _n(official) == extra
