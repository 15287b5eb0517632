"""MossFormer2: MossFormer layers with an FSMN recurrent module for time-domain speech separation.

Follows "MossFormer2: Combining Transformer and RNN-Free Recurrent Network for Enhanced
Time-Domain Monaural Speech Separation" (Zhao et al., ICASSP 2024, arXiv 2312.11825) and the
official implementation in ClearerVoice-Studio (``MossFormer2_SS_16K`` / ``MossFormer``, speech
separation), with the core mixers ``gated_attention`` (MossFormer's FLASH-style gated
single-head attention) and ``gated_fsmn`` (the gated dilated dense FSMN recurrent module):

- encoder: ``Conv1d(1, N, kernel 16, stride 8, no bias)`` + ReLU -> ``[B, S, N]`` (N = 512);
- mask net: global layer norm (``GroupNorm(1, N)``), 1x1 projection, scaled sinusoidal position
  embedding, then 24 layers of ``gated_attention`` (group 256, qk dim 128, expansion 4,
  ScaleNorm, rotary dim 32) each followed by ``gated_fsmn`` (inner 256, lorder 20, two dilated
  dense layers), a LayerNorm, a global layer norm and a skip around the whole stack;
- per-speaker gated masks: PReLU, ``1x1 conv N -> N * spks``, ``tanh(W_o h) * sigmoid(W_g h)``
  per speaker, ``1x1 conv`` back to N, ReLU;
- decoder: the masked encoder features of each speaker through ``ConvTranspose1d(N, 1, 16,
  stride 8)``, padded or cropped to the input length.

Training loss: negative SI-SNR with permutation-invariant training (``pit_si_snr``).

The published model (``mossformer2``) has 55.74 M parameters; the 8 kHz and 16 kHz official
models share this architecture (only the sampling rate of the data differs). ``mossformer2_small``
is a CPU-sized variant (N = 128, 4 layers, qk dim 64, inner FSMN width 64, group 128).

Deviations: 1x1 convolutions over ``[B, N, S]`` are ``nn.Linear`` layers over ``[B, S, N]`` (the
same map; :func:`mossformer2_official_key_map` reshapes the kernels); the rotary frequencies are
computed, not stored (the official ``rotary_pos_emb.freqs`` holds the same constants, checked on
load).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from mixerzoo.core.registry import create_mixer, register_model

__all__ = ["MossFormer2", "mossformer2_small", "mossformer2_official_key_map"]


def global_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
    """``GroupNorm(1, N)`` of ``[B, N, S]`` features stored as ``[B, S, N]``."""
    mean = x.mean(dim=(1, 2), keepdim=True)
    var = (x - mean).square().mean(dim=(1, 2), keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps) * weight + bias


class GlobalLayerNorm(nn.Module):
    """Global layer norm over time and channels with per-channel affine, on ``[B, S, N]``."""

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_layer_norm(x, self.weight, self.bias, self.eps)


class ScaledSinusoidalEmbedding(nn.Module):
    """``scale * [sin(t w_k), cos(t w_k)]`` with ``w_k = 10000^(-2k/N)`` (MossFormer)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.register_buffer(
            "inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)), persistent=False
        )

    def forward(self, length: int, device, dtype) -> torch.Tensor:
        t = torch.arange(length, device=device, dtype=self.inv_freq.dtype)
        angles = t[:, None] * self.inv_freq[None, :]
        return (torch.cat((angles.sin(), angles.cos()), dim=-1) * self.scale).to(dtype)


