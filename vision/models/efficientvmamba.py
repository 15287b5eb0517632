"""EfficientVMamba: atrous selective scan (EVSS) stages, then MobileNetV2 inverted residuals.

Follows "EfficientVMamba: Atrous Selective Scan for Light Weight Visual Mamba" (Xiaohuan Pei,
Tao Huang and Chang Xu, 2024, arXiv 2403.09977) and its official code (TerryPei/EfficientVMamba,
``EfficientVSSM`` as trained in the released logs):

- patch embedding: ``conv4x4/4 -> LayerNorm`` (channels-last from here on);
- stages 1-2: EVSS blocks ``x + drop_path(CA(SS2D_atrous(LN(x))) + CA(ConvBranch(LN(x))))``:
  the global branch is the core ``ss2d`` mixer with the atrous (skip-sampled) scan in 4
  directions (``d_state=16``, ``ssm_ratio=2``, ``dt_rank=ceil(D/16)``, 3x3 depthwise conv), the
  local branch ``dwconv3x3 -> BatchNorm -> GELU -> conv1x1``, and each branch gated by the
  channel-attention gate ``x * sigmoid(W2 GELU(W1 mean_HW(LN(x))))`` (reduction 1/8); no MLP
  (``MLP_RATIO: 0``);
- stages 3-4: MobileNetV2 inverted residuals (Sandler et al., 2018, arXiv 1801.04381):
  ``conv1x1 (x4) -> BN -> ReLU -> dwconv3x3 -> BN -> ReLU -> SE(1/8 of the expanded width)
  -> conv1x1 -> BN`` plus the identity, with drop path;
- PatchMerging (Swin's ``2x2`` neighbourhood concat -> LayerNorm -> ``Linear(4C, C')``) between
  stages; head ``LayerNorm -> global average pool -> Linear``.

Variants from the official training logs (the official ``vssm_efficient_small.yaml`` says
EMBED_DIM 96, which is the base's width; its log trains width 64): tiny 48-96-192-384 / 2-2-4-2
(6.49 M parameters, 0.8 GMACs at 224), small 64-128-256-512 / 2-2-4-2 (11.27 M, 1.3 G), base
96-192-384-768 / 2-2-9-2 (33.72 M, 4.0 G).

Choices of this implementation (documented):

- The official block applies *one* channel-attention module (shared weights) to both branches,
  ``self.se(x_ssm) + self.se(x_conv)``; so does this one (``shared_gate=True``). The paper's text
  reads as one gate per branch; ``shared_gate=False`` gives that (and a few more parameters).
- Downsampling sits at the start of stages 2-4 (timm's layout) instead of the end of stages 1-3
  (official); the computation is the same. Features are channels-last ``[B, H, W, C]`` like the
  official blocks (``output_fmt = "NHWC"``); the inverted residuals run channels-first inside.
- ``patch_size`` (4, official) may be lowered for small images (CIFAR: 2 or 1).
- ``mixer=`` swaps the global branch's mixer (default ``ss2d`` with ``scan="atrous"``); any
  registered mixer runs through the contract's ``forward_2d``.
- Input sides must be multiples of the total stride (``patch_size * 8``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs
from timm.models import register_model as timm_register_model
from timm.models._features import feature_take_indices
from torch import nn

from mixerzoo.core.layers import DropPath, get_activation, make_norm
from mixerzoo.core.registry import create_mixer, register_model
from mixerzoo.vision.models._common import CheckpointMixin, check_image, default_cfg

__all__ = ["EfficientVMamba", "EVSSBlock", "InvertedResidual", "PatchMerging", "ChannelGate"]

_NORM_EPS = 1e-5  # the official LayerNorms keep PyTorch's default eps


class ChannelGate(nn.Module):
    """Channel attention ``x * sigmoid(W2 GELU(W1 mean_HW(LN(x))))`` on ``[B, H, W, C]``
    (the official ``BiAttn``, channel part; reduction ``ratio``)."""

    def __init__(self, dim: int, ratio: float = 0.125):
        super().__init__()
        hidden = int(dim * ratio)
        self.norm = make_norm("layernorm", dim, _NORM_EPS)
        self.global_reduce = nn.Linear(dim, hidden)
        self.act = get_activation("gelu")
        self.channel_select = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.norm(x).mean((1, 2), keepdim=True)
        return x * torch.sigmoid(self.channel_select(self.act(self.global_reduce(pooled))))


class EVSSBlock(nn.Module):
    """Efficient visual state-space block over ``[B, H, W, C]`` (see the module docstring).

    Args:
        dim: channels ``C``.
        mixer: global branch mixer (``ss2d``; built with ``scan="atrous"`` unless given).
        mixer_kwargs: its arguments.
        shared_gate: one channel-attention module for both branches (official) or one each.
        drop_path: stochastic-depth rate.
    """

    def __init__(
        self,
        dim: int,
        mixer: str = "ss2d",
        mixer_kwargs: dict[str, Any] | None = None,
        shared_gate: bool = True,
        drop_path: float = 0.0,
    ):
        super().__init__()
        kwargs = dict(mixer_kwargs or {})
        if mixer == "ss2d":
            kwargs.setdefault("scan", "atrous")
        elif mixer == "gated_cnn":
            kwargs.setdefault("conv_dims", 2)  # its native 2-D form
        self.norm = make_norm("layernorm", dim, _NORM_EPS)
        self.mixer = create_mixer(mixer, dim, **kwargs)
        self.conv_branch = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.BatchNorm2d(dim),
            get_activation("gelu"),
            nn.Conv2d(dim, dim, 1),
        )
        self.gate = ChannelGate(dim)
        self.conv_gate = self.gate if shared_gate else ChannelGate(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        global_branch, _ = self.mixer.forward_2d(h)
        local = self.conv_branch(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.gate(global_branch) + self.conv_gate(local))


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.act(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class InvertedResidual(nn.Module):
    """MobileNetV2 block with squeeze-and-excitation, channels-first ``[B, C, H, W]``.

    Args:
        dim: channels (in = out, stride 1, so the identity shortcut always applies).
        expand_ratio: hidden width factor (4).
        se_ratio: SE reduction of the hidden width (0.125).
        drop_path: stochastic-depth rate of the residual branch.
    """

    def __init__(
        self, dim: int, expand_ratio: float = 4, se_ratio: float = 0.125, drop_path: float = 0.0
    ):
        super().__init__()
        mid = int(dim * expand_ratio)
        self.conv_pw = nn.Sequential(
            nn.Conv2d(dim, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
        )
        self.conv_dw = nn.Sequential(
            nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        self.se = _SqueezeExcite(mid, max(1, int(mid * se_ratio)))
        self.conv_pw2 = nn.Sequential(nn.Conv2d(mid, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.conv_pw2(self.se(self.conv_dw(self.conv_pw(x)))))


class PatchMerging(nn.Module):
    """Swin's patch merging on ``[B, H, W, C]``: concat each ``2x2`` neighbourhood (order
    ``(0,0), (1,0), (0,1), (1,1)``), LayerNorm, ``Linear(4C, C', bias=False)``."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.norm = make_norm("layernorm", 4 * dim, _NORM_EPS)
        self.reduction = nn.Linear(4 * dim, dim_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = (x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2])
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class _PatchEmbed(nn.Module):
    """``conv(p x p, stride p) -> LayerNorm``: ``[B, C, H, W] -> [B, H/p, W/p, D]``."""

    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = make_norm("layernorm", dim, _NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class _Stage(nn.Module):
    """Optional PatchMerging, then EVSS blocks (channels-last) or inverted residuals."""

    def __init__(
        self,
        dim_in: int,
        dim: int,
        depth: int,
        downsample: bool,
        inverted_residual: bool,
        drop_paths: list[float],
        **block: Any,
    ):
        super().__init__()
        self.grad_checkpointing = False
        self.channels_first = inverted_residual
        self.downsample = PatchMerging(dim_in, dim) if downsample else nn.Identity()
        if self.channels_first:
            blocks = [InvertedResidual(dim, drop_path=drop_paths[j]) for j in range(depth)]
        else:
            blocks = [EVSSBlock(dim, drop_path=drop_paths[j], **block) for j in range(depth)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.channels_first:
            x = x.permute(0, 3, 1, 2)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x.permute(0, 2, 3, 1) if self.channels_first else x


class EfficientVMamba(CheckpointMixin, nn.Module):
    """EfficientVMamba backbone and classifier (see the module docstring).

    Args:
        in_chans: input channels.
        num_classes: classes (0: no classifier).
        global_pool: ``"avg"`` or ``""``.
        depths: blocks per stage (4 stages).
        dims: channels per stage.
        ssm_stages: how many leading stages use EVSS blocks (2); the rest use inverted residuals.
        patch_size: patch embedding stride (4).
        mixer: global-branch mixer of the EVSS blocks (``ss2d``).
        mixer_kwargs: its arguments (``d_state``, ``ssm_ratio``, ``dt_rank``, ``scan`` ...).
        shared_gate: see :class:`EVSSBlock`.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.

    Shapes:
        ``forward(x [B, in_chans, H, W]) -> [B, num_classes]``;
        ``forward_features(x) -> [B, H/s, W/s, dims[-1]]`` channels-last (``s = 8 * patch_size``).
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (2, 2, 4, 2),
        dims: Sequence[int] = (48, 96, 192, 384),
        ssm_stages: int = 2,
        patch_size: int = 4,
        mixer: str = "ss2d",
        mixer_kwargs: dict[str, Any] | None = None,
        shared_gate: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        depths, dims = list(depths), list(dims)
        if len(depths) != len(dims) or not depths:
            raise ValueError(
                f"EfficientVMamba: depths and dims need one entry per stage, got {depths}, {dims}"
            )
        if global_pool not in ("avg", ""):
            raise ValueError(
                f"EfficientVMamba: global_pool must be 'avg' or '', got {global_pool!r}"
            )
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.output_fmt = "NHWC"
        self.patch_embed = _PatchEmbed(in_chans, dims[0], patch_size)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.Sequential()
        self.feature_info = []
        stride, first = patch_size, 0
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i > 0:
                stride *= 2
            stage = _Stage(
                dims[i - 1] if i > 0 else dim,
                dim,
                depth,
                downsample=i > 0,
                inverted_residual=i >= ssm_stages,
                drop_paths=rates[first : first + depth],
                mixer=mixer,
                mixer_kwargs=mixer_kwargs,
                shared_gate=shared_gate,
            )
            self.stages.append(stage)
            self.feature_info.append(dict(num_chs=dim, reduction=stride, module=f"stages.{i}"))
            first += depth
        self.total_stride = stride
        self.num_features = self.head_hidden_size = dims[-1]
        self.norm = make_norm("layernorm", dims[-1], _NORM_EPS)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The official init: truncated normal for linear layers (the SS2D projections that are
        # plain parameters keep their own init), unit LayerNorms.
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        return {"A_logs", "Ds"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^patch_embed",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(
                    f"EfficientVMamba: global_pool must be 'avg' or '', got {global_pool!r}"
                )
            self.global_pool = global_pool
        factory = dict(device=self.norm.weight.device, dtype=self.norm.weight.dtype)
        self.head = (
            nn.Linear(self.num_features, num_classes, **factory)
            if num_classes > 0
            else nn.Identity()
        )

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(check_image(x, self.in_chans, self.total_stride, "EfficientVMamba"))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (timm's convention), ``"NCHW"`` or ``"NHWC"``."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(
                f"EfficientVMamba: output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}"
            )
        take, max_index = feature_take_indices(len(self.stages), indices)
        x = self._stem(x)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                last = norm and i == len(self.stages) - 1
                intermediates.append(self.norm(x) if last else x)
        if output_fmt == "NCHW":
            intermediates = [y.permute(0, 3, 1, 2).contiguous() for y in intermediates]
        return intermediates if intermediates_only else (self.norm(x), intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last one ``indices`` needs (and the norm / head)."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.norm = nn.Identity()
        if prune_head or max_index < len(self.feature_info) - 1:
            self.num_features = self.feature_info[max_index]["num_chs"]
            self.head_drop, self.head, self.num_classes = nn.Identity(), nn.Identity(), 0
        return take

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W] -> [B, H/s, W/s, dims[-1]]`` (channels-last, normalised)."""
        return self.norm(self.stages(self._stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        f"mixerzoo_efficientvmamba_{size}": default_cfg(
            first_conv="patch_embed.proj", classifier="head"
        )
        for size in ("tiny", "small", "base")
    }
)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> EfficientVMamba:
    return build_model_with_cfg(
        EfficientVMamba,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **kwargs,
    )


@register_model("efficientvmamba_tiny", "vision")
@timm_register_model
def mixerzoo_efficientvmamba_tiny(pretrained: bool = False, **kwargs: Any) -> EfficientVMamba:
    """EfficientVMamba-T: dims 48-96-192-384, depths 2-2-4-2 (6.49 M parameters, 0.8 GMACs)."""
    args = dict(depths=(2, 2, 4, 2), dims=(48, 96, 192, 384))
    return _create("mixerzoo_efficientvmamba_tiny", pretrained, **{**args, **kwargs})


@register_model("efficientvmamba_small", "vision")
@timm_register_model
def mixerzoo_efficientvmamba_small(pretrained: bool = False, **kwargs: Any) -> EfficientVMamba:
    """EfficientVMamba-S: dims 64-128-256-512, depths 2-2-4-2 (11.27 M parameters, 1.3 GMACs)."""
    args = dict(depths=(2, 2, 4, 2), dims=(64, 128, 256, 512))
    return _create("mixerzoo_efficientvmamba_small", pretrained, **{**args, **kwargs})


@register_model("efficientvmamba_base", "vision")
@timm_register_model
def mixerzoo_efficientvmamba_base(pretrained: bool = False, **kwargs: Any) -> EfficientVMamba:
    """EfficientVMamba-B: dims 96-192-384-768, depths 2-2-9-2 (33.72 M parameters, 4.0 GMACs)."""
    args = dict(depths=(2, 2, 9, 2), dims=(96, 192, 384, 768))
    return _create("mixerzoo_efficientvmamba_base", pretrained, **{**args, **kwargs})
