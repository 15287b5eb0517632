"""Mamba (selective state-space) mixers: the causal ``mamba`` block and the bidirectional ``bimamba``.

``mamba`` follows the Mamba block of "Mamba: Linear-Time Sequence Modeling with Selective State
Spaces" (Gu & Dao, 2023, arXiv 2312.00752) as implemented by mamba-ssm's ``Mamba`` module: input
projection to ``2 * d_inner`` (signal and gate ``z``), causal depthwise convolution + SiLU, the
input-dependent projections ``x -> (dt, B, C)`` with a low-rank ``dt`` (``dt_proj``), the selective
scan with ``softplus(dt + bias)`` step sizes, ``A = -exp(A_log)`` (S4D-real init ``A = -[1..N]``),
skip ``D`` (ones) and the ``silu(z)`` gate, and the output projection. The initialisation of
``dt_proj`` follows the paper (weights uniform in ``+-dt_rank^-0.5 * dt_scale``, bias the inverse
softplus of step sizes log-uniform in ``[dt_min, dt_max]``).

The convolution is :class:`mixerzoo.core.layers.CausalDepthwiseConv1d`, which keeps
``nn.Conv1d``'s parameter names and shapes (``conv1d.weight [d_inner, 1, d_conv]``,
``conv1d.bias``), so state dicts of mamba-ssm's layout load unchanged.

Streaming: the state is ``(conv_state [B, d_conv - 1, d_inner], ssm_state [B, d_inner, d_state])``
(the last ``d_conv - 1`` conv inputs, in the convolution layer's time-first layout, and the SSM
state), so ``forward`` continues exactly from a carried state and ``step`` runs the recurrent
update one token at a time. Deviation from mamba-ssm: its ``conv_state`` is
``[B, d_inner, d_conv]`` (channels first, including the current token); here it holds the
``d_conv - 1`` previous inputs, time first, which is what continuing a sequence needs (before
issue 11 mixerzoo stored it channels first, ``[B, d_inner, d_conv - 1]``).

Resets and padding (the mixer contract): ``reset [B, T]`` drops both states before the flagged
steps (the convolution reads zeros across the boundary, the scan zeroes its state there, as
mamba-ssm's ``seq_idx``); with ``mask [B, T]`` the convolution skips the padded steps and the scan
treats them as identity steps (step size 0), so the returned state is the one after each row's
last real token.

``bimamba`` is the bidirectional Mamba layer of S-Mamba, "Is Mamba Effective for Time Series
Forecasting?" (Wang et al., 2024, arXiv 2403.11144): two independent Mamba blocks, one reading
the tokens in order and one reading them reversed (its output flipped back), summed. It looks at
the whole sequence, so it is not causal, has no ``step`` and takes no ``reset``; a padding mask
goes to both directions.

The selective scan runs on :func:`mixerzoo.core.ops.selective_scan`; ``backend="mamba_ssm"`` (or
``MIXERZOO_BACKEND=mamba_ssm``) asks for mamba-ssm's fused CUDA kernel where it is installed, for
calls without a carried SSM state or resets; nothing requires it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixerzoo.core.layers import CausalDepthwiseConv1d
from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops import selective_scan
from mixerzoo.core.registry import register_mixer

__all__ = ["Mamba", "BiMamba"]

MambaState = tuple[torch.Tensor, torch.Tensor]


@register_mixer("mamba")
class Mamba(Mixer):
    """The Mamba block (selective SSM with gating), causal, with a streaming state.

    Args:
        d_model: model width ``D``.
        d_state: SSM state size ``N`` per channel.
        d_conv: kernel size of the causal depthwise convolution.
        expand: ``d_inner = expand * d_model``.
        dt_rank: rank of the step-size projection; ``"auto"`` is ``ceil(d_model / 16)``.
        dt_min: smallest initial step size.
        dt_max: largest initial step size.
        dt_init: ``"random"`` (uniform) or ``"constant"`` initialisation of ``dt_proj.weight``.
        dt_scale: scale of the ``dt_proj.weight`` initialisation.
        dt_init_floor: lower clamp of the initial step sizes.
        bias: biases in the input and output projections.
        conv_bias: bias in the convolution.
        backend: selective-scan backend (``None`` automatic, ``"naive"``, ``"chunk"``,
            ``"mamba_ssm"``).

    Shapes:
        ``forward(x [B, T, D], state=None, *, reset=None, mask=None) -> (y [B, T, D],
        (conv_state, ssm_state))`` with ``conv_state [B, d_conv - 1, d_inner]`` and
        ``ssm_state [B, d_inner, d_state]``; ``reset``, ``mask``: ``[B, T]`` bool.
    """

    causal = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        bias: bool = False,
        conv_bias: bool = True,
        backend: str | None = None,
    ):
        super().__init__(d_model)
        if d_state <= 0 or d_conv <= 0 or expand <= 0:
            raise ValueError(
                f"Mamba: d_state, d_conv and expand must be positive, got {d_state}, {d_conv}, {expand}"
            )
        if dt_init not in ("random", "constant"):
            raise ValueError(f"Mamba: dt_init must be 'random' or 'constant', got {dt_init!r}")
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.backend = backend

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        # nn.Conv1d's parameter layout (conv1d.weight [d_inner, 1, d_conv], conv1d.bias), so
        # state dicts of the earlier nn.Conv1d version load unchanged.
        self.conv1d = CausalDepthwiseConv1d(self.d_inner, d_conv, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

        # dt_proj: weights keep the variance of dt at initialisation; the bias is the inverse
        # softplus of step sizes drawn log-uniformly in [dt_min, dt_max].
        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                self.dt_proj.weight.fill_(std)
            else:
                self.dt_proj.weight.uniform_(-std, std)
            dt = torch.exp(
                torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            ).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

        # S4D-real initialisation: A[d, n] = -(n + 1), stored as log(-A) to keep A negative.
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> MambaState:
        dtype = dtype or self.in_proj.weight.dtype
        device = device or self.in_proj.weight.device
        conv_state = self.conv1d.init_state(batch_size, device=device, dtype=dtype)
        # The scan runs in at least float32, so its state does too.
        ssm_dtype = torch.promote_types(dtype, torch.float32)
        ssm_state = torch.zeros(
            batch_size, self.d_inner, self.d_state, device=device, dtype=ssm_dtype
        )
        return conv_state, ssm_state

    def _check_state(self, state: MambaState, batch: int, where: str) -> MambaState:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(
                f"Mamba.{where}: state must be (conv_state, ssm_state) as returned by "
                f"init_state/forward, got {type(state).__name__}"
            )
        conv_state, ssm_state = state
        want = [(batch, self.d_conv - 1, self.d_inner), (batch, self.d_inner, self.d_state)]
        for name, value, shape in zip(("conv_state", "ssm_state"), state, want):
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"Mamba.{where}: {name} must have shape {list(shape)}, got {tuple(value.shape)}"
                )
        return conv_state, ssm_state

    def forward(
        self, x: Tensor, state: MambaState | None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, MambaState]:
        reset, mask = self.check_args(x, reset, mask)
        conv_state = ssm_state = None
        if state is not None:
            conv_state, ssm_state = self._check_state(state, x.shape[0], "forward")
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        # Causal depthwise convolution continuing from the d_conv - 1 previous inputs (zeros at
        # the start); it reads nothing across a reset and skips padded steps.
        u, new_conv_state = self.conv1d(xs, conv_state, reset=reset, mask=mask)
        u = F.silu(u)  # [B, T, d_inner]
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        # dt_proj's bias is added inside the scan (delta_bias), before the softplus.
        delta = F.linear(dt, self.dt_proj.weight)
        y, ssm_state = selective_scan(
            u.transpose(1, 2),
            delta.transpose(1, 2),
            -torch.exp(self.A_log),
            B.transpose(1, 2),
            C.transpose(1, 2),
            D=self.D,
            z=z.transpose(1, 2),
            delta_bias=self.dt_proj.bias,
            delta_softplus=True,
            return_last_state=True,
            h0=ssm_state,
            backend=self.backend,
            reset=reset,
            mask=mask,
        )
        out = self.out_proj(y.transpose(1, 2))
        return out, (new_conv_state, ssm_state)

    def step(self, x_t: torch.Tensor, state: MambaState | None) -> tuple[torch.Tensor, MambaState]:
        """One token ``x_t [B, D]`` with the recurrent update (no scan)."""
        self.check_step_input(x_t)
        batch = x_t.shape[0]
        if state is None:
            state = self.init_state(batch, x_t.device, x_t.dtype)
        conv_state, ssm_state = self._check_state(state, batch, "step")
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)
        u, conv_state = self.conv1d.step(xs, conv_state)
        u = F.silu(u)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        compute = torch.promote_types(x_t.dtype, torch.float32)
        delta = F.softplus(self.dt_proj(dt)).to(compute)  # [B, d_inner]
        A = -torch.exp(self.A_log.to(compute))
        u_c = u.to(compute)
        h = torch.exp(delta[..., None] * A) * ssm_state.to(compute)
        h = h + (delta * u_c)[..., None] * B.to(compute)[:, None, :]
        y = (h * C.to(compute)[:, None, :]).sum(-1) + self.D.to(compute) * u_c
        y = (y * F.silu(z.to(compute))).to(x_t.dtype)
        return self.out_proj(y), (conv_state, h)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, "
            f"d_conv={self.d_conv}, dt_rank={self.dt_rank}, causal={self.causal}"
        )


@register_mixer("bimamba")
class BiMamba(Mixer):
    """Bidirectional Mamba (S-Mamba): a forward and a backward Mamba block, outputs summed.

    Args:
        d_model: model width ``D``.
        d_state, d_conv, expand, dt_rank, bias, conv_bias, backend: as :class:`Mamba`, used by both
            directions (each has its own parameters).

    Shapes:
        ``forward(x [B, T, D], state=None, *, mask=None) -> (y [B, T, D], None)``; a padding
        ``mask [B, T]`` goes to both directions (flipped for the backward one); no ``reset``.
    """

    causal = False

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        bias: bool = False,
        conv_bias: bool = True,
        backend: str | None = None,
    ):
        super().__init__(d_model)
        kwargs = dict(
            d_state=d_state,
            d_conv=d_conv,
            expand=expand,
            dt_rank=dt_rank,
            bias=bias,
            conv_bias=conv_bias,
            backend=backend,
        )
        self.forward_mamba = Mamba(d_model, **kwargs)
        self.backward_mamba = Mamba(d_model, **kwargs)

    def forward(
        self, x: Tensor, state: None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, None]:
        _, mask = self.check_args(x, reset, mask)  # refuses any reset: this mixer is not causal
        if state is not None:
            raise ValueError(
                "BiMamba reads the whole sequence in both directions and takes no state; pass "
                "state=None (use the causal 'mamba' mixer for streaming)"
            )
        y_forward, _ = self.forward_mamba(x, mask=mask)
        y_backward, _ = self.backward_mamba(
            x.flip(1), mask=mask.flip(1) if mask is not None else None
        )
        return y_forward + y_backward.flip(1), None
