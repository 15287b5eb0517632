"""S4D: the diagonal structured state-space layer as a mixer.

Follows "On the Parameterization and Initialization of Diagonal State Space Models" (Gu, Gupta,
Goel and Ré, 2022, arXiv 2206.11893). Each of the ``H = d_model`` channels is an independent
single-input single-output SSM ``x' = A x + B u``, ``y = C x + D u`` with a diagonal complex ``A``
of ``N/2`` modes (one of each conjugate pair, so the real output is ``2 Re(C x)``):

- ``A``: S4D-Lin ``A_n = -1/2 + i pi n`` (default) or S4D-Inv
  ``A_n = -1/2 + i (N / pi) (N / (2n + 1) - 1)``; the real part is kept negative as
  ``-exp(log_A_real)``.
- ``B``: complex, initialised to 1 (trained); ``C``: complex standard normal; ``D``: real normal.
- ``log dt`` per channel, uniform in ``[log dt_min, log dt_max] = [log 1e-3, log 1e-1]``.
- Discretisation: ZOH (default) or bilinear.

The parallel form computes the convolution kernel ``K_l = 2 Re(C dA^l dB)`` as a Vandermonde
product and applies it with an FFT convolution; ``step`` runs the discretised recurrence. A carried
state ``h`` continues exactly: its contribution ``2 Re(C dA^{t+1} h)`` is added and the state at the
end of the piece is returned (``mixerzoo.core.ops.s4d.s4d_scan``).

Resets and padding (the mixer contract): a kernel convolution cannot drop its state mid-row, so
with ``reset`` or ``mask`` the diagonal recurrence ``h_t = dA h_{t-1} + dB u_t`` runs through
:func:`mixerzoo.core.ops.linear_scan` instead (exact, same values; it takes ``reset`` natively, and
a padded step is the identity ``a = 1, b = 0``). It materialises ``[B, T, H, N/2]`` complex states,
so it is slower and heavier than the FFT path, which stays the path of every call without them.

Output: as in the paper's S4D layer, the SSM output plus ``D`` skip goes through GELU and a
position-wise output linear ``H -> 2H`` with GLU (``glu=False``: a plain ``H -> H`` linear). The
layer's dropout is left to the surrounding block. Deviation: the paper's optimiser settings for
the SSM parameters (smaller learning rate, no weight decay on ``A``, ``B``, ``dt``) are a training
choice and are not encoded here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops.linear_scan import linear_scan
from mixerzoo.core.ops.s4d import s4d_discretize, s4d_scan
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.validation import check_tensor

__all__ = ["S4D", "s4d_init_imag"]


def s4d_init_imag(n_modes: int, d_state: int, init: str) -> torch.Tensor:
    """Imaginary parts of the S4D initialisation for modes ``n = 0 .. n_modes - 1``.

    Args:
        n_modes: number of kept modes ``N/2``.
        d_state: full state size ``N`` (appears in S4D-Inv).
        init: ``"lin"`` (``pi n``) or ``"inv"`` (``(N / pi) (N / (2n + 1) - 1)``).
    """
    n = torch.arange(n_modes, dtype=torch.float64)
    if init == "lin":
        return math.pi * n
    if init == "inv":
        return d_state / math.pi * (d_state / (2 * n + 1) - 1)
    raise ValueError(f"S4D: unknown init {init!r}; choose 'lin' or 'inv'")


@register_mixer("s4d")
class S4D(Mixer):
    """Diagonal state-space layer (S4D) with per-channel complex SSMs.

    Args:
        d_model: width ``H``; every channel has its own SSM.
        d_state: state size ``N`` per channel (even; ``N/2`` conjugate-pair modes are stored).
        init: ``"lin"`` (S4D-Lin) or ``"inv"`` (S4D-Inv) initialisation of ``Im(A)``.
        discretization: ``"zoh"`` or ``"bilinear"``.
        dt_min: smallest initial step size.
        dt_max: largest initial step size.
        glu: output linear ``H -> 2H`` with GLU (True) or ``H -> H`` (False).
        backend: op backend (``None``, ``"naive"``, ``"chunk"``).

    Shapes:
        ``forward(x [B, T, H], state=None, *, reset=None, mask=None) -> (y [B, T, H],
        state [B, H, N/2] complex)``, ``reset`` / ``mask`` ``[B, T]`` bool;
        ``step(x_t [B, H], state) -> (y_t [B, H], state)``.
    """

    causal = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        init: str = "lin",
        discretization: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        glu: bool = True,
        backend: str | None = None,
    ):
        super().__init__(d_model)
        if d_state < 2 or d_state % 2:
            raise ValueError(f"S4D: d_state must be an even int >= 2, got {d_state}")
        if discretization not in ("zoh", "bilinear"):
            raise ValueError(
                f"S4D: unknown discretization {discretization!r}; choose 'zoh' or 'bilinear'"
            )
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"S4D: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        h, n2 = d_model, d_state // 2
        self.d_state = d_state
        self.init = init
        self.discretization = discretization
        self.backend = backend

        log_dt = torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(torch.full((h, n2), math.log(0.5)))
        self.A_imag = nn.Parameter(s4d_init_imag(n2, d_state, init).float().repeat(h, 1))
        # Complex parameters are stored as [..., 2] real views so .double()/.half() reach them.
        self.B = nn.Parameter(torch.view_as_real(torch.ones(h, n2, dtype=torch.cfloat)).clone())
        self.C = nn.Parameter(torch.view_as_real(torch.randn(h, n2, dtype=torch.cfloat)).clone())
        self.D = nn.Parameter(torch.randn(h))
        self.out_proj = nn.Linear(h, 2 * h if glu else h)
        self.glu = glu

    def discrete_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_dA, dB, C)``, each ``[H, N/2]`` complex, from the continuous parameters."""
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        B = torch.view_as_complex(self.B)
        log_dA, dB = s4d_discretize(A, B, torch.exp(self.log_dt), self.discretization)
        return log_dA, dB, torch.view_as_complex(self.C)

    def _output(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(y + x * self.D)
        y = self.out_proj(y)
        return F.glu(y, dim=-1) if self.glu else y

    def forward(
        self, x: Tensor, state: Tensor | None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, Tensor]:
        reset, mask = self.check_args(x, reset, mask)
        log_dA, dB, C = self.discrete_parameters()
        if reset is None and mask is None:
            y, state = s4d_scan(x, log_dA, dB, C, h0=state, backend=self.backend)
        else:
            y, state = self._recurrence(x, log_dA, dB, C, state, reset, mask)
        return self._output(y, x), state

    def _recurrence(self, x, log_dA, dB, C, state, reset, mask):
        """The recurrence as a linear scan over ``[B, T, H, N/2]``, with resets and padding."""
        if state is not None:
            check_tensor(
                "state",
                state,
                (x.shape[0], self.d_model, self.d_state // 2),
                where="S4D.forward",
                allow_complex=True,
            )
            state = state.to(dB.dtype)
        drive = dB * x.to(dB.dtype).unsqueeze(-1)  # dB u_t
        decay = torch.exp(log_dA).expand_as(drive)
        if mask is not None:
            # A padded step is the identity on the state: h_t = 1 * h_{t-1} + 0.
            keep = mask[:, :, None, None]
            decay = torch.where(keep, decay, torch.ones_like(decay))
            drive = torch.where(keep, drive, torch.zeros_like(drive))
        h, last = linear_scan(decay, drive, h0=state, reset=reset, backend=self.backend)
        y = 2 * (C * h).sum(-1).real
        return y.to(x.dtype), last

    def step(
        self, x_t: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_step_input(x_t)
        log_dA, dB, C = self.discrete_parameters()
        if state is None:
            state = self.init_state(x_t.shape[0], x_t.device, x_t.dtype)
        state = torch.exp(log_dA) * state + dB * x_t.unsqueeze(-1)
        y = 2 * (C * state).sum(-1).real
        return self._output(y.to(x_t.dtype), x_t), state

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Zero complex state ``[B, H, N/2]`` (complex counterpart of ``dtype``)."""
        real = dtype if dtype is not None else self.log_dt.dtype
        cdtype = torch.complex128 if real == torch.float64 else torch.complex64
        device = device if device is not None else self.log_dt.device
        return torch.zeros(batch_size, self.d_model, self.d_state // 2, dtype=cdtype, device=device)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, init={self.init}, "
            f"discretization={self.discretization}, glu={self.glu}"
        )
