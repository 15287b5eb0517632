"""S5: the simplified (MIMO, diagonal) state-space layer as a mixer, with resettable state.

Follows "Simplified State Space Layers for Sequence Modeling" (Smith, Warrington and Linderman,
2023, arXiv 2208.04933). One multi-input multi-output SSM over all ``H = d_model`` channels with a
diagonal complex state of size ``P``:

    x_k = Lbar x_{k-1} + Bbar u_k,    y_k = 2 Re(C~ x_k) + D u_k,

- Initialisation: ``Lambda, V`` from the eigendecomposition of HiPPO-N, the normal part of
  HiPPO-LegS (``-1/2 I +`` a skew-symmetric matrix), optionally as ``J`` blocks of size ``P / J``
  (block-diagonal ``V``); ``B~ = V^{-1} B`` with ``B`` LeCun-normal, ``C~ = C V`` with ``C`` truncated
  standard normal (real and imaginary parts), ``D`` standard normal.
- Conjugate symmetry: only ``P / 2`` modes are stored and the output is ``2 Re(...)``.
- A learned log time-scale per state, initialised uniform in ``[log 1e-3, log 1e-1]``; ZOH
  discretisation ``Lbar = exp(Lambda dt)``, ``Bbar = (Lbar - 1) / Lambda B~``.
- ``Re(Lambda)`` is clipped to ``<= -1e-4`` (the paper's ``clip_eigs``) to stay stable.
- The parallel form uses ``mixerzoo.core.ops.linear_scan`` (the paper's associative scan).
- Output nonlinearity as in the paper's layer: ``"half_glu1"`` (default: ``g = gelu(y)``,
  ``g * sigmoid(W g)``), ``"half_glu2"``, ``"full_glu"``, ``"gelu"`` or ``"none"``.

Resettable state, following "Structured State Space Models for In-Context Reinforcement
Learning" (Lu et al., 2023, arXiv 2303.03982), through the mixer contract's ``reset`` keyword:
``reset [B, T]`` marks episode starts, where the state is cleared before the update,
``x_k = Bbar u_k`` (the resettable scan of :func:`mixerzoo.core.ops.linear_scan`), so
``forward(x, state, reset=reset)`` equals separate forwards over the segments. Between ``step``
calls, episodes are reset with :func:`mixerzoo.core.state.reset_state` (the state is zeroed).
A padding ``mask [B, T]`` makes the padded steps identity steps (``Lbar = 1``, ``Bbar u = 0``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops.linear_scan import linear_scan
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.validation import check_tensor

__all__ = ["S5", "hippo_n_eig"]

_ACTIVATIONS = ("half_glu1", "half_glu2", "full_glu", "gelu", "none")


def hippo_n_eig(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigendecomposition of HiPPO-N (normal part of HiPPO-LegS) of size ``size``.

    HiPPO-LegS is ``A_nk = -sqrt(2n+1) sqrt(2k+1)`` (n > k), ``-(n+1)`` (n = k), 0 (n < k); adding
    ``p p^T`` with ``p_n = sqrt(n + 1/2)`` gives ``-1/2 I + S`` with ``S`` skew-symmetric.

    Returns:
        ``(Lambda [size] complex128, V [size, size] complex128)`` with ``A_N = V diag(Lambda) V^H``,
        ordered so that the first half holds one mode of every conjugate pair.
    """
    q = torch.sqrt(1 + 2 * torch.arange(size, dtype=torch.float64))
    legs = -(
        torch.tril(q[:, None] * q[None, :]) - torch.diag(torch.arange(size, dtype=torch.float64))
    )
    p = torch.sqrt(torch.arange(size, dtype=torch.float64) + 0.5)
    normal = legs + p[:, None] * p[None, :]
    skew = normal + 0.5 * torch.eye(size, dtype=torch.float64)
    # S is real skew-symmetric, so -iS is Hermitian with real eigenvalues in +- pairs (ascending).
    imag, vecs = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    lam = torch.complex(torch.full_like(imag, -0.5), imag)
    return lam, vecs


