"""ViR: an isotropic vision backbone of multi-head retention, on the core ``retention`` mixer.

Follows "ViR: Towards Efficient Vision Retention Backbones" (Ali Hatamizadeh, Michael Ranzinger,
Shiyi Lan, Jose M. Alvarez, Sanja Fidler and Jan Kautz, 2023, arXiv 2310.19731). No official code
was released; this is built from the paper's description:

- a ViT-style encoder (Dosovitskiy et al., 2021, arXiv 2010.11929): non-overlapping patch
  embedding (16, or 14 for the large patch-14 variant), learned absolute position embeddings,
  pre-norm blocks ``x + LS(MHR(LN(x)))``, ``x + LS(MLP(LN(x)))`` with LayerScale (Touvron et al.,
  2021, arXiv 2103.17239), a final LayerNorm and a linear classifier;
- the token mixer is multi-head retention (RetNet, Sun et al., 2023, arXiv 2307.08621) with a
  *causal* decay mask ``D_nm = gamma_h^(n-m) [n >= m]`` and one decay per head, over the patch
  sequence in raster order with the class token appended *last*, so that a recurrent pass ends on
  it and the class token sees every patch;
- the three equivalent forms of retention: parallel (``(Q K^T * D) V``, training), chunkwise
  (chunks in parallel, a state carried across chunks) and recurrent (one token at a time, memory
  independent of the number of tokens). ``mode=`` picks one; all give the same output.

Sizes (parameter counts equal those of the ViT of the same shape plus LayerScale):
small 384 wide / 12 layers / 6 heads (22.06 M), base 768 / 12 / 12 (86.59 M), large
1024 / 24 / 16 (304.37 M at patch 16, ``mixerzoo_vir_large_patch14`` at patch 14).

Choices the paper leaves open (made here, on purpose):

- Retention layer: ``q, k, v, o`` projections with biases (as ViT's qkv/proj, hence the equal
  parameter counts), ``d_v = d_k = D / H``, no xPos rotation (the absolute position embedding
  carries the position), keys scaled by ``d_k^-0.5``, and a per-head GroupNorm *without* affine
  parameters on the retention output (RetNet's normalisation; it makes the output independent of
  the row scale of the decay mask, so the parallel and recurrent forms are exactly equal, and keeps
  the scale stable as the resolution grows); RetNet's swish output gate is left out (ViT's
  parameter count has no room for it). Core mixer arguments: ``gate=False, norm_affine=False``.
- Decays: ``gamma_h = 1 - exp(linspace(log 1/32, log 1/512, H))`` (the spread of RetNet's
  multi-scale decays, ``1/32 .. 1/512`` of memory loss per step, for any number of heads).
- The class token has no position embedding (the position embedding covers the patch grid only,
  so it can be resampled to any grid; the class token always comes last).
- LayerScale initialised to ``1e-5`` (``ls_init_value``), ViT initialisation (truncated normal
  0.02 for linear layers and position embeddings, ``1e-6`` normal for the class token).
- Other image sizes: the position embedding is resampled (bicubic) to the new patch grid.
- ``mixer=`` swaps the token mixer (e.g. ``mamba``); the recurrent mode needs a causal mixer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import LayerScale, PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs
from timm.models import register_model as timm_register_model
from timm.models._features import feature_take_indices
from torch import nn

from mixerzoo.core.layers import MLP, DropPath, make_norm
from mixerzoo.core.registry import create_mixer, register_model
from mixerzoo.vision.models._common import CheckpointMixin, check_image, default_cfg

__all__ = ["ViR", "ViRBlock", "vir_decays", "MODES"]

MODES = ("parallel", "chunkwise", "recurrent")
_NORM_EPS = 1e-6


def vir_decays(n_heads: int) -> list[float]:
    """Per-head decays ``1 - exp(linspace(log 1/32, log 1/512, H))`` (see the module docstring)."""
    if n_heads == 1:
        return [1 - 1 / 32]
    logs = torch.linspace(
        math.log(1 / 32), math.log(1 / 512), n_heads, dtype=torch.float64, device="cpu"
    )
    return (1 - logs.exp()).tolist()


class ViRBlock(nn.Module):
    """Pre-norm block ``x + LS(mixer(LN(x)))``, ``x + LS(MLP(LN(x)))`` over ``[B, T, D]``.

    Args:
        dim: width ``D``.
        num_heads: retention heads (used when ``mixer="retention"``).
        mixer: registered mixer name.
        mixer_kwargs: extra mixer arguments (override the ViR defaults for retention).
        mlp_ratio: MLP hidden width / ``D``.
        qkv_bias: biases in the retention projections.
        ls_init_value: LayerScale init (``None``: no LayerScale).
        drop_path: stochastic-depth rate.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mixer: str = "retention",
        mixer_kwargs: dict[str, Any] | None = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        ls_init_value: float | None = 1e-5,
        drop_path: float = 0.0,
    ):
        super().__init__()
        kwargs = dict(mixer_kwargs or {})
        if mixer == "retention":
            defaults = dict(
                n_heads=num_heads,
                expand_v=1,
                causal=True,
                gammas=vir_decays(num_heads),
                rotation=False,
                bias=qkv_bias,
                gate=False,
                norm_affine=False,
            )
            kwargs = {**defaults, **kwargs}
        self.norm1 = make_norm("layernorm", dim, _NORM_EPS)
        self.mixer = create_mixer(mixer, dim, **kwargs)
        self.ls1 = LayerScale(dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.norm2 = make_norm("layernorm", dim, _NORM_EPS)
        self.mlp = MLP(dim, int(dim * mlp_ratio), "gelu")
        self.ls2 = LayerScale(dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        y, state = self.mixer(self.norm1(x), state)
        x = x + self.drop_path(self.ls1(y))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x)))), state

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One token ``x_t [B, D]`` with the mixer's recurrent ``step``."""
        y, state = self.mixer.step(self.norm1(x_t), state)
        x_t = x_t + self.ls1(y)
        return x_t + self.ls2(self.mlp(self.norm2(x_t))), state


