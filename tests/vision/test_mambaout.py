"""MambaOut: timm's own model is the reference (architecture, parameters, weights, logits)."""

from __future__ import annotations

import re

import pytest
import timm
import torch

import mixerzoo.vision  # noqa: F401  (registers the models)
from mixerzoo.core import create_model
from mixerzoo.core.testing import assert_close
from mixerzoo.vision.models.mambaout import MambaOut, checkpoint_filter_fn

SIZES = ("femto", "kobe", "tiny", "small", "base")
# MambaOut paper / timm model cards, millions of parameters.
PAPER_PARAMS = {"femto": 7.30, "kobe": 9.14, "tiny": 26.55, "small": 48.49, "base": 84.81}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", SIZES)
def test_parameters_equal_timm_and_the_paper(size):
    with torch.device("meta"):
        ours = timm.create_model(f"mixerzoo_mambaout_{size}")
        ref = timm.create_model(f"mambaout_{size}")
    assert _count(ours) == _count(ref)
    assert round(_count(ours) / 1e6, 2) == PAPER_PARAMS[size]
    assert list(ours.state_dict()) == [
        re.sub(r"(blocks\.\d+)\.(fc1|conv|fc2)\.", r"\1.mixer.\2.", k) for k in ref.state_dict()
    ]


@pytest.fixture(scope="module")
def timm_femto():
    torch.manual_seed(0)
    return timm.create_model("mambaout_femto").eval()


def test_timm_state_dict_loads_as_is_and_gives_identical_logits(timm_femto):
    ours = timm.create_model("mixerzoo_mambaout_femto").eval()
    ours.load_state_dict(timm_femto.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), timm_femto(x))
        # Features: channels-last, as timm's.
        assert torch.equal(ours.forward_features(x), timm_femto.forward_features(x))


def test_official_checkpoint_layout_loads_through_the_key_map(timm_femto):
    # The official repository's names, written from its layout (downsample_layers, stages.i.j,
    # norm + head.fc1/norm/fc2), reversed from timm's.
    official = {}
    for key, value in timm_femto.state_dict().items():
        key = key.replace("stem.", "downsample_layers.0.")
        key = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", key)
        key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", key)
        key = key.replace("head.norm.", "norm.").replace("head.pre_logits.fc.", "head.fc1.")
        key = key.replace("head.pre_logits.norm.", "head.norm.").replace("head.fc.", "head.fc2.")
        official[key] = value
    ours = timm.create_model("mixerzoo_mambaout_femto").eval()
    ours.load_state_dict(checkpoint_filter_fn({"model": official}, ours))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), timm_femto(x))


def test_pretrained_file_and_checkpoint_path(timm_femto, tmp_path):
    timm_file = tmp_path / "mambaout_femto_timm.pth"
    torch.save(timm_femto.state_dict(), timm_file)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = timm_femto(x)
        pretrained = timm.create_model(
            "mixerzoo_mambaout_femto", pretrained=True, pretrained_cfg_overlay=dict(file=timm_file)
        ).eval()
        assert torch.equal(pretrained(x), expected)
        # timm's checkpoint_path= calls load_state_dict directly: the block remaps the keys.
        from_ckpt = timm.create_model("mixerzoo_mambaout_femto", checkpoint_path=str(timm_file))
        assert torch.equal(from_ckpt.eval()(x), expected)
        # Another head size: timm drops the classifier and keeps the rest.
        ten = timm.create_model(
            "mixerzoo_mambaout_femto",
            pretrained=True,
            num_classes=10,
            pretrained_cfg_overlay=dict(file=timm_file),
        ).eval()
        assert torch.equal(ten.forward_features(x), timm_femto.forward_features(x))
        assert ten(x).shape == (1, 10)


def test_in_chans_adapts_the_stem_as_timm_does(timm_femto, tmp_path):
    timm_file = tmp_path / "w.pth"
    torch.save(timm_femto.state_dict(), timm_file)
    ours = timm.create_model(
        "mixerzoo_mambaout_femto",
        pretrained=True,
        in_chans=1,
        pretrained_cfg_overlay=dict(file=timm_file),
    )
    ref = timm.create_model(
        "mambaout_femto", pretrained=True, in_chans=1, pretrained_cfg_overlay=dict(file=timm_file)
    )
    assert torch.equal(ours.stem.conv1.weight, ref.stem.conv1.weight)
    assert ours(torch.randn(1, 1, 64, 64)).shape == (1, 1000)


