"""2-D selective scan (SS2D) as a mixer: VMamba's cross scan or EfficientVMamba's atrous scan.

Follows "EfficientVMamba: Atrous Selective Scan for Light Weight Visual Mamba" (Xiaohuan Pei,
Tao Huang and Chang Xu, 2024, arXiv 2403.09977) and its official ``SS2D`` (TerryPei/
EfficientVMamba, ``forward_type="v2"``), itself VMamba's SS2D ("VMamba: Visual State Space
Model", Liu et al., 2024, arXiv 2401.10166) with the scan replaced. Over an image
``x [B, H, W, D]``::

    x, z = split(in_proj(x))                          E = ssm_ratio * D channels each
    x = silu(dwconv_kxk(x)),  z = silu(z)
    xs = scan(x)                                      K = 4 traversals [B, K, L, E]
    dt, B, C = split(x_proj_k(xs_k))                  per traversal k: its own projections,
    dt = dt_proj_k(dt)                                dt rank R, state N
    ys_k = S6(xs_k; softplus(dt + dt_bias_k), A_k = -exp(A_log_k), B, C, D_k)
    y = LayerNorm(merge(ys)) * z,  out = out_proj(y)

``scan="atrous"`` is EfficientVMamba's efficient 2-D scanning with skip sampling (each of the four
interleaved ``2 x 2`` sub-grids traversed once, in row- or column-major order; ``L = HW / 4``),
``scan="cross"`` VMamba's four full traversals (row, column, both reversed; summed). The traversals
are :mod:`mixerzoo.core.scans`. The four traversals run as one selective scan
(:func:`mixerzoo.core.ops.selective_scan`) with the direction folded into the channel dimension:
``u [B, K*E, L]``, ``A, D, dt_bias`` per direction, and ``B, C`` grouped by direction
(``[B, K, N, L]``, group ``k`` for the ``E`` channels of traversal ``k``).

Parameter names follow the official code (``in_proj``, ``conv2d``, ``x_proj_weight [K, R+2N, E]``,
``dt_projs_weight [K, E, R]``, ``dt_projs_bias [K, E]``, ``A_logs [K*E, N]``, ``Ds [K*E]``,
``out_norm``, ``out_proj``), as does the initialisation (Mamba's ``dt`` in ``[1e-3, 0.1]``,
S4D-real ``A``, ``D = 1``, ``x_proj`` as ``nn.Linear``'s default).

Over a sequence ``x [B, T, D]``, ``forward`` is the same operator on the ``1 x T`` grid (so a
sequence and a one-row image agree): with ``scan="cross"`` that is two forward and two backward
traversals with their own parameters; with ``scan="atrous"`` the even and the odd positions are
each scanned forward (the sub-grids of the missing second row are padding). The mixer is
bidirectional/2-D (``causal = False``, no ``step``, no state). A padding ``mask`` is honoured in
the 1-D form: every row is compacted to its real tokens (padding after them, zeroed before the
depthwise convolution) and the padded steps are the identity of the scan, so padding changes no
real output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mixerzoo.core.layers.sequence import Compaction
from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops.selective_scan import selective_scan
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.scans import atrous_merge, atrous_scan, cross_merge, cross_scan
from mixerzoo.core.validation import check_tensor

__all__ = ["SS2D"]

_SCANS = ("atrous", "cross")


@register_mixer("ss2d")
class SS2D(Mixer):
    """2-D selective scan mixer (see the module docstring).

    Args:
        d_model: width ``D``.
        d_state: SSM state size ``N`` (16).
        ssm_ratio: inner width ``E = int(ssm_ratio * D)`` (2.0).
        dt_rank: rank ``R`` of the ``dt`` projection; ``"auto"`` is ``ceil(D / 16)``.
        d_conv: depthwise convolution kernel (3; ``< 2`` for none, then ``silu`` on ``in_proj``).
        conv_bias: bias of the depthwise convolution.
        bias: biases of ``in_proj`` / ``out_proj`` (official: none).
        scan: ``"atrous"`` (EfficientVMamba, default) or ``"cross"`` (VMamba).
        dt_min, dt_max, dt_init_floor: Mamba's ``dt`` initialisation range.
        backend: selective-scan backend (``None``, ``"naive"``, ``"chunk"``).

    Shapes:
        ``forward_2d(x [B, H, W, D]) -> (y [B, H, W, D], None)``;
        ``forward(x [B, T, D], mask=None) -> (y [B, T, D], None)`` (the ``1 x T`` grid).
    """

    causal = False

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        conv_bias: bool = True,
        bias: bool = False,
        scan: str = "atrous",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        backend: str | None = None,
    ):
        super().__init__(d_model)
        if scan not in _SCANS:
            raise ValueError(f"SS2D: scan must be one of {_SCANS}, got {scan!r}")
        inner = int(ssm_ratio * d_model)
        if inner < 1 or d_state < 1:
            raise ValueError(
                f"SS2D: need ssm_ratio * d_model >= 1 and d_state >= 1, got inner width {inner} "
                f"and d_state {d_state}"
            )
        rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        if rank < 1:
            raise ValueError(f"SS2D: dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        if d_conv > 1 and d_conv % 2 == 0:
            raise ValueError(f"SS2D: d_conv must be odd (centred 'same' padding), got {d_conv}")
        k = 4
        self.d_state, self.d_inner, self.dt_rank, self.scan = d_state, inner, rank, scan
        self.d_conv, self.backend, self.directions = d_conv, backend, k
        self.in_proj = nn.Linear(d_model, 2 * inner, bias=bias)
        self.act = nn.SiLU()
        if d_conv > 1:
            self.conv2d = nn.Conv2d(
                inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner, bias=conv_bias
            )
        # One x_proj per direction, initialised as nn.Linear(E, R + 2N, bias=False) would be.
        x_proj = torch.empty(k, rank + 2 * d_state, inner)
        for w in x_proj:
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        self.x_proj_weight = nn.Parameter(x_proj)
        # Mamba's dt initialisation: weights uniform in +-R^-0.5, softplus(bias) log-uniform in
        # [dt_min, dt_max] (floored), per direction.
        std = rank**-0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(k, inner, rank).uniform_(-std, std))
        dt = torch.exp(
            torch.rand(k, inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real A = -(1..N) per channel and direction; D = 1.
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))
        self.Ds = nn.Parameter(torch.ones(k * inner))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, d_model, bias=bias)

    def _branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, H, W, D]`` -> SSM input ``[B, H, W, E]`` (before the conv) and gate ``z``."""
        x, z = self.in_proj(x).chunk(2, dim=-1)
        return x, self.act(z)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        if self.d_conv > 1:
            x = self.conv2d(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.act(x)

    def _scan(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The four directional selective scans of ``x [B, H, W, E]`` merged back to the grid.

        ``mask [B, H, W]`` (bool) marks real positions; padded ones are identity steps.

        Everything is kept time-major (``[B, L, K, ...]`` in memory): the scan works on time-major
        tensors, so the ``[B, K*E, L]`` arguments are transposed views and need no copy.
        """
        b, h, w, e = x.shape
        k, n, r = self.directions, self.d_state, self.dt_rank
        traverse = atrous_scan if self.scan == "atrous" else cross_scan
        xs = traverse(x).transpose(1, 2).contiguous()  # [B, L, K, E]
        length = xs.shape[1]
        x_dbl = torch.einsum("blke,kce->blkc", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [r, n, n], dim=-1)
        dts = torch.einsum("blkr,ker->blke", dts, self.dt_projs_weight)
        A = -torch.exp(self.A_logs.float())
        if mask is None:
            y = selective_scan(
                xs.reshape(b, length, k * e).transpose(1, 2),
                dts.reshape(b, length, k * e).transpose(1, 2),
                A,
                Bs.permute(0, 2, 3, 1),
                Cs.permute(0, 2, 3, 1),
                D=self.Ds.float(),
                delta_bias=self.dt_projs_bias.reshape(-1).float(),
                delta_softplus=True,
                backend=self.backend,
            )  # [B, K*E, L]
            y = y.transpose(1, 2).reshape(b, length, k, e)
        else:
            flags = traverse(mask.unsqueeze(-1).to(x.dtype))[..., 0] > 0.5  # [B, K, L]
            y = self._scan_directions(xs, dts, Bs, Cs, A, flags)
        merge = atrous_merge if self.scan == "atrous" else cross_merge
        return merge(y.transpose(1, 2), h, w)

    def _scan_directions(self, xs, dts, Bs, Cs, A, flags) -> torch.Tensor:
        """One scan per direction, each with its own padding flags ``[B, L]`` (masked 1-D use)."""
        b, length, k, e = xs.shape
        a_k = A.view(k, e, -1)
        d_k = self.Ds.float().view(k, e)
        bias_k = self.dt_projs_bias.float()
        outs = [
            selective_scan(
                xs[:, :, i].transpose(1, 2),
                dts[:, :, i].transpose(1, 2),
                a_k[i],
                Bs[:, :, i].transpose(1, 2),
                Cs[:, :, i].transpose(1, 2),
                D=d_k[i],
                delta_bias=bias_k[i],
                delta_softplus=True,
                backend=self.backend,
                mask=flags[:, i],
            ).transpose(1, 2)
            for i in range(k)
        ]
        return torch.stack(outs, dim=2)  # [B, L, K, E]

    def _out(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.out_norm(y.to(z.dtype)) * z)

    def forward_2d(self, x: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        """Mix an image ``x [B, H, W, D] -> (y [B, H, W, D], None)``."""
        check_tensor("x", x, ("B", "H", "W", self.d_model), where="SS2D.forward_2d")
        if state is not None:
            raise ValueError("SS2D.forward_2d is bidirectional and takes no state; pass None")
        u, z = self._branches(x)
        return self._out(self._scan(self._conv(u)), z), None

    def forward(
        self, x: Tensor, state: None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, None]:
        _, mask = self.check_args(x, reset, mask)
        if state is not None:
            raise ValueError("SS2D is bidirectional and takes no state; pass state=None")
        if mask is None:
            y, _ = self.forward_2d(x.unsqueeze(1))
            return y.squeeze(1), None
        compaction = Compaction(mask)
        u, z = self._branches(compaction.compact(x))
        valid = compaction.valid
        # Each row without its padding: zeros after its last real token, so the convolution of
        # the last real tokens sees what it would see in the row alone.
        u = self._conv((u * valid.unsqueeze(-1).to(u.dtype)).unsqueeze(1))
        y = self._scan(u, valid.unsqueeze(1)).squeeze(1)
        return compaction.expand(self._out(y, z)), None

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, "
            f"dt_rank={self.dt_rank}, scan={self.scan}, causal=False"
        )