class ViR(CheckpointMixin, nn.Module):
    """Vision Retention Network, isotropic (see the module docstring).

    Args:
        img_size: the training image size (sets the stored position-embedding grid).
        patch_size: patch side.
        in_chans: input channels.
        num_classes: classes (0: no classifier).
        global_pool: ``"token"`` (the class token, last) or ``"avg"`` (mean of patch tokens).
        embed_dim: width ``D``.
        depth: number of blocks.
        num_heads: retention heads.
        mlp_ratio: MLP hidden width / ``D``.
        qkv_bias: biases in the retention projections.
        ls_init_value: LayerScale init (``None``: none).
        mixer: token mixer name (``retention``; any causal mixer keeps the recurrent mode).
        mixer_kwargs: mixer arguments.
        mode: ``"parallel"``, ``"chunkwise"`` or ``"recurrent"`` (see :attr:`mode`).
        chunk_size: tokens per chunk in the chunkwise mode (and per piece in
            :meth:`forward_recurrent` when ``chunk_tokens`` is not given).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing with depth.

    Shapes:
        ``forward(x [B, in_chans, H, W]) -> [B, num_classes]``; ``forward_features(x) ->
        [B, N + 1, D]`` with the ``N = (H/p)(W/p)`` patch tokens first, the class token last.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        ls_init_value: float | None = 1e-5,
        mixer: str = "retention",
        mixer_kwargs: dict[str, Any] | None = None,
        mode: str = "parallel",
        chunk_size: int = 64,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if global_pool not in ("token", "avg", ""):
            raise ValueError(f"ViR: global_pool must be 'token', 'avg' or '', got {global_pool!r}")
        if embed_dim % num_heads:
            raise ValueError(
                f"ViR: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 0  # the class token is a suffix here (see forward_intermediates)
        self.grad_checkpointing = False
        self.chunk_size = chunk_size
        self.patch_embed = PatchEmbed(
            img_size, patch_size, in_chans, embed_dim, output_fmt="NHWC", strict_img_size=False
        )
        self.grid_size = tuple(self.patch_embed.grid_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(
            *[
                ViRBlock(
                    embed_dim,
                    num_heads,
                    mixer=mixer,
                    mixer_kwargs=mixer_kwargs,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    ls_init_value=ls_init_value,
                    drop_path=rates[i],
                )
                for i in range(depth)
            ]
        )
        self.feature_info = [
            dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size)
            for i in range(depth)
        ]
        self.norm = make_norm("layernorm", embed_dim, _NORM_EPS)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(self._init_weights)
        self.mode = mode

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def mode(self) -> str:
        """``"parallel"`` (the ``T x T`` parallel form in every block), ``"chunkwise"`` (chunks of
        ``chunk_size`` tokens, state carried across) or ``"recurrent"`` (:meth:`forward_recurrent`:
        the tokens stream through the whole network one at a time)."""
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"ViR: mode must be one of {MODES}, got {mode!r}")
        self._mode = mode

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^cls_token|pos_embed|patch_embed", blocks=[(r"^blocks\.(\d+)", None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("token", "avg", ""):
                raise ValueError(
                    f"ViR: global_pool must be 'token', 'avg' or '', got {global_pool!r}"
                )
            self.global_pool = global_pool
        factory = dict(device=self.pos_embed.device, dtype=self.pos_embed.dtype)
        self.head = (
            nn.Linear(self.embed_dim, num_classes, **factory) if num_classes > 0 else nn.Identity()
        )

    # --- embedding ----------------------------------------------------------------------------

    def _grid_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embedding ``[1, h*w, D]`` for a patch grid, resampled when it differs."""
        if tuple(grid) == self.grid_size:
            return self.pos_embed
        return resample_abs_pos_embed(
            self.pos_embed, list(grid), list(self.grid_size), num_prefix_tokens=0
        )

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``[B, C, H, W] -> [B, N + 1, D]``: patches + positions, then the class token."""
        check_image(x, self.in_chans, self.patch_size, "ViR")
        tokens = self.patch_embed(x)  # [B, h, w, D]
        b, h, w, d = tokens.shape
        tokens = tokens.reshape(b, h * w, d) + self._grid_pos_embed((h, w))
        return torch.cat([tokens, self.cls_token.expand(b, -1, -1)], dim=1), (h, w)

    def _set_chunking(self, tokens: int) -> None:
        # The parallel form is one chunk holding the whole sequence; the chunkwise form carries
        # the state across chunks of chunk_size tokens. Both are the mixer's "chunk" backend.
        size = tokens if self._mode == "parallel" else self.chunk_size
        for block in self.blocks:
            if hasattr(block.mixer, "chunk_size"):
                block.mixer.chunk_size = max(1, size)

    # --- forward ------------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W] -> [B, N + 1, D]`` (normalised; patch tokens, then the class token)."""
        if self._mode == "recurrent":
            return self.forward_recurrent(x, all_tokens=True)
        x, _ = self._embed(x)
        self._set_chunking(x.shape[1])
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(_TokensOnly(self.blocks), x)
        else:
            for block in self.blocks:
                x, _ = block(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool ``[B, N + 1, D]`` (class token or patch mean) and classify."""
        if self.global_pool == "token":
            x = x[:, -1]
        elif self.global_pool == "avg":
            x = x[:, :-1].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._mode == "recurrent" and self.global_pool == "token":
            # Only the class token is needed: memory independent of the number of patches.
            return self.forward_head(self.forward_recurrent(x).unsqueeze(1))
        return self.forward_head(self.forward_features(x))

    def forward_recurrent(
        self, x: torch.Tensor, all_tokens: bool = False, chunk_tokens: int = 1
    ) -> torch.Tensor:
        """Recurrent inference: the tokens stream through every block, ``chunk_tokens`` at a time.

        Each patch is embedded when its turn comes and every block keeps only its mixer's state,
        so under ``torch.no_grad()`` the memory does not grow with the number of patches (apart
        from the input image, the position table and, with ``all_tokens``, the outputs); with
        autograd on, the graph keeps every step (train with the parallel or chunkwise mode).
        ``chunk_tokens=1`` is the token-by-token recurrent form (each block's ``step``); larger
        pieces are the chunkwise recurrent form.

        Returns:
            The normalised class token ``[B, D]``, or every token ``[B, N + 1, D]`` when
            ``all_tokens``.
        """
        check_image(x, self.in_chans, self.patch_size, "ViR")
        if chunk_tokens < 1:
            raise ValueError(
                f"ViR.forward_recurrent: chunk_tokens must be >= 1, got {chunk_tokens}"
            )
        for block in self.blocks:
            if not block.mixer.causal:
                raise ValueError(
                    f"ViR: the recurrent mode needs a causal token mixer; "
                    f"{type(block.mixer).__name__} is bidirectional (use mode='parallel')"
                )
        b = x.shape[0]
        p = self.patch_size
        h, w = x.shape[-2] // p, x.shape[-1] // p
        pos = self._grid_pos_embed((h, w))[0]
        proj = self.patch_embed.proj
        states = [
            block.mixer.init_state(b, device=x.device, dtype=x.dtype) for block in self.blocks
        ]
        outputs = []
        total = h * w + 1
        for block in self.blocks:
            if hasattr(block.mixer, "chunk_size"):
                block.mixer.chunk_size = max(1, chunk_tokens)
        for start in range(0, total, chunk_tokens):
            stop = min(start + chunk_tokens, total)
            pieces = []
            for n in range(start, stop):
                if n == total - 1:
                    pieces.append(self.cls_token[0, 0].expand(b, -1))
                    continue
                i, j = divmod(n, w)
                patch = x[:, :, i * p : (i + 1) * p, j * p : (j + 1) * p]
                pieces.append(proj(patch).flatten(1) + pos[n])
            tokens = torch.stack(pieces, dim=1)  # [B, piece, D]
            for k, block in enumerate(self.blocks):
                if tokens.shape[1] == 1:
                    y, states[k] = block.step(tokens[:, 0], states[k])
                    tokens = y.unsqueeze(1)
                else:
                    tokens, states[k] = block(tokens, states[k])
            if all_tokens or stop == total:
                outputs.append(self.norm(tokens))
        out = torch.cat(outputs, dim=1)
        return out if all_tokens else out[:, -1]

    # --- timm feature extraction -------------------------------------------------------------

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Any] | tuple[torch.Tensor, list[Any]]:
        """Block outputs as timm's ViT returns them (the getter style of feature extraction).

        ``indices``: int = the last n blocks, list = those blocks. Patch tokens come back as
        ``[B, D, h, w]`` (``"NCHW"``) or ``[B, N, D]`` (``"NLC"``); with
        ``return_prefix_tokens`` each entry is ``(patch_tokens, class_token [B, 1, D])`` (the
        class token is the *last* token here, timm's "prefix" slot carries it).
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"ViR: output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.blocks), indices)
        tokens, (h, w) = self._embed(x)
        self._set_chunking(tokens.shape[1])
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            tokens, _ = block(tokens)
            if i in take:
                intermediates.append(self.norm(tokens) if norm else tokens)
        cls = [y[:, -1:] for y in intermediates]
        patches = [y[:, :-1] for y in intermediates]
        if output_fmt == "NCHW":
            b = tokens.shape[0]
            patches = [y.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous() for y in patches]
        out = list(zip(patches, cls)) if return_prefix_tokens else patches
        return out if intermediates_only else (self.norm(tokens), out)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last one ``indices`` needs (and the norm / head)."""
        take, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take


class _TokensOnly(nn.Sequential):
    """The blocks as a plain ``x -> x`` sequence for timm's ``checkpoint_seq``."""

    def __init__(self, blocks: nn.Sequential):
        super().__init__(*[_DropState(block) for block in blocks])


class _DropState(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)[0]


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: ViR) -> dict:
    """Resample a stored position embedding to the model's grid (another training size)."""
    state_dict = state_dict.get("model", state_dict)
    pos = state_dict.get("pos_embed")
    if pos is not None and pos.shape != model.pos_embed.shape:
        old = int(math.sqrt(pos.shape[1]))
        state_dict = dict(state_dict)
        state_dict["pos_embed"] = resample_abs_pos_embed(
            pos, list(model.grid_size), [old, old], num_prefix_tokens=0
        )
    return state_dict


default_cfgs = generate_default_cfgs(
    {
        "mixerzoo_vir_small": default_cfg(first_conv="patch_embed.proj", classifier="head"),
        "mixerzoo_vir_base": default_cfg(first_conv="patch_embed.proj", classifier="head"),
        "mixerzoo_vir_large": default_cfg(first_conv="patch_embed.proj", classifier="head"),
        "mixerzoo_vir_large_patch14": default_cfg(
            first_conv="patch_embed.proj", classifier="head", pool_size=(16, 16)
        ),
    }
)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> ViR:
    return build_model_with_cfg(
        ViR,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=3, feature_cls="getter"),
        **kwargs,
    )


@register_model("vir_small", "vision")
@timm_register_model
def mixerzoo_vir_small(pretrained: bool = False, **kwargs: Any) -> ViR:
    """ViR-S/16: width 384, 12 layers, 6 heads (22.06 M parameters)."""
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create("mixerzoo_vir_small", pretrained, **{**args, **kwargs})


@register_model("vir_base", "vision")
@timm_register_model
def mixerzoo_vir_base(pretrained: bool = False, **kwargs: Any) -> ViR:
    """ViR-B/16: width 768, 12 layers, 12 heads (86.59 M parameters)."""
    args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create("mixerzoo_vir_base", pretrained, **{**args, **kwargs})


@register_model("vir_large", "vision")
@timm_register_model
def mixerzoo_vir_large(pretrained: bool = False, **kwargs: Any) -> ViR:
    """ViR-L/16: width 1024, 24 layers, 16 heads (304.37 M parameters)."""
    args = dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16)
    return _create("mixerzoo_vir_large", pretrained, **{**args, **kwargs})


@register_model("vir_large_patch14", "vision")
@timm_register_model
def mixerzoo_vir_large_patch14(pretrained: bool = False, **kwargs: Any) -> ViR:
    """ViR-L/14: width 1024, 24 layers, 16 heads, patch 14."""
    args = dict(patch_size=14, embed_dim=1024, depth=24, num_heads=16)
    return _create("mixerzoo_vir_large_patch14", pretrained, **{**args, **kwargs})