def test_timm_api_features_and_heads(timm_femto, tmp_path):
    ours = timm.create_model("mixerzoo_mambaout_femto").eval()
    ours.load_state_dict(timm_femto.state_dict())
    x = torch.randn(2, 3, 96, 128)
    weights = dict(pretrained=True, pretrained_cfg_overlay=dict(file=tmp_path / "w.pth"))
    torch.save(timm_femto.state_dict(), tmp_path / "w.pth")
    features = timm.create_model("mixerzoo_mambaout_femto", features_only=True, **weights).eval()
    ref_features = timm.create_model("mambaout_femto", features_only=True, **weights).eval()
    assert features.feature_info.channels() == ref_features.feature_info.channels()
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        got, want = features(x), ref_features(x)
        assert [g.shape for g in got] == [
            (2, 24, 32, 48),
            (2, 12, 16, 96),
            (2, 6, 8, 192),
            (2, 3, 4, 288),
        ]
        for g, w in zip(got, want):
            assert torch.equal(g, w)
        final, inter = ours.forward_intermediates(x, indices=[1, 3])
        ref_final, ref_inter = timm_femto.forward_intermediates(x, indices=[1, 3])
        assert torch.equal(final, ref_final)
        assert [i.shape for i in inter] == [(2, 96, 12, 16), (2, 288, 3, 4)]  # NCHW by default
        for a, b in zip(inter, ref_inter):
            assert torch.equal(a, b)
        pre = ours.forward_head(ours.forward_features(x), pre_logits=True)
        assert torch.equal(
            pre, timm_femto.forward_head(timm_femto.forward_features(x), pre_logits=True)
        )
        assert pre.shape == (2, ours.head_hidden_size) == (2, 4 * 288)
    ours.reset_classifier(7)
    assert ours(x).shape == (2, 7)
    ours.reset_classifier(0)
    assert ours(x).shape == (2, 4 * 288)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = timm.create_model(
        "mixerzoo_mambaout_femto", num_classes=5, depths=(1, 1, 2, 1), drop_path_rate=0.0
    )
    x = torch.randn(2, 3, 64, 64)
    model(x).square().sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().sum().backward()
    for a, p in zip(plain, model.parameters()):
        assert_close(p.grad, a, rtol=1e-5, atol=1e-6)


def test_mixerzoo_registry_builds_the_same_model():
    torch.manual_seed(0)
    a = create_model("mambaout_femto", num_classes=3)
    torch.manual_seed(0)
    b = timm.create_model("mixerzoo_mambaout_femto", num_classes=3)
    assert isinstance(a, MambaOut) and a.num_classes == 3
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("stem_stride", [1, 2, 4])
def test_small_image_stems(stem_stride):
    model = MambaOut(num_classes=10, depths=(1, 1), dims=(16, 32), stem_stride=stem_stride)
    assert model.total_stride == 2 * stem_stride
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape[1:3] == (
        32 // model.total_stride,
        32 // model.total_stride,
    )


@pytest.mark.parametrize("mixer,kwargs", [("attention", {"n_heads": 2}), ("retention", {})])
def test_token_mixer_is_one_argument(mixer, kwargs):
    """Another mixer runs over the token grid through forward_2d and trains."""
    torch.manual_seed(0)
    model = MambaOut(
        num_classes=3, depths=(1, 1), dims=(16, 32), stem_stride=1, mixer=mixer, mixer_kwargs=kwargs
    )
    assert type(model.stages[0].blocks[0].mixer).__name__ != "GatedCNN"
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bad_inputs_are_clear_errors(timm_femto):
    model = timm.create_model("mixerzoo_mambaout_femto")
    with pytest.raises(ValueError, match=r"3-channel images, got 1 channels.*in_chans=1"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"100x64 is not divisible by .* stride 32.*96x64"):
        model(torch.randn(1, 3, 100, 64))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    state = timm_femto.state_dict()
    missing = {k: v for k, v in state.items() if not k.startswith("head.")}
    with pytest.raises(RuntimeError, match=r"missing keys \[head\.norm\.weight.*strict=False"):
        model.load_state_dict(missing)
    extra = {**state, "stages.9.blocks.0.mixer.fc1.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match=r"unexpected keys \[stages\.9\.blocks\.0\.mixer\.fc1"):
        model.load_state_dict(extra)
    other = timm.create_model("mambaout_femto", num_classes=10).state_dict()
    with pytest.raises(RuntimeError, match=r"(?s)size mismatch for head\.fc\.weight.*num_classes"):
        model.load_state_dict(other)
    with pytest.raises(ValueError, match="training checkpoint"):
        model.load_state_dict({"state_dict": state, "epoch": 3})
