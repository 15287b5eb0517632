"""ViR: parameter counts of the ViT of the same shape, a from-the-definition reference, and the
three equivalent forms (parallel, chunkwise, recurrent)."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import mixerzoo.vision  # noqa: F401
from mixerzoo.core import create_model
from mixerzoo.core.testing import assert_close
from mixerzoo.vision.models.vir import ViR, vir_decays


@pytest.mark.parametrize(
    "name,vit,millions",
    [("vir_small", "vit_small_patch16_224", 22.06), ("vir_base", "vit_base_patch16_224", 86.59)],
)
def test_parameters_equal_the_vit_of_the_same_shape(name, vit, millions):
    """ViT with LayerScale and no class-token position embedding (timm) = ViR, parameter for
    parameter (the retention layer has attention's q, k, v, o projections)."""
    ours = timm.create_model(f"mixerzoo_{name}")
    with torch.device("meta"):
        ref = timm.create_model(vit, init_values=1e-5, no_embed_class=True)
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in ref.parameters())
    assert round(n / 1e6, 2) == millions


def test_decays_span_1_32_to_1_512():
    gammas = vir_decays(6)
    assert gammas[0] == pytest.approx(1 - 1 / 32) and gammas[-1] == pytest.approx(1 - 1 / 512)
    assert all(a < b for a, b in zip(gammas, gammas[1:]))


def _tiny(**kwargs) -> ViR:
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)
    model = ViR(**{**args, **kwargs}).double().eval()
    # Non-trivial LayerScale and biases, so every term of the block shows in the output.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _reference_logits(model: ViR, x: torch.Tensor) -> torch.Tensor:
    """ViR written from the paper's equations, sharing only the weights with the model."""
    b = x.shape[0]
    p = model.patch_size
    w = model.patch_embed.proj.weight  # [D, C, p, p]
    d = w.shape[0]
    patches = F.unfold(x, p, stride=p).transpose(1, 2)  # [B, N, C*p*p] row-major patches
    tokens = patches @ w.reshape(d, -1).T + model.patch_embed.proj.bias + model.pos_embed
    tokens = torch.cat([tokens, model.cls_token.expand(b, -1, -1)], dim=1)  # class token last
    t = tokens.shape[1]
    n = torch.arange(t, dtype=torch.float64)
    for block in model.blocks:
        mixer = block.mixer
        h = F.layer_norm(tokens, (d,), block.norm1.weight, block.norm1.bias, 1e-6)
        q, k, v = mixer.q_proj(h), mixer.k_proj(h), mixer.v_proj(h)
        heads = []
        dk = d // mixer.n_heads
        for i, gamma in enumerate(mixer.gammas):
            sl = slice(i * dk, (i + 1) * dk)
            decay = torch.where(n[:, None] >= n[None, :], gamma ** (n[:, None] - n[None, :]), 0.0)
            o = ((q[..., sl] @ k[..., sl].transpose(1, 2)) * dk**-0.5 * decay) @ v[..., sl]
            o = (o - o.mean(-1, keepdim=True)) / torch.sqrt(
                o.var(-1, unbiased=False, keepdim=True) + 1e-5
            )
            heads.append(o)
        tokens = tokens + block.ls1.gamma * mixer.out_proj(torch.cat(heads, dim=-1))
        h = F.layer_norm(tokens, (d,), block.norm2.weight, block.norm2.bias, 1e-6)
        tokens = tokens + block.ls2.gamma * block.mlp.fc2(F.gelu(block.mlp.fc1(h)))
    out = F.layer_norm(tokens, (d,), model.norm.weight, model.norm.bias, 1e-6)
    return model.head(out[:, -1])


@pytest.mark.parametrize("mode", ["parallel", "chunkwise", "recurrent"])
def test_every_mode_equals_the_reference(mode):
    model = _tiny(chunk_size=3)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    expected = _reference_logits(model, x)
    model.mode = mode
    with torch.no_grad():
        assert_close(model(x), expected, rtol=1e-9, atol=1e-11, msg=f"ViR {mode}")


def test_recurrent_features_and_chunked_streaming_equal_parallel():
    model = _tiny(chunk_size=4)
    x = torch.randn(1, 3, 40, 24, dtype=torch.float64)  # 5 x 3 patches, resampled positions
    with torch.no_grad():
        parallel = model.forward_features(x)
        for chunk in (1, 2, 7, 100):
            streamed = model.forward_recurrent(x, all_tokens=True, chunk_tokens=chunk)
            assert_close(streamed, parallel, rtol=1e-9, atol=1e-11, msg=f"chunk_tokens={chunk}")
        model.mode = "recurrent"
        assert_close(model.forward_features(x), parallel, rtol=1e-9, atol=1e-11)


def test_class_token_sees_every_patch_and_patches_only_earlier_ones():
    model = _tiny()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    x2 = x.clone()
    x2[..., 24:, 24:] += 1.0  # the last patch (raster order)
    with torch.no_grad():
        a, b = model.forward_features(x), model.forward_features(x2)
    changed = (a - b).abs().amax(-1)[0]
    assert torch.all(changed[:-2] == 0), "patches before the changed one do not see it"
    assert changed[-2] > 0 and changed[-1] > 0, "the changed patch and the class token do"