@register_model("mossformer2", domain="audio")
class MossFormer2(nn.Module):
    """MossFormer2 separator: mixture ``[B, L]`` -> sources ``[B, num_spks, L]``.

    Args:
        num_spks: number of speakers (sources) to separate.
        sample_rate: rate the model works at (8000 or 16000 for the official models; it does not
            change the architecture).
        channels: encoder width ``N`` (512).
        kernel_size: encoder/decoder kernel (16; stride is half of it).
        num_layers: MossFormer layers, each followed by a recurrent module (24).
        group_size: quadratic-attention group (256).
        query_key_dim: shared query/key width (128).
        expansion_factor: gated attention hidden expansion (4).
        fsmn_channels: inner width of the gated FSMN (256).
        fsmn_order: FSMN ``lorder`` (20).
        dropout: dropout inside the gated attention and FSMN projections (0.1, as trained).
    """

    def __init__(
        self,
        num_spks: int = 2,
        sample_rate: int = 8000,
        channels: int = 512,
        kernel_size: int = 16,
        num_layers: int = 24,
        group_size: int = 256,
        query_key_dim: int = 128,
        expansion_factor: float = 4.0,
        fsmn_channels: int = 256,
        fsmn_order: int = 20,
        dropout: float = 0.1,
    ):
        super().__init__()
        if num_spks < 1:
            raise ValueError(f"MossFormer2: num_spks must be >= 1, got {num_spks}")
        if kernel_size < 2 or kernel_size % 2:
            raise ValueError(f"MossFormer2: kernel_size must be even and >= 2, got {kernel_size}")
        self.num_spks = num_spks
        self.sample_rate = sample_rate
        self.kernel_size, self.stride = kernel_size, kernel_size // 2
        n = channels
        self.encoder = nn.Conv1d(1, n, kernel_size, stride=self.stride, bias=False)
        self.norm_in = GlobalLayerNorm(n)
        self.proj_in = nn.Linear(n, n, bias=False)
        self.pos_enc = ScaledSinusoidalEmbedding(n)
        self.attentions = nn.ModuleList(
            create_mixer(
                "gated_attention",
                d_model=n,
                group_size=group_size,
                query_key_dim=query_key_dim,
                expansion_factor=expansion_factor,
                norm="scalenorm",
                dropout=dropout,
            )
            for _ in range(num_layers)
        )
        self.recurrences = nn.ModuleList(
            create_mixer(
                "gated_fsmn",
                d_model=n,
                inner_channels=fsmn_channels,
                lorder=fsmn_order,
                dropout=dropout,
            )
            for _ in range(num_layers)
        )
        self.norm_layers = nn.LayerNorm(n, eps=1e-6)
        self.norm_out = GlobalLayerNorm(n)
        self.prelu = nn.PReLU()
        self.proj_spks = nn.Linear(n, n * num_spks)
        self.mask_out = nn.Linear(n, n)
        self.mask_gate = nn.Linear(n, n)
        self.proj_mask = nn.Linear(n, n, bias=False)
        self.decoder = nn.ConvTranspose1d(n, 1, kernel_size, stride=self.stride, bias=False)

    def masks(self, feats: torch.Tensor) -> torch.Tensor:
        """Mask net: encoder features ``[B, S, N]`` -> masks ``[B, spks, S, N]``."""
        b, s, n = feats.shape
        h = self.proj_in(self.norm_in(feats))
        h = h + self.pos_enc(s, h.device, h.dtype)
        skip = h
        for attention, recurrence in zip(self.attentions, self.recurrences):
            h, _ = attention(h)
            h, _ = recurrence(h)
        h = self.norm_out(self.norm_layers(h)) + skip
        h = self.proj_spks(self.prelu(h))  # [B, S, N * spks]
        h = h.view(b, s, self.num_spks, n).transpose(1, 2)  # [B, spks, S, N]
        h = torch.tanh(self.mask_out(h)) * torch.sigmoid(self.mask_gate(h))
        return F.relu(self.proj_mask(h))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate ``mix [B, L]`` into ``[B, num_spks, L]``."""
        if mix.dim() != 2:
            raise ValueError(f"MossFormer2 expects a mixture [B, L], got shape {tuple(mix.shape)}")
        length = mix.shape[-1]
        if length < self.kernel_size:
            raise ValueError(
                f"MossFormer2: the input has {length} samples, fewer than one encoder frame "
                f"({self.kernel_size}); pad it first"
            )
        feats = F.relu(self.encoder(mix.unsqueeze(1))).transpose(1, 2)  # [B, S, N]
        masks = self.masks(feats)
        b, spk, s, n = masks.shape
        separated = (feats.unsqueeze(1) * masks).reshape(b * spk, s, n).transpose(1, 2)
        wav = self.decoder(separated).reshape(b, spk, -1)
        if wav.shape[-1] < length:
            wav = F.pad(wav, (0, length - wav.shape[-1]))
        return wav[..., :length]


@register_model("mossformer2_small", domain="audio")
def mossformer2_small(num_spks: int = 2, sample_rate: int = 8000, **kwargs) -> MossFormer2:
    """CPU-sized MossFormer2 (N 128, 4 layers, qk 64, FSMN width 64, group 128)."""
    config = {
        "channels": 128,
        "num_layers": 4,
        "group_size": 128,
        "query_key_dim": 64,
        "fsmn_channels": 64,
    }
    config.update(kwargs)
    return MossFormer2(num_spks=num_spks, sample_rate=sample_rate, **config)


_PREFIX = "mask_net.mdl.intra_mdl.mossformerM."
_TOP_LEVEL = {
    "enc.conv1d.weight": "encoder.weight",
    "dec.weight": "decoder.weight",
    "mask_net.norm.weight": "norm_in.weight",
    "mask_net.norm.bias": "norm_in.bias",
    "mask_net.conv1d_encoder.weight": "proj_in.weight",
    "mask_net.pos_enc.scale": "pos_enc.scale",
    "mask_net.mdl.intra_mdl.norm.weight": "norm_layers.weight",
    "mask_net.mdl.intra_mdl.norm.bias": "norm_layers.bias",
    "mask_net.mdl.intra_norm.weight": "norm_out.weight",
    "mask_net.mdl.intra_norm.bias": "norm_out.bias",
    "mask_net.prelu.weight": "prelu.weight",
    "mask_net.conv1d_out.weight": "proj_spks.weight",
    "mask_net.conv1d_out.bias": "proj_spks.bias",
    "mask_net.output.0.weight": "mask_out.weight",
    "mask_net.output.0.bias": "mask_out.bias",
    "mask_net.output_gate.0.weight": "mask_gate.weight",
    "mask_net.output_gate.0.bias": "mask_gate.bias",
    "mask_net.conv1_decoder.weight": "proj_mask.weight",
}
# FFConvM inside the official modules: Sequential(norm, Linear, SiLU, ConvModule, Dropout).
_FFCONVM = {
    "mdl.0.": "norm.",
    "mdl.1.": "linear.",
    "mdl.3.sequential.1.conv.": "conv.conv.",
}
_FSMN_BLOCK = [
    (r"conv1\.0\.(weight|bias)", r"conv1.\1"),
    (r"conv1\.1\.weight", "act1.weight"),
    (r"norm([12])\.(weight|bias)", r"norm\1.\2"),
    (r"gated_fsmn\.(to_[uv])\.(.*)", None),  # FFConvM, below
    (r"gated_fsmn\.fsmn\.(linear\.weight|linear\.bias|project\.weight)", r"fsmn.\1"),
    (r"gated_fsmn\.fsmn\.conv\.conv(\d+)\.weight", "fsmn.convs.{}.weight"),
    (r"gated_fsmn\.fsmn\.conv\.norm(\d+)\.(weight|bias)", "fsmn.norms.{}.{}"),
    (r"gated_fsmn\.fsmn\.conv\.prelu(\d+)\.weight", "fsmn.acts.{}.weight"),
    (r"conv2\.(weight|bias)", r"conv2.\1"),
]


def _ffconvm(rest: str) -> str:
    for old, new in _FFCONVM.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    raise KeyError(rest)


def _map_fsmn_block(rest: str) -> str:
    for pattern, target in _FSMN_BLOCK:
        m = re.fullmatch(pattern, rest)
        if not m:
            continue
        if target is None:
            return f"{m.group(1)}.{_ffconvm(m.group(2))}"
        if "{}" in target:
            groups = list(m.groups())
            groups[0] = str(int(groups[0]) - 1)  # conv1/norm1/prelu1 -> index 0
            return target.format(*groups)
        return m.expand(target)
    raise KeyError(rest)


def mossformer2_official_key_map(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official MossFormer2 state dict (ClearerVoice-Studio ``MossFormer``) to ours.

    Accepts the ``MossFormer2_SS_16K`` checkpoint's ``["model"]`` dict (keys optionally prefixed
    by ``module.`` or ``model.``). Renames (official -> ours):

    - ``enc.conv1d.weight`` -> ``encoder.weight``; ``dec.weight`` -> ``decoder.weight``;
    - ``mask_net.{norm, conv1d_encoder, pos_enc.scale, mdl.intra_mdl.norm, mdl.intra_norm,
      prelu, conv1d_out, output.0, output_gate.0, conv1_decoder}`` -> ``norm_in, proj_in,
      pos_enc.scale, norm_layers, norm_out, prelu, proj_spks, mask_out, mask_gate, proj_mask``;
    - ``...mossformerM.layers.{i}.*`` (FLASH_ShareA_FFConvM) -> ``attentions.{i}.*`` with
      FFConvM ``mdl.0 / mdl.1 / mdl.3.sequential.1.conv`` -> ``norm / linear / conv.conv``;
    - ``...mossformerM.fsmn.{i}.*`` (Gated_FSMN_Block_Dilated) -> ``recurrences.{i}.*``:
      ``conv1.0 -> conv1``, ``conv1.1 -> act1``, ``gated_fsmn.to_u/to_v`` (FFConvM),
      ``gated_fsmn.fsmn.{linear, project}``, ``gated_fsmn.fsmn.conv.{conv, norm, prelu}{k}`` ->
      ``fsmn.{convs, norms, acts}.{k-1}``.

    1x1 convolution kernels ``[out, in, 1]`` become linear weights ``[out, in]``; 2-D FSMN
    kernels ``[C, g, K, 1]`` become ``[C, g, K]``. The constant buffers ``pos_enc.inv_freq`` and
    ``rotary_pos_emb.freqs`` are dropped after checking they hold the standard values.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in official.items():
        for prefix in ("module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if key == "mask_net.pos_enc.inv_freq":
            dim = value.numel() * 2
            expected = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
            if not torch.allclose(value.float(), expected):
                raise ValueError("official checkpoint: unexpected position-embedding frequencies")
            continue
        if key.endswith("rotary_pos_emb.freqs"):
            dim = value.numel() * 2
            expected = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
            if not torch.allclose(value.float(), expected):
                raise ValueError("official checkpoint: rotary frequencies differ from theta 10000")
            continue
        if key in _TOP_LEVEL:
            new = _TOP_LEVEL[key]
        elif key.startswith(_PREFIX + "layers."):
            index, rest = key[len(_PREFIX + "layers.") :].split(".", 1)
            if rest.startswith("qk_offset_scale."):
                new = f"attentions.{index}.{rest}"
            else:
                module, sub = rest.split(".", 1)
                new = f"attentions.{index}.{module}.{_ffconvm(sub)}"
        elif key.startswith(_PREFIX + "fsmn."):
            index, rest = key[len(_PREFIX + "fsmn.") :].split(".", 1)
            new = f"recurrences.{index}.{_map_fsmn_block(rest)}"
        else:
            raise KeyError(f"official MossFormer2 checkpoint: unknown key {key!r}")
        if value.dim() == 3 and value.shape[-1] == 1 and not new.endswith("conv.conv.weight"):
            value = value[..., 0]  # 1x1 Conv1d -> Linear
        if value.dim() == 4 and value.shape[-1] == 1:
            value = value[..., 0]  # Conv2d (K, 1) -> Conv1d K
        out[new] = value
    return out
