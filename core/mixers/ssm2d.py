"""Chimera's 2-D selective state-space model as a mixer.

Follows "Chimera: Effectively Modeling Multivariate Time Series with 2-Dimensional State Space
Models" (Behrouz, Santacatterina and Zabih, NeurIPS 2024, arXiv 2406.04320). A multivariate
series is a grid of tokens ``x[t, v]`` (time ``t``, variate ``v``). The 2-D SSM carries a state
``h1`` along time and a state ``h2`` along variates (``core.ops.ssm2d.ssm2d_scan``):

    h1[t,v] = abar1 h1[t-1,v] + (abar1 - 1)/A1 (A2 h2[t-1,v] + B1 x[t,v])
    h2[t,v] = abar4 h2[t,v-1] + (abar4 - 1)/A4 (A3 h1[t,v-1] + B2 x[t,v])
    y[t,v]  = C1 h1[t,v] + C2 h2[t,v]

with diagonal ``A1 .. A4`` (data-independent parameters) and input-dependent (selective) step
sizes ``dt1 = softplus(.)``, ``dt2 = softplus(.)`` and vectors ``B1, B2, C1, C2``, all linear
functions of the token. Variates have no natural order, so a forward and a backward module along
the variate axis are added: the mixer is causal in time and bidirectional across variates, hence
``causal = False`` (no ``step``).

From the paper (through the descriptions available here, see ``core.ops.ssm2d`` for the
provenance): the neighbour structure above (``h1`` from the previous time step of the same
variate, weighted by ``A1`` on ``h1`` and ``A2`` on ``h2``; ``h2`` from the previous variate at
the same time step, through ``A3``, ``A4``); zero-order-hold discretisation with one step size per
axis; ``B_i``, ``C_i``, ``Delta_i`` functions of the input; separate forward and backward modules
over the variates.

Reconstruction (not verified against the paper's equations): the Mamba-style gated block around
the scan (``in_proj`` to ``(u, z)`` of width ``E = expand * D``, ``u = silu(u)``, the two 2-D SSMs
plus a ``D`` skip, times ``silu(z)``, ``out_proj`` back to ``D``); summing the two directions; the
projections that produce ``dt1, dt2, B, C``; the initialisation (``A1``, ``A4``: Mamba's
S4D-Real ``-(n + 1)``; couplings ``A2``, ``A3``: half of it; Mamba's ``dt`` initialisation);
no depthwise convolution before the scan.

Shapes:
    ``forward(x [B, T, D])`` treats the sequence as time with a single variate (``V = 1``).
    ``forward_2d(x [B, T, V, D])`` (the mixer contract's grid interface, ``H`` = time, ``W`` =
    variates) is the 2-D case used by the Chimera model. Both take and return a state that
    continues along time (``forward_2d`` over two time pieces equals one call).

Padding and resets (the mixer contract): a padding ``mask [B, T]`` over time makes the padded
time steps identity steps of both states (``core.ops.ssm2d``, ``mask``), so padding changes no
real output and the returned state is the one after each row's last real time step;
``forward_2d`` takes the same ``mask [B, T]`` over its time axis. Being bidirectional across
variates, the mixer is not causal (``causal = False``, no ``step``) and refuses ``reset``.

Deviations / simplifications (documented on purpose):
    - The paper's Chimera layer combines several 2-D SSM heads with different discretisations
      (long-term progression vs. seasonal patterns; the paper is described as three-headed);
      this mixer is one bidirectional 2-D selective SSM and the Chimera model combines two of
      them per layer.
    - The paper restricts the time-axis matrices ``A1``, ``A2`` to a structured form (to recover
      autoregressive processes) and uses diagonal ``A3``, ``A4``; here all four are diagonal.
    - The discretisation of the coupling terms is per-axis ZOH (see ``core.ops.ssm2d``).
    - The fast paths are exact sequential walks over the grid, not the paper's 2-D parallel
      scan: on the GPU fused Triton kernels (forward and backward), on the CPU a loop over the
      shorter axis with a linear scan along the other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops.ssm2d import ssm2d_scan
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.validation import check_tensor

__all__ = ["SSM2D"]

State2D = dict[str, tuple[torch.Tensor, torch.Tensor]]


class _Directional2DSSM(nn.Module):
    """Parameters and projections of one 2-D selective SSM (one variate direction)."""

    def __init__(self, d_inner: int, d_state: int, dt_rank: int, dt_min: float, dt_max: float):
        super().__init__()
        self.d_state = d_state
        self.dt_rank = dt_rank
        self.x_proj = nn.Linear(d_inner, 2 * dt_rank + 4 * d_state, bias=False)
        self.dt1_proj = nn.Linear(dt_rank, d_inner)
        self.dt2_proj = nn.Linear(dt_rank, d_inner)
        for proj in (self.dt1_proj, self.dt2_proj):
            # Mamba's dt initialisation: softplus(bias) log-uniform in [dt_min, dt_max].
            nn.init.uniform_(proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
            dt = torch.exp(
                torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            )
            with torch.no_grad():
                proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        s4d_real = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A1_log = nn.Parameter(torch.log(s4d_real))
        self.A4_log = nn.Parameter(torch.log(s4d_real.clone()))
        self.A2 = nn.Parameter(-0.5 * s4d_real.clone())
        self.A3 = nn.Parameter(-0.5 * s4d_real.clone())

    def forward(
        self,
        u: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None,
        backend: str | None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        n, r = self.d_state, self.dt_rank
        dt1_in, dt2_in, B1, B2, C1, C2 = self.x_proj(u).split([r, r, n, n, n, n], dim=-1)
        dt1 = F.softplus(self.dt1_proj(dt1_in))
        dt2 = F.softplus(self.dt2_proj(dt2_in))
        A1, A4 = -torch.exp(self.A1_log), -torch.exp(self.A4_log)
        return ssm2d_scan(
            u, dt1, dt2, A1, self.A2, self.A3, A4, B1, B2, C1, C2, state, backend, mask=mask
        )


@register_mixer("ssm2d")
class SSM2D(Mixer):
    """Bidirectional-over-variates 2-D selective SSM (Chimera).

    Args:
        d_model: width ``D``.
        d_state: state size ``N`` of each of ``h1`` and ``h2``.
        expand: inner width ``E = expand * D``.
        dt_rank: rank of the step-size projections (default ``ceil(D / 16)``).
        dt_min: smallest initial step size.
        dt_max: largest initial step size.
        bidirectional: add the backward-over-variates module (the paper's default).
        backend: ``ssm2d_scan`` backend.

    Shapes:
        ``forward(x [B, T, D], state=None, *, mask=None) -> (y [B, T, D], state)`` (one variate);
        ``forward_2d(x [B, T, V, D], state=None, *, mask=None) -> (y [B, T, V, D], state)``; the
        state is ``{"fwd": (h1, h2), "bwd": (h1, h2)}`` with tensors ``[B, V, E, N]``; ``mask``
        is ``[B, T]`` bool over time.
    """

    causal = False

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = True,
        backend: str | None = None,
    ):
        super().__init__(d_model)
        if d_state < 1 or expand < 1:
            raise ValueError(f"SSM2D: d_state and expand must be >= 1, got {d_state}, {expand}")
        self.d_state = d_state
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank if dt_rank is not None else math.ceil(d_model / 16)
        self.bidirectional = bidirectional
        self.backend = backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner)
        args = (self.d_inner, d_state, self.dt_rank, dt_min, dt_max)
        self.fwd = _Directional2DSSM(*args)
        self.bwd = _Directional2DSSM(*args) if bidirectional else None
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model)

    def forward(
        self, x: Tensor, state: State2D | None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, State2D]:
        # Refuses any reset: bidirectional across variates.
        _, mask = self.check_args(x, reset, mask)
        y, state = self._forward4d(x.unsqueeze(2), state, mask)
        return y.squeeze(2), state

    def forward_2d(
        self, x: torch.Tensor, state: State2D | None = None, *, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State2D]:
        """The 2-D case: ``x [B, T, V, D] -> y [B, T, V, D]`` (causal in T, bidirectional in V);
        ``mask [B, T]`` (true = real time step) skips padded time steps."""
        check_tensor("x", x, ("B", "T", "V", self.d_model), where="SSM2D.forward_2d")
        return self._forward4d(x, state, self.check_mask(mask, x))

    def _forward4d(
        self, x: torch.Tensor, state: State2D | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, State2D]:
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(u)
        state = state or {}
        y, new_state = self.fwd(u, state.get("fwd"), self.backend, mask)
        out = {"fwd": new_state}
        if self.bwd is not None:
            back = state.get("bwd")
            if back is not None:
                back = tuple(s.flip(1) for s in back)
            y_b, back = self.bwd(u.flip(2), back, self.backend, mask)
            y = y + y_b.flip(2)
            # Stored in the natural variate order; flipped again on the way in.
            out["bwd"] = tuple(s.flip(1) for s in back)
        y = (y + u * self.D) * F.silu(z)
        return self.out_proj(y), out

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> None:
        """``None``: the zero state (its variate count is only known from the input)."""
        return None

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_inner={self.d_inner}, "
            f"bidirectional={self.bidirectional}, causal={self.causal}"
        )
