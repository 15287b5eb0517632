"""xLSTM-UNet: a residual encoder U-Net with Vision-LSTM layers, in 2-D and 3-D (and U-Mamba and a
transformer U-Net by changing the mixer name).

Follows "xLSTM-UNet can be an Effective 2D & 3D Medical Image Segmentation Backbone with
Vision-LSTM (ViL) better than its Mamba Counterpart" (Chen et al., 2024, arXiv 2407.01530) as its
official code defines it (an nnU-Net v2 fork whose networks are U-Mamba's, "Enhancing Long-range
Dependency for Biomedical Image Segmentation", Ma, Li & Wang, 2024, arXiv 2401.04722, with the
Mamba layer replaced by a ViL block). The network is built from an nnU-Net plan (features, strides
and kernel sizes per stage, blocks per stage, patch size):

- **Encoder.** A stem (one residual block from the input channels to ``features[0]`` with a 1x1
  projection, then ``n_blocks[0] - 1`` plain residual blocks), then one stage per entry of
  ``features``: a residual block with the stage's stride and a 1x1 projection on its skip path,
  then ``n_blocks[s] - 1`` residual blocks. A residual block is conv(k) -> InstanceNorm ->
  LeakyReLU -> conv(k) -> InstanceNorm, plus the skip, then LeakyReLU (convs with bias,
  InstanceNorm affine, eps 1e-5, LeakyReLU slope 0.01).
- **Decoder.** Per stage from the deepest: nearest-neighbour upsampling by the encoder stride and
  a 1x1 conv to the skip's width, concatenation with the encoder skip, a residual block (with
  projection) and ``n_blocks_decoder[s] - 1`` residual blocks, and a 1x1 segmentation head.
  With deep supervision the network returns the logits of every decoder stage (full resolution
  first) while training; in ``eval()`` only the full-resolution logits.
- **Depth rule (official).** The deeper half of the encoder keeps one residual block per stage
  (``n_blocks[s] = 1`` for ``s >= ceil(S / 2)``), and so do the higher-resolution decoder stages
  (``n_blocks_decoder[s] = 1`` for ``ceil((S - 1) / 2 + 0.5) <= s < S - 1``), ``S`` stages.
- **Bot** (``variant="bot"``): one ViL layer on the bottleneck (the deepest encoder output),
  its flattened positions as tokens.
- **Enc** (``variant="enc"``): layers after encoder stages. 2-D: a ViL layer after stage ``s``
  when ``s > 1`` and ``s`` has the other parity than ``S`` (so the last stage always has one), and
  an extra residual block after stage 1. 3-D: an extra residual block after stages 0-2 and a ViL
  layer after every stage from 3 on.
- **Token rule (Enc).** A stage whose feature map (the patch size divided by the strides so far)
  has no more positions than channels uses the channels as tokens, each of width ``H*W(*D)``;
  otherwise the positions are the tokens, of width ``C``. So the Enc variant is tied to its
  ``patch_size`` (inference runs by sliding window over patches of that size).
- **ViL layer.** ``x + mixer(LayerNorm(x))`` over the tokens in raster (row-major) order, the
  pre-norm with a weight and no bias; the mixer is the core ``mlstm`` (ViL's mLSTM block:
  up-projection x2, causal conv k=4, block-diagonal q/k/v of block 4, mLSTM cell with 4 heads,
  learnable skip, SiLU gate, down-projection; a width not divisible by 4 uses blocks and heads of
  2, as the official code does). The official code runs every ViL layer top-left first
  (``ROWWISE_FROM_TOP_LEFT``); ``scan="alternate"`` reverses every second layer as Vision-LSTM
  (Alkin et al., 2024, arXiv 2406.04303) does in its stack. Mixers run in float32 (autocast off),
  as the official layer does.
- **Initialisation.** Kaiming-normal (negative slope 1e-2) conv weights and zero conv biases
  (nnU-Net's ``InitWeights_He``); the mixers keep their own initialisation.

**Mixer switch.** ``mixer`` names any registered mixer: ``"mamba"`` gives U-Mamba's selective-SSM
layers in the same places, ``"attention"`` a transformer U-Net (non-causal multi-head attention,
no positional encoding: the conv features carry position), with no other change.

Deviations, written down:

- The official 2-D decoder does not concatenate the full-resolution encoder skip in its last
  stage (its 3-D decoder does). Kept as the default (``full_resolution_skip=None``); pass
  ``True``/``False`` to choose.
- The official ViL wrapper also creates a LayerNorm it never applies (``2 * C`` parameters per
  layer); it is not created here, so the official count is higher by exactly that.
- With ``mixer="mamba"`` the layers sit where xLSTM-UNet puts its ViL layers, with the residual
  and bias-free pre-norm of the ViL block. U-Mamba's own networks differ in three details: their
  Mamba layers have no residual, their pre-norm has a bias, and U-Mamba Enc puts a layer after
  every 3-D stage / after every other 2-D stage including stages 0-1 (without the extra residual
  blocks). ``benchmarks/medical.py`` prints the parameter counts of both.
- nnU-Net's plans give the strides and sizes; inputs must be divisible by the total stride on
  every axis (a clear error says so), where the official code would silently misalign.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mixerzoo.core.registry import create_mixer, register_model

__all__ = [
    "XLSTMUNet",
    "ResidualBlock",
    "MixerLayer",
    "default_mixer_kwargs",
    "depth_rule",
    "encoder_layer_plan",
    "feature_map_sizes",
]

IntOrSeq = int | Sequence[int]


def _per_axis(value: IntOrSeq, spatial_dims: int, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * spatial_dims
    value = tuple(int(v) for v in value)
    if len(value) != spatial_dims:
        raise ValueError(
            f"{what} {value} has {len(value)} entries, expected {spatial_dims} (one per spatial axis)"
        )
    return value


def _per_stage(value: Any, n_stages: int, what: str) -> list[Any]:
    if isinstance(value, int):
        return [value] * n_stages
    value = list(value)
    if len(value) != n_stages:
        raise ValueError(f"{what} has {len(value)} entries, expected {n_stages} (one per stage)")
    return value


def _conv(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def _norm(spatial_dims: int, channels: int) -> nn.Module:
    cls = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims]
    return cls(channels, eps=1e-5, affine=True)


def depth_rule(
    n_blocks: Sequence[int], n_blocks_decoder: Sequence[int]
) -> tuple[list[int], list[int]]:
    """The official rule: one block in the deeper half of the encoder and in the higher-resolution
    decoder stages.

    Args:
        n_blocks: residual blocks per encoder stage (nnU-Net's ``n_conv_per_stage_encoder``).
        n_blocks_decoder: residual blocks per decoder stage, deepest first
            (``n_conv_per_stage_decoder``).

    Returns:
        The two lists after the rule.
    """
    n = len(n_blocks)
    enc, dec = list(n_blocks), list(n_blocks_decoder)
    for s in range(math.ceil(n / 2), n):
        enc[s] = 1
    for s in range(math.ceil((n - 1) / 2 + 0.5), n - 1):
        dec[s] = 1
    return enc, dec


def feature_map_sizes(
    patch_size: Sequence[int], strides: Sequence[Sequence[int]]
) -> list[tuple[int, ...]]:
    """Spatial size of each encoder stage's output for an input of ``patch_size`` (floor division
    by each stage's stride, as the official code computes it)."""
    sizes, size = [], tuple(patch_size)
    for stride in strides:
        size = tuple(i // j for i, j in zip(size, stride))
        sizes.append(size)
    return sizes


def encoder_layer_plan(variant: str, spatial_dims: int, n_stages: int) -> list[str]:
    """What follows each encoder stage: ``"mixer"``, ``"conv"`` (an extra residual block) or
    ``"none"`` — the official placement of xLSTM-UNet (see the module docstring)."""
    if variant == "bot":
        return ["none"] * n_stages
    plan = []
    for s in range(n_stages):
        if spatial_dims == 2:
            if bool(s % 2) ^ bool(n_stages % 2) and s > 1:
                plan.append("mixer")
            elif s == 1:
                plan.append("conv")
            else:
                plan.append("none")
        else:
            plan.append("conv" if s < 3 else "mixer")
    return plan


def default_mixer_kwargs(mixer: str, dim: int) -> dict[str, Any]:
    """Per-mixer defaults for a layer of width ``dim``.

    - ``mlstm``: ViL's block size 4 and 4 cell heads; a width not divisible by 4 uses 2 and 2
      (the official fallback).
    - ``attention``: 8 heads, or the largest of 4, 2, 1 that divides ``dim``; non-causal.
    - any other mixer: its own defaults (``mamba``: d_state 16, d_conv 4, expand 2, as U-Mamba).
    """
    if mixer == "mlstm":
        block = 4 if dim % 4 == 0 else 2
        return {"n_heads": block, "qkv_block_size": block}
    if mixer == "attention":
        return {"n_heads": next(h for h in (8, 4, 2, 1) if dim % h == 0), "causal": False}
    return {}


class ResidualBlock(nn.Module):
    """conv(k, stride) -> IN -> LeakyReLU -> conv(k) -> IN, + skip, -> LeakyReLU.

    The skip is the identity, or a 1x1 conv with the block's stride (``project=True``, the
    official ``BasicResBlock(use_1x1conv=True)``, which has it even when the shapes agree).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: conv kernel per axis (padding ``k // 2``).
        stride: stride of the first conv (and of the projection).
        project: 1x1 conv on the skip path.

    Shapes:
        ``[B, in, *S] -> [B, out, *S / stride]``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrSeq = 3,
        stride: IntOrSeq = 1,
        project: bool = False,
    ):
        super().__init__()
        kernel = _per_axis(kernel_size, spatial_dims, "kernel_size")
        stride = _per_axis(stride, spatial_dims, "stride")
        padding = tuple(k // 2 for k in kernel)
        if not project and (in_channels != out_channels or any(s != 1 for s in stride)):
            raise ValueError(
                "ResidualBlock: an identity skip needs in_channels == out_channels and stride 1; "
                "pass project=True"
            )
        conv = _conv(spatial_dims)
        self.conv1 = conv(in_channels, out_channels, kernel, stride=stride, padding=padding)
        self.norm1 = _norm(spatial_dims, out_channels)
        self.act1 = nn.LeakyReLU(0.01, inplace=True)
        self.conv2 = conv(out_channels, out_channels, kernel, padding=padding)
        self.norm2 = _norm(spatial_dims, out_channels)
        self.act2 = nn.LeakyReLU(0.01, inplace=True)
        self.conv3 = conv(in_channels, out_channels, 1, stride=stride) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        skip = self.conv3(x) if self.conv3 is not None else x
        return self.act2(y + skip)


def _stage(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel: IntOrSeq,
    stride: IntOrSeq,
    n_blocks: int,
) -> nn.Sequential:
    return nn.Sequential(
        ResidualBlock(spatial_dims, in_channels, out_channels, kernel, stride, project=True),
        *[
            ResidualBlock(spatial_dims, out_channels, out_channels, kernel)
            for _ in range(n_blocks - 1)
        ],
    )


class MixerLayer(nn.Module):
    """A residual pre-norm mixer over a feature map: ``x + mixer(LayerNorm(x))`` on its tokens.

    Tokens are the positions in raster order (width = channels), or, with ``channel_tokens``, the
    channels (width = number of positions, which must then equal ``dim``). Two-dimensional
    position tokens go through the mixer's ``forward_2d`` (the one 2-D interface of the mixer
    contract; raster order unless the mixer has a native 2-D form), everything else through
    ``forward`` on the flattened sequence. ``reverse`` runs the layer on the reversed sequence
    and flips its output back (ViL's ``ROWWISE_FROM_BOT_RIGHT``).

    Args:
        dim: token width (channels, or positions with ``channel_tokens``).
        spatial_dims: 2 or 3.
        mixer: registered mixer name.
        mixer_kwargs: overrides of :func:`default_mixer_kwargs`.
        channel_tokens: use the channels as tokens.
        reverse: reversed scan order.

    Shapes:
        ``[B, C, *S] -> [B, C, *S]``.
    """

    def __init__(
        self,
        dim: int,
        spatial_dims: int,
        mixer: str = "mlstm",
        mixer_kwargs: dict[str, Any] | None = None,
        channel_tokens: bool = False,
        reverse: bool = False,
    ):
        super().__init__()
        self.dim = int(dim)
        self.spatial_dims = spatial_dims
        self.channel_tokens = channel_tokens
        self.reverse = reverse
        self.mixer_name = mixer
        # ViL's pre-norm: a weight and no bias.
        self.norm = nn.LayerNorm(self.dim, bias=False)
        kwargs = {**default_mixer_kwargs(mixer, self.dim), **(mixer_kwargs or {})}
        self.mixer = create_mixer(mixer, self.dim, **kwargs)

    def _mix(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, T, D]`` or ``[B, H, W, D]`` -> residual mixer output of the same shape."""
        grid = tokens.dim() == 4
        flip = (1, 2) if grid else (1,)
        y = self.norm(tokens)
        if self.reverse:
            y = y.flip(flip)
        y = self.mixer.forward_2d(y)[0] if grid else self.mixer(y)[0]
        if self.reverse:
            y = y.flip(flip)
        return tokens + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The mixers' exponential gates and scans stay in float32, as in the official layer.
        with torch.autocast(device_type=x.device.type, enabled=False):
            dtype = x.dtype
            if dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            b, c, *spatial = x.shape
            if self.channel_tokens:
                n_positions = math.prod(spatial)
                if n_positions != self.dim:
                    raise ValueError(
                        f"MixerLayer: this layer uses the channels as tokens of width {self.dim} "
                        f"(the feature map of the planned patch size) but got a feature map of "
                        f"{tuple(spatial)} = {n_positions} positions; run the network on inputs "
                        f"of its patch_size (sliding-window inference does)"
                    )
                y = self._mix(x.reshape(b, c, n_positions)).view(x.shape)
            elif self.spatial_dims == 2:
                y = self._mix(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            else:
                y = self._mix(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(x.shape)
            return y.to(dtype).contiguous()

    def extra_repr(self) -> str:
        tokens = "channels" if self.channel_tokens else "positions"
        return f"dim={self.dim}, tokens={tokens}, reverse={self.reverse}"


class _Upsample(nn.Module):
    """Nearest-neighbour upsampling by ``scale`` then a 1x1 conv (the official ``UpsampleLayer``)."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, scale: Sequence[int]
    ):
        super().__init__()
        self.conv = _conv(spatial_dims)(in_channels, out_channels, kernel_size=1)
        self.scale = tuple(float(s) for s in scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


class _Encoder(nn.Module):
    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: list[int],
        kernels: list[tuple[int, ...]],
        strides: list[tuple[int, ...]],
        n_blocks: list[int],
        layers: list[nn.Module] | None,
    ):
        super().__init__()
        self.stem = _stage(spatial_dims, in_channels, features[0], kernels[0], 1, n_blocks[0])
        self.stages = nn.ModuleList(
            _stage(
                spatial_dims,
                features[s - 1] if s else features[0],
                features[s],
                kernels[s],
                strides[s],
                n_blocks[s],
            )
            for s in range(len(features))
        )
        self.mixer_layers = nn.ModuleList(layers) if layers is not None else None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for s, stage in enumerate(self.stages):
            x = stage(x)
            if self.mixer_layers is not None:
                x = self.mixer_layers[s](x)
            skips.append(x)
        return skips


class _Decoder(nn.Module):
    def __init__(
        self,
        spatial_dims: int,
        features: list[int],
        kernels: list[tuple[int, ...]],
        strides: list[tuple[int, ...]],
        n_blocks: list[int],
        num_classes: int,
        full_resolution_skip: bool,
    ):
        super().__init__()
        n = len(features)
        self.full_resolution_skip = full_resolution_skip
        upsample, stages, heads = [], [], []
        for s in range(n - 1):
            below, skip = features[n - 1 - s], features[n - 2 - s]
            concat = s < n - 2 or full_resolution_skip
            upsample.append(_Upsample(spatial_dims, below, skip, strides[n - 1 - s]))
            stages.append(
                _stage(
                    spatial_dims,
                    2 * skip if concat else skip,
                    skip,
                    kernels[n - 2 - s],
                    1,
                    n_blocks[s],
                )
            )
            heads.append(_conv(spatial_dims)(skip, num_classes, 1))
        self.upsample_layers = nn.ModuleList(upsample)
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList(heads)

    def forward(self, skips: list[torch.Tensor], all_outputs: bool) -> list[torch.Tensor]:
        x, outputs = skips[-1], []
        last = len(self.stages) - 1
        for s, stage in enumerate(self.stages):
            x = self.upsample_layers[s](x)
            if s < last or self.full_resolution_skip:
                x = torch.cat((x, skips[-(s + 2)]), dim=1)
            x = stage(x)
            if all_outputs or s == last:
                outputs.append(self.seg_layers[s](x))
        return outputs[::-1]


@register_model("xlstm_unet", domain="medical")
@register_model("xlstm_unet_bot", domain="medical", variant="bot")
@register_model("xlstm_unet_enc", domain="medical", variant="enc")
class XLSTMUNet(nn.Module):
    """xLSTM-UNet (Bot or Enc) for 2-D or 3-D images, any number of input channels and classes.

    Args:
        spatial_dims: 2 (images ``[B, C, H, W]``) or 3 (volumes ``[B, C, D, H, W]``).
        in_channels: input channels (modalities).
        num_classes: output classes (background included).
        variant: ``"bot"`` (one mixer layer on the bottleneck) or ``"enc"`` (layers after the
            deeper encoder stages, see the module docstring).
        features: channels per stage (nnU-Net: ``min(base * 2**s, max)``).
        strides: one stride per stage, each an int or one per axis (the first must be 1).
        kernel_sizes: an int for every stage, or one per stage (each an int or one per axis).
        n_blocks: residual blocks per encoder stage (nnU-Net's ``n_conv_per_stage_encoder``).
        n_blocks_decoder: residual blocks per decoder stage, deepest first.
        patch_size: training patch size; needed by ``variant="enc"`` (the token rule), and used
            to check inputs.
        deep_supervision: return one logit map per decoder stage while training.
        mixer: registered mixer for the layers (``"mlstm"`` = ViL; ``"mamba"``, ``"attention"``).
        mixer_kwargs: overrides of the per-mixer defaults (:func:`default_mixer_kwargs`).
        scan: ``"forward"`` (official: every layer top-left first) or ``"alternate"``.
        official_depth: apply the official depth rule (:func:`depth_rule`).
        full_resolution_skip: concatenate the full-resolution skip in the last decoder stage;
            ``None`` follows the official code (no in 2-D, yes in 3-D).

    Shapes:
        ``forward(x [B, in_channels, *S]) -> [B, num_classes, *S]`` in eval mode; while
        training with deep supervision a list of ``len(features) - 1`` maps, full resolution
        first, each stage's at ``S`` divided by the strides up to it.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        variant: str = "bot",
        features: Sequence[int] = (32, 64, 128, 256, 512, 512),
        strides: Sequence[IntOrSeq] = (1, 2, 2, 2, 2, 2),
        kernel_sizes: IntOrSeq | Sequence[IntOrSeq] = 3,
        n_blocks: int | Sequence[int] = 2,
        n_blocks_decoder: int | Sequence[int] = 2,
        patch_size: Sequence[int] | None = None,
        deep_supervision: bool = True,
        mixer: str = "mlstm",
        mixer_kwargs: dict[str, Any] | None = None,
        scan: str = "forward",
        official_depth: bool = True,
        full_resolution_skip: bool | None = None,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"XLSTMUNet: spatial_dims must be 2 or 3, got {spatial_dims}")
        if variant not in ("bot", "enc"):
            raise ValueError(f"XLSTMUNet: variant must be 'bot' or 'enc', got {variant!r}")
        if scan not in ("forward", "alternate"):
            raise ValueError(f"XLSTMUNet: scan must be 'forward' or 'alternate', got {scan!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"XLSTMUNet: in_channels and num_classes must be >= 1, got {in_channels}, "
                f"{num_classes}"
            )
        features = [int(f) for f in features]
        n = len(features)
        if n < 2:
            raise ValueError("XLSTMUNet: a U-Net needs at least two stages (len(features) >= 2)")
        strides_ = [_per_axis(s, spatial_dims, "stride") for s in _per_stage(strides, n, "strides")]
        if any(s != 1 for s in strides_[0]):
            raise ValueError(
                f"XLSTMUNet: the first stage must have stride 1 (the logits are at its "
                f"resolution), got {strides_[0]}"
            )
        kernels = [
            _per_axis(k, spatial_dims, "kernel size")
            for k in _per_stage(kernel_sizes, n, "kernel_sizes")
        ]
        blocks = _per_stage(n_blocks, n, "n_blocks")
        blocks_dec = _per_stage(n_blocks_decoder, n - 1, "n_blocks_decoder")
        if min(blocks + blocks_dec) < 1:
            raise ValueError("XLSTMUNet: every stage needs at least one residual block")
        if official_depth:
            blocks, blocks_dec = depth_rule(blocks, blocks_dec)
        if patch_size is not None:
            patch_size = _per_axis(patch_size, spatial_dims, "patch_size")
        if variant == "enc" and patch_size is None:
            raise ValueError(
                "XLSTMUNet: variant='enc' needs patch_size (the official token rule picks "
                "positions or channels as tokens from the feature-map sizes of the patch)"
            )
        if full_resolution_skip is None:
            full_resolution_skip = spatial_dims == 3

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.variant = variant
        self.features = features
        self.strides = strides_
        self.kernel_sizes = kernels
        self.n_blocks, self.n_blocks_decoder = blocks, blocks_dec
        self.patch_size = patch_size
        self.deep_supervision = deep_supervision
        self.mixer = mixer
        self.total_stride = tuple(
            math.prod(s[axis] for s in strides_) for axis in range(spatial_dims)
        )

        n_mixers = 0

        def mixer_layer(dim: int, channel_tokens: bool) -> MixerLayer:
            nonlocal n_mixers
            reverse = scan == "alternate" and n_mixers % 2 == 1
            n_mixers += 1
            return MixerLayer(dim, spatial_dims, mixer, mixer_kwargs, channel_tokens, reverse)

        layers = None
        self.layer_plan = encoder_layer_plan(variant, spatial_dims, n)
        self.channel_tokens = [False] * n
        if variant == "enc":
            sizes = feature_map_sizes(patch_size, strides_)
            self.channel_tokens = [math.prod(sizes[s]) <= features[s] for s in range(n)]
            layers = []
            for s, kind in enumerate(self.layer_plan):
                if kind == "mixer":
                    tokens = self.channel_tokens[s]
                    width = math.prod(sizes[s]) if tokens else features[s]
                    layers.append(mixer_layer(width, tokens))
                elif kind == "conv":
                    layers.append(ResidualBlock(spatial_dims, features[s], features[s], kernels[s]))
                else:
                    layers.append(nn.Identity())
        self.encoder = _Encoder(
            spatial_dims, in_channels, features, kernels, strides_, blocks, layers
        )
        self.bottleneck = mixer_layer(features[-1], False) if variant == "bot" else None
        self.decoder = _Decoder(
            spatial_dims, features, kernels, strides_, blocks_dec, num_classes, full_resolution_skip
        )
        self.apply(_init_he)

    def check_input(self, x: torch.Tensor) -> None:
        """Clear errors for inputs the network cannot take (wrong rank, channels, sizes)."""
        where = "XLSTMUNet.forward"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{where}: x must be a floating-point tensor [B, C, *spatial]")
        if x.dim() != self.spatial_dims + 2:
            got = x.dim() - 2
            raise ValueError(
                f"{where}: this is a {self.spatial_dims}-D network (input [B, C, "
                f"{', '.join('HW' if self.spatial_dims == 2 else 'DHW')}]) but got shape "
                f"{tuple(x.shape)} ({got} spatial dims); "
                + (
                    "a 3-D volume needs spatial_dims=3 (or slice it into 2-D images)"
                    if got == 3
                    else "give [B, C, *spatial]"
                )
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{where}: expected {self.in_channels} input channel(s), got {x.shape[1]} "
                f"(shape {tuple(x.shape)})"
            )
        spatial = tuple(x.shape[2:])
        if any(size % stride for size, stride in zip(spatial, self.total_stride)):
            raise ValueError(
                f"{where}: spatial size {spatial} is not divisible by the network's total stride "
                f"{self.total_stride}; pad or crop to a multiple (sliding-window inference with "
                f"patch_size {self.patch_size} does this)"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        skips = self.encoder(x)
        if self.bottleneck is not None:
            skips[-1] = self.bottleneck(skips[-1])
        all_outputs = self.deep_supervision and self.training
        outputs = self.decoder(skips, all_outputs)
        return outputs if all_outputs else outputs[0]

    def output_strides(self) -> list[tuple[int, ...]]:
        """Downsampling factor of each deep-supervision output (full resolution first)."""
        factors, factor = [], (1,) * self.spatial_dims
        for stride in self.strides[: len(self.features) - 1]:
            factor = tuple(f * s for f, s in zip(factor, stride))
            factors.append(factor)
        return factors


def _init_he(module: nn.Module) -> None:
    # nnU-Net's InitWeights_He(1e-2): convs of the U-Net only (not the mixers' 1-D convs).
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
