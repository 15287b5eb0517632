"""EfficientVMamba: the official variants' parameter counts, the block's structure, timm's API."""

from __future__ import annotations

import pytest
import timm
import torch

import mixerzoo.vision  # noqa: F401
from mixerzoo.core import create_model
from mixerzoo.core.testing import assert_close
from mixerzoo.vision.models.efficientvmamba import EfficientVMamba, PatchMerging

# Parameters printed by the official training logs (classification/logs/log_efficient_vmamba_*).
OFFICIAL_PARAMS = {"tiny": 6.494, "small": 11.274, "base": 33.717}


@pytest.mark.parametrize("size", sorted(OFFICIAL_PARAMS))
def test_parameters_equal_the_official_logs(size):
    with torch.device("meta"):
        model = timm.create_model(f"mixerzoo_efficientvmamba_{size}")
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 3) == OFFICIAL_PARAMS[size]


def _small(**kwargs) -> EfficientVMamba:
    torch.manual_seed(0)
    args = dict(num_classes=4, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), patch_size=2)
    return EfficientVMamba(**{**args, **kwargs})


def test_stage_layout_follows_the_paper():
    model = _small(depths=(2, 1, 2, 1))
    kinds = [type(stage.blocks[0]).__name__ for stage in model.stages]
    assert kinds == ["EVSSBlock", "EVSSBlock", "InvertedResidual", "InvertedResidual"]
    block = model.stages[0].blocks[0]
    assert type(block.mixer).__name__ == "SS2D" and block.mixer.scan == "atrous"
    assert block.gate is block.conv_gate  # one channel gate for both branches (official)
    assert [type(s.downsample).__name__ for s in model.stages] == [
        "Identity",
        "PatchMerging",
        "PatchMerging",
        "PatchMerging",
    ]
    separate = _small(shared_gate=False).stages[0].blocks[0]
    assert separate.gate is not separate.conv_gate


def test_evss_block_is_the_sum_of_two_gated_branches():
    model = _small().double().eval()
    block = model.stages[0].blocks[0]
    x = torch.randn(2, 6, 6, 8, dtype=torch.float64)
    h = block.norm(x)
    ssm, _ = block.mixer.forward_2d(h)
    conv = block.conv_branch(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def gate(y):
        g = block.gate
        pooled = torch.nn.functional.layer_norm(y, (8,), g.norm.weight, g.norm.bias).mean((1, 2))
        return (
            y
            * torch.sigmoid(g.channel_select(torch.nn.functional.gelu(g.global_reduce(pooled))))[
                :, None, None
            ]
        )

    with torch.no_grad():
        assert_close(block(x), x + gate(ssm) + gate(conv), rtol=1e-12, atol=1e-12)


def test_patch_merging_order_is_swins():
    merge = PatchMerging(1, 4)
    with torch.no_grad():
        merge.reduction.weight.copy_(torch.eye(4))
        merge.norm.weight.fill_(1.0)
        merge.norm.bias.zero_()
    x = torch.arange(16.0).view(1, 4, 4, 1)
    out = merge.reduction(
        torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    )
    assert out[0, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]  # (0,0), (1,0), (0,1), (1,1)


def test_timm_api():
    model = timm.create_model(
        "mixerzoo_efficientvmamba_tiny", num_classes=3, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)
    ).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
        final, inter = model.forward_intermediates(x)
        assert [i.shape for i in inter] == [
            (2, 8, 16, 24),
            (2, 16, 8, 12),
            (2, 24, 4, 6),
            (2, 32, 2, 3),
        ]
        assert_close(final, model.forward_features(x), rtol=0, atol=0)
        assert model.forward_head(final, pre_logits=True).shape == (2, 32)
    features = timm.create_model(
        "mixerzoo_efficientvmamba_tiny",
        features_only=True,
        dims=(8, 16, 24, 32),
        depths=(1, 1, 1, 1),
        out_indices=(1, 3),
    )
    assert features.feature_info.channels() == [16, 32]
    assert features.feature_info.reduction() == [8, 32]
    assert [f.shape for f in features(x)] == [(2, 8, 12, 16), (2, 2, 3, 32)]  # channels-last
    model.reset_classifier(7)
    assert model(x).shape == (2, 7)
    model.set_grad_checkpointing(True)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_attention_in_the_scan_stages_is_one_argument():
    torch.manual_seed(0)
    model = _small(mixer="attention", mixer_kwargs={"n_heads": 2})
    assert type(model.stages[0].blocks[0].mixer).__name__ == "Attention"
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_registry_and_bad_inputs():
    model = create_model("efficientvmamba_tiny", num_classes=2)
    assert isinstance(model, EfficientVMamba)
    with pytest.raises(ValueError, match=r"48x64 is not divisible by the model's total stride 32"):
        model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match=r"3-channel images, got 1 channels"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(RuntimeError, match=r"unexpected keys \[extra"):
        model.load_state_dict({**model.state_dict(), "extra": torch.zeros(1)})