def test_other_image_sizes_resample_the_position_embedding():
    model = _tiny()
    with torch.no_grad():
        for size in [(32, 32), (64, 48), (16, 16)]:
            assert model(torch.randn(1, 3, *size, dtype=torch.float64)).shape == (1, 5)
    # A checkpoint trained at another size loads (its position table is resampled).
    big = _tiny(img_size=64)
    small = timm.create_model(
        "mixerzoo_vir_small",
        img_size=32,
        patch_size=8,
        embed_dim=16,
        depth=2,
        num_heads=2,
        num_classes=5,
    )
    from mixerzoo.vision.models.vir import checkpoint_filter_fn

    small.load_state_dict(checkpoint_filter_fn(big.float().state_dict(), small))


def test_timm_feature_getter_and_intermediates():
    features = timm.create_model(
        "mixerzoo_vir_small", features_only=True, img_size=64, depth=4, out_indices=(1, 3)
    )
    assert features.feature_info.channels() == [384, 384]
    assert features.feature_info.reduction() == [16, 16]
    out = features(torch.randn(2, 3, 64, 96))
    assert [o.shape for o in out] == [(2, 384, 4, 6)] * 2
    model = _tiny()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=[0, 1], return_prefix_tokens=True)
        tokens = model.forward_features(x)
        assert_close(final, tokens, rtol=1e-12, atol=1e-12)
        patches, cls = inter[-1]
        assert patches.shape == (2, 16, 4, 4) and cls.shape == (2, 1, 16)
        nlc = model.forward_intermediates(x, indices=1, output_fmt="NLC", intermediates_only=True)
        assert nlc[0].shape == (2, 16, 16)
        pre = model.forward_head(tokens, pre_logits=True)
        assert_close(pre, tokens[:, -1], rtol=0, atol=0)
    model.reset_classifier(3, global_pool="avg")
    assert model(x).shape == (2, 3)


def test_grad_checkpointing_gives_the_same_gradients():
    model = _tiny().float().train()
    x = torch.randn(2, 3, 32, 32)
    model(x).square().sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().sum().backward()
    for a, p in zip(plain, model.parameters()):
        assert_close(p.grad, a, rtol=1e-5, atol=1e-6)


def test_mamba_as_token_mixer_keeps_the_three_forms_equal():
    model = _tiny(mixer="mamba", mixer_kwargs={"d_state": 4}, chunk_size=3)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        outs = {}
        for mode in ("parallel", "chunkwise", "recurrent"):
            model.mode = mode
            outs[mode] = model(x)
    assert type(model.blocks[0].mixer).__name__ == "Mamba"
    assert_close(outs["recurrent"], outs["parallel"], rtol=1e-9, atol=1e-11)
    assert_close(outs["chunkwise"], outs["parallel"], rtol=1e-9, atol=1e-11)


def test_bidirectional_mixer_refuses_the_recurrent_mode():
    model = _tiny(mixer="attention", mixer_kwargs={"n_heads": 2})
    model.mode = "recurrent"
    with pytest.raises(ValueError, match="recurrent mode needs a causal token mixer"):
        model(torch.randn(1, 3, 32, 32, dtype=torch.float64))


def test_registry_and_bad_inputs():
    model = create_model("vir_small", img_size=32, num_classes=4)
    assert isinstance(model, ViR) and model.grid_size == (2, 2)
    with pytest.raises(ValueError, match=r"not divisible by the model's total stride 16"):
        model(torch.randn(1, 3, 40, 32))
    with pytest.raises(ValueError, match=r"3-channel images, got 4 channels"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="mode must be one of"):
        model.mode = "fast"
    with pytest.raises(RuntimeError, match=r"missing keys \[pos_embed"):
        model.load_state_dict({k: v for k, v in model.state_dict().items() if k != "pos_embed"})


def test_large_patch14_has_a_16x16_grid_at_224():
    model = ViR(img_size=224, patch_size=14, embed_dim=32, depth=1, num_heads=4)
    assert model.grid_size == (16, 16) and model.pos_embed.shape == (1, 256, 32)
    assert math.isclose(vir_decays(16)[-1], 1 - 1 / 512)


def test_weights_from_a_local_file(tmp_path):
    args = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)
    torch.manual_seed(0)
    source = timm.create_model("mixerzoo_vir_small", **args).eval()
    path = tmp_path / "vir.pth"
    torch.save(source.state_dict(), path)
    x = torch.randn(1, 3, 32, 32)
    # The file's head has 5 classes: say so in the overlay, or timm drops it (as for any model).
    overlay = timm.create_model(
        "mixerzoo_vir_small",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=path, num_classes=5),
        **args,
    ).eval()
    from_ckpt = timm.create_model("mixerzoo_vir_small", checkpoint_path=str(path), **args).eval()
    with torch.no_grad():
        assert torch.equal(overlay(x), source(x)) and torch.equal(from_ckpt(x), source(x))