@register_mixer("s5")
class S5(Mixer):
    """S5 layer: a MIMO diagonal SSM over all channels, with episode resets.

    Args:
        d_model: width ``H``.
        d_state: state size ``P`` (before conjugate symmetry; ``P / 2`` modes are stored).
        n_blocks: number ``J`` of HiPPO-N blocks of the initialisation; ``P / J`` must be even.
        dt_min: smallest initial time scale.
        dt_max: largest initial time scale.
        activation: ``"half_glu1"``, ``"half_glu2"``, ``"full_glu"``, ``"gelu"`` or ``"none"``.
        backend: ``linear_scan`` backend.

    Shapes:
        ``forward(x [B, T, H], state=None, *, reset=None, mask=None) -> (y [B, T, H],
        state [B, P/2] complex)`` with ``reset`` / ``mask`` ``[B, T]`` bool;
        ``step(x_t [B, H], state)``.
    """

    causal = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        n_blocks: int = 1,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        activation: str = "half_glu1",
        backend: str | None = None,
    ):
        super().__init__(d_model)
        if n_blocks < 1 or d_state % n_blocks or (d_state // n_blocks) % 2:
            raise ValueError(
                f"S5: d_state ({d_state}) must split into n_blocks ({n_blocks}) blocks of even "
                f"size (conjugate pairs)"
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(f"S5: unknown activation {activation!r}; choose one of {_ACTIVATIONS}")
        h, p = d_model, d_state
        self.d_state = d_state
        self.n_blocks = n_blocks
        self.activation = activation
        self.backend = backend

        block = p // n_blocks
        lam, vecs = hippo_n_eig(block)
        half = block // 2
        lam, vecs = lam[:half].repeat(n_blocks), vecs[:, :half]
        v_full = torch.block_diag(*[vecs] * n_blocks)  # [P, P/2]
        v_inv = v_full.conj().T  # V is unitary, [P/2, P]
        self.Lambda_re = nn.Parameter(lam.real.float())
        self.Lambda_im = nn.Parameter(lam.imag.float())
        b = torch.randn(p, h, dtype=torch.float64) / math.sqrt(h)  # LeCun normal, fan_in = H
        self.B = nn.Parameter(torch.view_as_real(v_inv @ b.to(torch.complex128)).float())
        c = torch.complex(
            nn.init.trunc_normal_(torch.empty(h, p, dtype=torch.float64), a=-2.0, b=2.0),
            nn.init.trunc_normal_(torch.empty(h, p, dtype=torch.float64), a=-2.0, b=2.0),
        )
        self.C = nn.Parameter(torch.view_as_real(c @ v_full).float())
        self.D = nn.Parameter(torch.randn(h))
        log_dt = torch.rand(p // 2) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        if activation in ("half_glu1", "half_glu2", "full_glu"):
            self.gate_proj = nn.Linear(h, h)
        if activation == "full_glu":
            self.value_proj = nn.Linear(h, h)

    def discrete_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Lbar [P/2], Bbar [P/2, H], C~ [H, P/2])`` complex, by ZOH."""
        lam = torch.complex(self.Lambda_re.clamp(max=-1e-4), self.Lambda_im)
        lam_bar = torch.exp(lam * torch.exp(self.log_dt))
        b_bar = ((lam_bar - 1) / lam).unsqueeze(-1) * torch.view_as_complex(self.B)
        return lam_bar, b_bar, torch.view_as_complex(self.C)

    def _output(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = y + x * self.D
        if self.activation == "none":
            return y
        g = F.gelu(y)
        if self.activation == "gelu":
            return g
        if self.activation == "half_glu1":
            return g * torch.sigmoid(self.gate_proj(g))
        if self.activation == "half_glu2":
            return y * torch.sigmoid(self.gate_proj(g))
        return self.value_proj(g) * torch.sigmoid(self.gate_proj(g))

    def forward(
        self, x: Tensor, state: Tensor | None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, Tensor]:
        reset, mask = self.check_args(x, reset, mask)
        bsz = x.shape[0]
        if state is not None:
            check_tensor(
                "state", state, (bsz, self.d_state // 2), where="S5.forward", allow_complex=True
            )
        lam_bar, b_bar, c = self.discrete_parameters()
        # Both projections as one real matrix product each (a complex product of the real input
        # would cost four): the input one writes interleaved (re, im) pairs, read as complex
        # without a copy; the output one takes 2 Re(C~ h) = 2 (C_re h_re - C_im h_im).
        w_in = torch.view_as_real(b_bar).transpose(1, 2).reshape(-1, b_bar.shape[-1])
        bu = torch.view_as_complex(
            F.linear(x.to(w_in.dtype), w_in).unflatten(-1, (b_bar.shape[0], 2))
        )
        decay = lam_bar.expand_as(bu)
        if mask is not None:
            # A padded step is the identity on the state: x_k = 1 * x_{k-1} + 0.
            keep = mask.unsqueeze(-1)
            decay = torch.where(keep, decay, torch.ones_like(decay))
            bu = torch.where(keep, bu, torch.zeros_like(bu))
        h, last = linear_scan(decay, bu, h0=state, reset=reset, backend=self.backend)
        w_out = 2 * torch.stack((c.real, -c.imag), dim=-1).flatten(1)
        y = F.linear(torch.view_as_real(h).flatten(-2), w_out)
        return self._output(y.to(x.dtype), x), last

    def step(
        self, x_t: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_step_input(x_t)
        if state is None:
            state = self.init_state(x_t.shape[0], x_t.device, x_t.dtype)
        lam_bar, b_bar, c = self.discrete_parameters()
        state = lam_bar * state + x_t.to(b_bar.dtype) @ b_bar.T
        y = 2 * (state @ c.T).real
        return self._output(y.to(x_t.dtype), x_t), state

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Zero complex state ``[B, P/2]`` (complex counterpart of ``dtype``)."""
        real = dtype if dtype is not None else self.log_dt.dtype
        cdtype = torch.complex128 if real == torch.float64 else torch.complex64
        device = device if device is not None else self.log_dt.device
        return torch.zeros(batch_size, self.d_state // 2, dtype=cdtype, device=device)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, n_blocks={self.n_blocks}, "
            f"activation={self.activation}"
        )
