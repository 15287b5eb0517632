"""MambaOut: a hierarchical backbone of Gated CNN blocks, on the core ``gated_cnn`` mixer.

Follows "MambaOut: Do We Really Need Mamba for Vision?" (Weihao Yu and Xinchao Wang, 2024,
arXiv 2405.07992) and its official code (yuweihao/MambaOut), in the layout of timm's port
(``timm.models.mambaout``) so that timm's ``mambaout_*`` state dicts load here and give the same
logits:

- stem: ``conv3x3/2 -> LayerNorm -> GELU -> conv3x3/2 -> LayerNorm`` (stride 4, InternImage's);
- four stages; stages 2-4 open with ``conv3x3/2 -> LayerNorm`` downsampling;
- Gated CNN block ``x + drop_path(mixer(LayerNorm(x)))``, the mixer being the core ``gated_cnn``
  (``fc1`` to ``2 * 8/3 D``, a 7x7 depthwise convolution on ``D`` of the channels, GELU gate,
  ``fc2``); features stay channels-last ``[B, H, W, C]`` throughout, as in timm;
- head: global average pool -> LayerNorm -> ``Linear(C, 4C)`` -> GELU -> LayerNorm -> ``Linear``;
- LayerNorm eps 1e-6, truncated-normal (std 0.02) init of convolutions and linear layers.

Variants (timm's dims and depths): femto 48-96-192-288 / 3-3-9-3 (7.30 M parameters), kobe
48-96-192-288 / 3-3-15-3 (9.14 M), tiny 96-192-384-576 / 3-3-9-3 (26.55 M), small
96-192-384-576 / 3-4-27-3 (48.49 M), base 128-256-512-768 / 3-4-27-3 (84.81 M).

Choices of this implementation (documented, not in the paper):

- ``stem_stride`` (4, 2 or 1) drops the stride of the stem's convolutions for small images
  (CIFAR-10 at 32x32: 1 keeps the first stage at 32x32 tokens); 4 is the paper's.
- ``mixer`` / ``mixer_kwargs`` swap the token mixer by name; the default is ``gated_cnn`` with
  ``conv_dims=2`` (its native 2-D form). Any other registered mixer runs through the contract's
  ``forward_2d`` (raster order unless the mixer has its own 2-D form).
- Loading timm's layout: the block's ``fc1`` / ``conv`` / ``fc2`` live in ``blocks.<j>.mixer``
  here; keys saved by timm (``blocks.<j>.fc1.weight``, ...) and by the official repository
  (``downsample_layers``, ``stages.<i>.<j>``, head ``fc1``/``fc2``) are renamed on load (see
  :func:`checkpoint_filter_fn` and ``GatedCNNBlock._load_from_state_dict``), so
  ``model.load_state_dict(timm_model.state_dict())`` works as it is.
- Input sides must be multiples of the total stride (32 with the paper's stem), so that every
  stage halves the grid exactly; other sizes raise a clear error.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import LayerScale, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs
from timm.models import register_model as timm_register_model
from timm.models._features import feature_take_indices
from torch import nn

from mixerzoo.core.layers import DropPath, get_activation, make_norm
from mixerzoo.core.registry import create_mixer, register_model
from mixerzoo.vision.models._common import CheckpointMixin, check_image, default_cfg

__all__ = ["MambaOut", "GatedCNNBlock", "checkpoint_filter_fn"]

_NORM_EPS = 1e-6


def _layer_norm(dim: int) -> nn.Module:
    return make_norm("layernorm", dim, _NORM_EPS)


class _Stem(nn.Module):
    """``conv3x3 -> LN -> GELU -> conv3x3 -> LN``; ``[B, C, H, W] -> [B, H/s, W/s, D]``."""

    def __init__(self, in_chans: int, dim: int, stride: int = 4, activation: str = "gelu"):
        super().__init__()
        if stride not in (1, 2, 4):
            raise ValueError(f"MambaOut: stem_stride must be 1, 2 or 4, got {stride}")
        first, second = {4: (2, 2), 2: (1, 2), 1: (1, 1)}[stride]
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=first, padding=1)
        self.norm1 = _layer_norm(dim // 2)
        self.act = get_activation(activation)
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=second, padding=1)
        self.norm2 = _layer_norm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.conv1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.norm2(self.conv2(self.act(x)).permute(0, 2, 3, 1))


class _Downsample(nn.Module):
    """``conv3x3/2 -> LN`` on channels-last maps: ``[B, H, W, C] -> [B, H/2, W/2, C']``."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, stride=2, padding=1)
        self.norm = _layer_norm(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class GatedCNNBlock(nn.Module):
    """``x + drop_path(ls(mixer(LayerNorm(x))))`` over a channels-last map ``[B, H, W, D]``.

    Args:
        dim: channels ``D``.
        mixer: registered mixer name (``gated_cnn`` by default, built with ``conv_dims=2``).
        mixer_kwargs: its keyword arguments (for ``gated_cnn``: ``expansion_ratio=8/3``,
            ``kernel_size=7``, ``conv_ratio=1.0``, ``activation="gelu"`` unless given).
        ls_init_value: LayerScale initial value, ``None`` for none (the paper's models have none).
        drop_path: stochastic-depth rate.
    """

    def __init__(
        self,
        dim: int,
        mixer: str = "gated_cnn",
        mixer_kwargs: dict[str, Any] | None = None,
        ls_init_value: float | None = None,
        drop_path: float = 0.0,
    ):
        super().__init__()
        kwargs = dict(mixer_kwargs or {})
        if mixer == "gated_cnn":
            kwargs.setdefault("conv_dims", 2)
        self.norm = _layer_norm(dim)
        self.mixer = create_mixer(mixer, dim, **kwargs)
        self.ls = LayerScale(dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.mixer.forward_2d(self.norm(x))
        return x + self.drop_path(self.ls(y))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # timm's GatedConvBlock keeps fc1/conv/fc2 on the block itself; here they are the mixer's.
        for name in ("fc1", "conv", "fc2"):
            for leaf in ("weight", "bias"):
                old = f"{prefix}{name}.{leaf}"
                if old in state_dict:
                    state_dict[f"{prefix}mixer.{name}.{leaf}"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class _Stage(nn.Module):
    def __init__(self, dim_in: int, dim: int, depth: int, downsample: bool, drop_paths, **block):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = _Downsample(dim_in, dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *[GatedCNNBlock(dim, drop_path=drop_paths[j], **block) for j in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class _MlpHead(nn.Module):
    """MambaOut's head: ``mean over H, W -> LN -> fc -> GELU -> LN -> dropout -> fc``."""

    def __init__(self, dim: int, num_classes: int, mlp_ratio: float = 4, drop_rate: float = 0.0):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.global_pool = "avg"
        self.in_features = dim
        self.norm = _layer_norm(dim)
        self.pre_logits = nn.Sequential(
            OrderedDict(
                fc=nn.Linear(dim, hidden), act=get_activation("gelu"), norm=_layer_norm(hidden)
            )
        )
        self.num_features = hidden
        self.head_dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def reset(
        self, num_classes: int, global_pool: str | None = None, reset_other: bool = False
    ) -> None:
        """New classifier; ``reset_other`` also drops the norm and hidden layer (bare features)."""
        if reset_other:
            self.norm, self.pre_logits = nn.Identity(), nn.Identity()
            self.num_features = self.in_features
        if global_pool is not None:
            if global_pool not in ("", "avg"):
                raise ValueError(f"MambaOut: global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        params = list(self.parameters())
        factory = dict(device=params[0].device, dtype=params[0].dtype) if params else {}
        self.fc = (
            nn.Linear(self.num_features, num_classes, **factory)
            if num_classes > 0
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((1, 2))
        x = self.head_dropout(self.pre_logits(self.norm(x)))
        return x if pre_logits else self.fc(x)


class MambaOut(CheckpointMixin, nn.Module):
    """MambaOut backbone and classifier (see the module docstring).

    Args:
        in_chans: input channels.
        num_classes: classes of the head (0: no classifier, ``forward`` returns pre-logits).
        global_pool: ``"avg"`` or ``""`` (no pooling in ``forward_head``).
        depths: blocks per stage.
        dims: channels per stage.
        mixer: token mixer name (default ``gated_cnn``, the paper's Gated CNN).
        mixer_kwargs: mixer arguments (``expansion_ratio``, ``kernel_size``, ``conv_ratio`` ...).
        stem_stride: 4 (paper), 2 or 1 (small images, see the module docstring).
        ls_init_value: LayerScale init (``None``: none, as the paper's variants).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.

    Shapes:
        ``forward(x [B, in_chans, H, W]) -> logits [B, num_classes]``;
        ``forward_features(x) -> [B, H/s, W/s, dims[-1]]`` channels-last (s = total stride).
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 576),
        mixer: str = "gated_cnn",
        mixer_kwargs: dict[str, Any] | None = None,
        stem_stride: int = 4,
        ls_init_value: float | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        depths, dims = list(depths), list(dims)
        if not depths or len(depths) != len(dims):
            raise ValueError(
                f"MambaOut: depths and dims need one entry per stage, got {depths} and {dims}"
            )
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.output_fmt = "NHWC"
        self.grad_checkpointing = False
        self.stem = _Stem(in_chans, dims[0], stem_stride)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.Sequential()
        self.feature_info = []
        stride, prev, first = stem_stride, dims[0], 0
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i > 0:
                stride *= 2
            self.stages.append(
                _Stage(
                    prev,
                    dim,
                    depth,
                    downsample=i > 0,
                    drop_paths=rates[first : first + depth],
                    mixer=mixer,
                    mixer_kwargs=mixer_kwargs,
                    ls_init_value=ls_init_value,
                )
            )
            self.feature_info.append(dict(num_chs=dim, reduction=stride, module=f"stages.{i}"))
            prev, first = dim, first + depth
        self.total_stride = stride
        self.num_features = dims[-1]
        self.head = _MlpHead(dims[-1], num_classes, drop_rate=drop_rate)
        self.head.reset(num_classes, global_pool)
        self.head_hidden_size = self.head.num_features
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # --- timm model API -------------------------------------------------------------------

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^stem",
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
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (timm's convention): ``indices`` int = last n stages, list = those.

        Returns the intermediates in ``output_fmt`` (``"NCHW"`` or ``"NHWC"``) and, unless
        ``intermediates_only``, the final channels-last features first.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"MambaOut: output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.stages), indices)
        x = self.stem(check_image(x, self.in_chans, self.total_stride, "MambaOut"))
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        if output_fmt == "NCHW":
            intermediates = [y.permute(0, 3, 1, 2).contiguous() for y in intermediates]
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last one ``indices`` needs (and the head)."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_head or max_index < len(self.feature_info) - 1:
            self.head.in_features = self.feature_info[max_index]["num_chs"]
            self.head.reset(0, "", reset_other=True)
            self.num_classes = 0
            self.num_features = self.head_hidden_size = self.head.num_features
        return take

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W] -> [B, H/s, W/s, dims[-1]]`` (channels-last, as timm's MambaOut)."""
        x = self.stem(check_image(x, self.in_chans, self.total_stride, "MambaOut"))
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify channels-last features; ``pre_logits=True`` stops before the fc."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict:
    """Map a MambaOut checkpoint of timm or of the official repository onto this layout.

    Official names (``downsample_layers.0`` = stem, ``downsample_layers.i`` = stage ``i``'s
    downsampling, ``stages.i.j``, ``norm`` and head ``fc1``/``norm``/``fc2``) become timm's; timm's
    block keys ``blocks.j.{fc1,conv,fc2}`` become ``blocks.j.mixer.*``.
    """
    state_dict = state_dict.get("model", state_dict)
    out = {}
    official = "stem.conv1.weight" not in state_dict
    for key, value in state_dict.items():
        if official:
            key = key.replace("downsample_layers.0.", "stem.")
            key = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", key)
            key = re.sub(r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample.", key)
            if key.startswith("norm."):
                key = "head." + key
            elif key.startswith("head."):
                key = key.replace("head.fc1.", "head.pre_logits.fc.")
                key = key.replace("head.norm.", "head.pre_logits.norm.")
                key = key.replace("head.fc2.", "head.fc.")
        key = re.sub(r"(blocks\.\d+)\.(fc1|conv|fc2)\.", r"\1.mixer.\2.", key)
        out[key] = value
    return out


def _cfg(timm_name: str, **kwargs: Any) -> dict[str, Any]:
    # Weights: timm's own (the official ImageNet-1k weights), loaded through the key map above.
    return default_cfg(
        hf_hub_id=f"timm/{timm_name}.in1k",
        crop_pct=1.0,
        test_input_size=(3, 288, 288),
        first_conv="stem.conv1",
        classifier="head.fc",
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        f"mixerzoo_mambaout_{size}": _cfg(f"mambaout_{size}")
        for size in ("femto", "kobe", "tiny", "small", "base")
    }
)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> MambaOut:
    return build_model_with_cfg(
        MambaOut,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **kwargs,
    )


@register_model("mambaout_femto", "vision")
@timm_register_model
def mixerzoo_mambaout_femto(pretrained: bool = False, **kwargs: Any) -> MambaOut:
    """MambaOut-Femto: dims 48-96-192-288, depths 3-3-9-3 (7.30 M parameters)."""
    args = dict(depths=(3, 3, 9, 3), dims=(48, 96, 192, 288))
    return _create("mixerzoo_mambaout_femto", pretrained, **{**args, **kwargs})


@register_model("mambaout_kobe", "vision")
@timm_register_model
def mixerzoo_mambaout_kobe(pretrained: bool = False, **kwargs: Any) -> MambaOut:
    """MambaOut-Kobe: dims 48-96-192-288, depths 3-3-15-3 (9.14 M parameters)."""
    args = dict(depths=(3, 3, 15, 3), dims=(48, 96, 192, 288))
    return _create("mixerzoo_mambaout_kobe", pretrained, **{**args, **kwargs})


@register_model("mambaout_tiny", "vision")
@timm_register_model
def mixerzoo_mambaout_tiny(pretrained: bool = False, **kwargs: Any) -> MambaOut:
    """MambaOut-Tiny: dims 96-192-384-576, depths 3-3-9-3 (26.55 M parameters)."""
    args = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 576))
    return _create("mixerzoo_mambaout_tiny", pretrained, **{**args, **kwargs})


@register_model("mambaout_small", "vision")
@timm_register_model
def mixerzoo_mambaout_small(pretrained: bool = False, **kwargs: Any) -> MambaOut:
    """MambaOut-Small: dims 96-192-384-576, depths 3-4-27-3 (48.49 M parameters)."""
    args = dict(depths=(3, 4, 27, 3), dims=(96, 192, 384, 576))
    return _create("mixerzoo_mambaout_small", pretrained, **{**args, **kwargs})


@register_model("mambaout_base", "vision")
@timm_register_model
def mixerzoo_mambaout_base(pretrained: bool = False, **kwargs: Any) -> MambaOut:
    """MambaOut-Base: dims 128-256-512-768, depths 3-4-27-3 (84.81 M parameters)."""
    args = dict(depths=(3, 4, 27, 3), dims=(128, 256, 512, 768))
    return _create("mixerzoo_mambaout_base", pretrained, **{**args, **kwargs})
