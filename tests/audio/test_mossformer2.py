"""MossFormer2: parameter count, official checkpoint layout, shapes, a reference of the mask net."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.audio.inference import load_model
from mixerzoo.audio.models.mossformer2 import MossFormer2, mossformer2_official_key_map
from mixerzoo.core.testing import assert_close


def official_state_dict(n=512, layers=24, qk=128, inner=256, spks=2, k=16, seed=0):
    """Random weights in the layout of ClearerVoice-Studio's ``MossFormer`` (speech separation),
    keys and shapes written from its module structure as read."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    sd = {"enc.conv1d.weight": rnd(n, 1, k)}
    m = "mask_net."
    sd[m + "norm.weight"], sd[m + "norm.bias"] = 1 + rnd(n), rnd(n)
    sd[m + "conv1d_encoder.weight"] = rnd(n, n, 1)
    sd[m + "pos_enc.scale"] = torch.ones(1)
    sd[m + "pos_enc.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, n, 2).float() / n))
    blk = m + "mdl.intra_mdl.mossformerM."

    def ffconvm(prefix, d_in, d_out, scalenorm):
        if scalenorm:
            sd[prefix + "mdl.0.g"] = 1 + rnd(1)
        else:
            sd[prefix + "mdl.0.weight"], sd[prefix + "mdl.0.bias"] = 1 + rnd(d_in), rnd(d_in)
        sd[prefix + "mdl.1.weight"], sd[prefix + "mdl.1.bias"] = rnd(d_out, d_in), rnd(d_out)
        sd[prefix + "mdl.3.sequential.1.conv.weight"] = rnd(d_out, 1, 17)

    for i in range(layers):  # Gated_FSMN_Block_Dilated, registered before the FLASH layers
        p = f"{blk}fsmn.{i}."
        sd[p + "conv1.0.weight"], sd[p + "conv1.0.bias"] = rnd(inner, n, 1), rnd(inner)
        sd[p + "conv1.1.weight"] = torch.full((1,), 0.25)
        sd[p + "norm1.weight"], sd[p + "norm1.bias"] = 1 + rnd(inner), rnd(inner)
        ffconvm(p + "gated_fsmn.to_u.", inner, inner, False)
        ffconvm(p + "gated_fsmn.to_v.", inner, inner, False)
        f = p + "gated_fsmn.fsmn."
        sd[f + "linear.weight"], sd[f + "linear.bias"] = rnd(inner, inner), rnd(inner)
        sd[f + "project.weight"] = rnd(inner, inner)
        for d in (1, 2):
            sd[f + f"conv.conv{d}.weight"] = rnd(inner, d, 39, 1)
            sd[f + f"conv.norm{d}.weight"] = 1 + rnd(inner)
            sd[f + f"conv.norm{d}.bias"] = rnd(inner)
            sd[f + f"conv.prelu{d}.weight"] = torch.full((inner,), 0.25)
        sd[p + "norm2.weight"], sd[p + "norm2.bias"] = 1 + rnd(inner), rnd(inner)
        sd[p + "conv2.weight"], sd[p + "conv2.bias"] = rnd(n, inner, 1), rnd(n)
    rot = min(32, qk)
    for i in range(layers):  # FLASH_ShareA_FFConvM
        p = f"{blk}layers.{i}."
        ffconvm(p + "to_hidden.", n, 4 * n, True)
        ffconvm(p + "to_qk.", n, qk, True)
        sd[p + "qk_offset_scale.gamma"], sd[p + "qk_offset_scale.beta"] = rnd(4, qk), rnd(4, qk)
        ffconvm(p + "to_out.", 2 * n, n, True)
        sd[p + "rotary_pos_emb.freqs"] = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
    sd[m + "mdl.intra_mdl.norm.weight"], sd[m + "mdl.intra_mdl.norm.bias"] = 1 + rnd(n), rnd(n)
    sd[m + "mdl.intra_norm.weight"], sd[m + "mdl.intra_norm.bias"] = 1 + rnd(n), rnd(n)
    sd[m + "conv1d_out.weight"], sd[m + "conv1d_out.bias"] = rnd(n * spks, n, 1), rnd(n * spks)
    sd[m + "conv1_decoder.weight"] = rnd(n, n, 1)
    sd[m + "prelu.weight"] = torch.full((1,), 0.25)
    sd[m + "output.0.weight"], sd[m + "output.0.bias"] = rnd(n, n, 1), rnd(n)
    sd[m + "output_gate.0.weight"], sd[m + "output_gate.0.bias"] = rnd(n, n, 1), rnd(n)
    sd["dec.weight"] = rnd(n, 1, k)
    return sd


def test_parameter_count_matches_the_published_model():
    model = MossFormer2()
    ours = sum(p.numel() for p in model.parameters())
    official = official_state_dict()
    # The official count (55.74 M) includes the 16 constant rotary frequencies (a parameter
    # without gradient, shared by the layers) but not the position-embedding buffer.
    official_params = (
        sum(
            v.numel()
            for key, v in official.items()
            if not key.endswith("inv_freq") and "rotary_pos_emb" not in key
        )
        + 16
    )
    assert official_params == 55_735_410
    assert ours + 16 == official_params
    assert round(official_params / 1e6, 2) == 55.74


def test_official_layout_maps_onto_every_parameter():
    official = official_state_dict()
    mapped = mossformer2_official_key_map(official)
    ours = MossFormer2().state_dict()
    assert set(mapped) == set(ours)
    for key, value in mapped.items():
        assert value.shape == ours[key].shape, key


def _ref_masknet_outside_layers(model_sd, official, feats):
    """Official mask net with the 24 layers replaced by identity: norms, projections, positions,
    gated per-speaker masks (the mixers themselves are tested in core)."""
    m = "mask_net."
    x = feats.transpose(1, 2)  # [B, N, S]
    x = F.group_norm(x, 1, official[m + "norm.weight"], official[m + "norm.bias"], eps=1e-8)
    x = F.conv1d(x, official[m + "conv1d_encoder.weight"])
    n, s = x.shape[1], x.shape[2]
    t = torch.arange(s).float()
    sinu = t[:, None] * official[m + "pos_enc.inv_freq"][None]
    emb = torch.cat((sinu.sin(), sinu.cos()), -1) * official[m + "pos_enc.scale"]
    x = x + emb.T
    skip = x
    h = F.layer_norm(
        x.transpose(1, 2),
        (n,),
        official[m + "mdl.intra_mdl.norm.weight"],
        official[m + "mdl.intra_mdl.norm.bias"],
        1e-6,
    ).transpose(1, 2)
    h = F.group_norm(
        h, 1, official[m + "mdl.intra_norm.weight"], official[m + "mdl.intra_norm.bias"], 1e-8
    )
    h = h + skip
    h = F.prelu(h, official[m + "prelu.weight"])
    h = F.conv1d(h, official[m + "conv1d_out.weight"], official[m + "conv1d_out.bias"])
    b = h.shape[0]
    h = h.view(b * 2, n, s)
    h = torch.tanh(F.conv1d(h, official[m + "output.0.weight"], official[m + "output.0.bias"])) * (
        torch.sigmoid(
            F.conv1d(h, official[m + "output_gate.0.weight"], official[m + "output_gate.0.bias"])
        )
    )
    h = F.relu(F.conv1d(h, official[m + "conv1_decoder.weight"]))
    return h.view(b, 2, n, s)


def test_official_checkpoint_end_to_end_without_layers(tmp_path):
    """Load an official-layout checkpoint (0 layers) and compare with the official computation."""
    official = official_state_dict(n=32, layers=0, seed=3)
    path = tmp_path / "mf2.pt"
    torch.save({"model": official}, path)
    model = load_model("mossformer2", path, official=True, channels=32, num_layers=0)
    mix = torch.randn(2, 800)
    with torch.no_grad():
        ours = model(mix)
        feats = F.relu(F.conv1d(mix[:, None], official["enc.conv1d.weight"], stride=8))
        masks = _ref_masknet_outside_layers(None, official, feats.transpose(1, 2))
        sep = feats[:, None] * masks  # [B, 2, N, S]
        wav = torch.stack(
            [
                F.conv_transpose1d(sep[:, i], official["dec.weight"], stride=8)[:, 0]
                for i in range(2)
            ],
            1,
        )
        ref = F.pad(wav, (0, max(0, 800 - wav.shape[-1])))[..., :800]
    assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_official_checkpoint_with_layers_loads(tmp_path):
    official = official_state_dict(n=32, layers=2, qk=16, inner=16, seed=4)
    path = tmp_path / "mf2.pt"
    torch.save({"model": {"module." + k: v for k, v in official.items()}}, path)
    model = load_model(
        "mossformer2",
        path,
        official=True,
        channels=32,
        num_layers=2,
        query_key_dim=16,
        fsmn_channels=16,
        group_size=16,
    )
    ours = model.state_dict()
    assert_close(
        ours["attentions.1.to_hidden.linear.weight"],
        official["mask_net.mdl.intra_mdl.mossformerM.layers.1.to_hidden.mdl.1.weight"],
    )
    assert_close(
        ours["recurrences.0.fsmn.convs.1.weight"],
        official["mask_net.mdl.intra_mdl.mossformerM.fsmn.0.gated_fsmn.fsmn.conv.conv2.weight"][
            ..., 0
        ],
    )
    assert_close(
        ours["recurrences.0.conv1.weight"],
        official["mask_net.mdl.intra_mdl.mossformerM.fsmn.0.conv1.0.weight"][..., 0],
    )
    out = model(torch.randn(1, 1000))
    assert out.shape == (1, 2, 1000) and torch.isfinite(out).all()


def test_shapes_speakers_and_short_input():
    model = MossFormer2(
        num_spks=3, channels=16, num_layers=1, query_key_dim=8, fsmn_channels=8, group_size=8
    ).eval()
    with torch.no_grad():
        for n in (16, 17, 1001):
            assert model(torch.randn(2, n)).shape == (2, 3, n)
    with pytest.raises(ValueError, match="fewer than one encoder frame"):
        model(torch.randn(1, 10))
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        model(torch.randn(10))
