"""SpaceTime's companion-matrix SSM as a mixer, with a closed-loop forecaster.

Follows "Effectively Modeling Time Series with Simple Discrete State Spaces" (Zhang, Saab, Poli,
Dao, Goel and Ré, 2023, arXiv 2303.09489). Each head is a discrete SSM

    h_t = A h_{t-1} + b u_t,    y_t = c . h_t + d u_t,    A = S + a e_N^T,

with ``S`` the down-shift matrix and a learnable last column ``a`` (a companion matrix, whose
characteristic polynomial has the coefficients ``a``: it can express AR, MA, ARIMA and exponential
smoothing). ``a``, ``b``, ``c`` are initialised uniform in ``+-1/sqrt(N)`` (the official code's
"xavier" option; its published configs use ``kernel_init: normal``, which the SpaceTime model
applies) and ``d`` (the skip) to ones. Heads are shared by ``d_model / n_heads`` consecutive
channels (``n_heads = d_model``: one SSM per channel).

Parallel form: the kernel ``K_j = c^T A^j b`` from Krylov vectors (``core.ops.companion``),
applied with an FFT convolution; ``step`` runs the recurrence. A carried state continues exactly.

Resets and padding (the mixer contract): one kernel convolution over the row cannot drop the
state mid-row or skip steps, so with ``reset`` or ``mask`` the mixer runs the exact recurrence
one time step at a time (``O(T)`` structured ``O(N)`` updates in a Python loop: much slower than
the FFT path for long sequences, and used only for such calls; SpaceTime never makes them). A
reset zeros the state before its step; a padded step leaves the state unchanged.

Closed loop (Sec. 3.2 of the paper): for forecasting, the next input is predicted from the state,
``u_{t+1} = k . h_t``, so the state evolves with ``A + b k^T`` and no input is needed:
``closed_loop(state, horizon)`` returns the outputs and the predicted inputs over the horizon
(``feedback=True`` adds the learnable ``k``).

Deviations: (1) SpaceTime divides ``a`` by its L1 norm for stability; here ``a`` is divided by
``max(1, ||a||_1)`` (``norm_a=True``), i.e. projected onto the L1 ball, which still bounds every
root of the characteristic polynomial by 1 but leaves small ``a`` (e.g. AR coefficients) exact.
(2) The kernel uses Krylov-by-squaring instead of the paper's FFT algorithm (same values).
(3) SpaceTime's closed-loop layer assumes a zero state before the lag window; here it starts from
the state the mixer returns, so it forecasts from any history. No output projection: channel
mixing is left to the block's MLP, as in SpaceTime.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops.companion import (
    companion_apply,
    companion_krylov,
    companion_matrix,
    krylov_doubling,
)
from mixerzoo.core.ops.s4d import causal_conv
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.validation import check_tensor

__all__ = ["CompanionSSM"]


@register_mixer("companion_ssm")
class CompanionSSM(Mixer):
    """Companion-matrix SSM (SpaceTime) over ``d_model`` channels.

    Args:
        d_model: width ``D``.
        d_state: companion state size ``N``.
        n_heads: number of distinct SSMs; ``D`` must be divisible by it (default ``D``).
        norm_a: project ``a`` onto the unit L1 ball (stability; see the module docstring).
        skip: learnable skip ``d u_t`` per channel.
        feedback: add the closed-loop feedback vector ``k`` (used only by ``closed_loop``).
        backend: op backend for the Krylov vectors and the convolution.

    Shapes:
        ``forward(x [B, T, D], state=None, *, reset=None, mask=None) -> (y [B, T, D],
        state [B, D, N])`` with ``reset`` / ``mask`` ``[B, T]`` bool;
        ``closed_loop(state [B, D, N], horizon) -> (y [B, horizon, D], u [B, horizon, D])``.
    """

    causal = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        n_heads: int | None = None,
        norm_a: bool = True,
        skip: bool = True,
        feedback: bool = False,
        backend: str | None = None,
    ):
        super().__init__(d_model)
        n_heads = d_model if n_heads is None else n_heads
        if n_heads <= 0 or d_model % n_heads:
            raise ValueError(
                f"CompanionSSM: d_model ({d_model}) must be divisible by n_heads ({n_heads})"
            )
        if d_state < 1:
            raise ValueError(f"CompanionSSM: d_state must be >= 1, got {d_state}")
        self.d_state = d_state
        self.n_heads = n_heads
        self.norm_a = norm_a
        self.backend = backend
        bound = 1.0 / math.sqrt(d_state)

        def init() -> nn.Parameter:
            return nn.Parameter(torch.empty(n_heads, d_state).uniform_(-bound, bound))

        self.a, self.b, self.c = init(), init(), init()
        self.k = init() if feedback else None
        self.d = nn.Parameter(torch.ones(d_model)) if skip else None
        # Channel -> head: consecutive channels share a head.
        self.register_buffer(
            "head_of_channel",
            torch.arange(d_model) // (d_model // n_heads),
            persistent=False,
        )

    def last_column(self) -> torch.Tensor:
        """``a`` as used in ``A`` (after the optional L1 projection): ``[n_heads, N]``."""
        if not self.norm_a:
            return self.a
        return self.a / self.a.abs().sum(-1, keepdim=True).clamp(min=1.0)

    def kernel(self, length: int) -> torch.Tensor:
        """Per-channel convolution kernel ``K [D, length]`` (without the skip)."""
        kb = companion_krylov(self.last_column(), self.b, length, backend=self.backend)
        return torch.einsum("kln,kn->kl", kb, self.c)[self.head_of_channel]

    def _skip(self, u: torch.Tensor) -> torch.Tensor | float:
        return u * self.d if self.d is not None else 0.0

    def forward(
        self, x: Tensor, state: Tensor | None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, Tensor]:
        reset, mask = self.check_args(x, reset, mask)
        if reset is not None or mask is not None:
            return self._recurrence(x, state, reset, mask)
        bsz, t, _ = x.shape
        a = self.last_column()
        heads = self.head_of_channel
        kb = companion_krylov(a, self.b, t + 1, backend=self.backend)  # A^j b, j <= T
        kernel = torch.einsum("kln,kn->kl", kb[:, :t], self.c)[heads]
        y = causal_conv(x, kernel, backend=self.backend) + self._skip(x)
        # State after the piece: input k has been propagated T-1-k more steps.
        new_state = torch.einsum("dtn,btd->bdn", kb[heads, :t].flip(1), x)
        if state is not None:
            check_tensor("state", state, (bsz, self.d_model, self.d_state), where="CompanionSSM")
            # Initial-state response c^T A^{t+1} h0 via rows (A^T)^j c.
            kc = companion_krylov(a, self.c, t + 1, transpose=True, backend=self.backend)
            y = y + torch.einsum("dtn,bdn->btd", kc[heads, 1:], state)
            a_pow = torch.linalg.matrix_power(companion_matrix(a), t)[heads]
            new_state = new_state + torch.einsum("dmn,bdn->bdm", a_pow, state)
        return y, new_state

    def _recurrence(
        self,
        x: torch.Tensor,
        state: torch.Tensor | None,
        reset: torch.Tensor | None,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact step-by-step form of ``forward`` with resets and padding (slow path)."""
        bsz, t, _ = x.shape
        if state is None:
            state = self.init_state(bsz, x.device, x.dtype)
        check_tensor("state", state, (bsz, self.d_model, self.d_state), where="CompanionSSM")
        heads = self.head_of_channel
        a, b, c = self.last_column()[heads], self.b[heads], self.c[heads]  # [D, N] each
        h, ys = state, []
        for i in range(t):
            if reset is not None:
                h = torch.where(reset[:, i, None, None], torch.zeros_like(h), h)
            updated = companion_apply(a, h) + b * x[:, i, :, None]
            h = updated if mask is None else torch.where(mask[:, i, None, None], updated, h)
            ys.append((h * c).sum(-1))
        return torch.stack(ys, dim=1) + self._skip(x), h

    def step(
        self, x_t: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_step_input(x_t)
        if state is None:
            state = self.init_state(x_t.shape[0], x_t.device, x_t.dtype)
        heads = self.head_of_channel
        state = companion_apply(self.last_column()[heads], state) + self.b[heads] * x_t.unsqueeze(
            -1
        )
        y = (state * self.c[heads]).sum(-1) + self._skip(x_t)
        return y, state

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Zero state ``[B, D, N]``."""
        return torch.zeros(
            batch_size,
            self.d_model,
            self.d_state,
            device=device if device is not None else self.a.device,
            dtype=dtype if dtype is not None else self.a.dtype,
        )

    def closed_loop(self, state: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forecast ``horizon`` steps past the state without inputs (closed-loop SSM).

        The next input is predicted from the state, ``u_{t+1} = k . h_t``, then the usual update
        runs: ``h_{t+1} = A h_t + b u_{t+1} = (A + b k^T) h_t``, ``y_{t+1} = c . h_{t+1} + d u_{t+1}``.
        Computed in parallel from the Krylov rows ``((A + b k^T)^T)^j c`` and ``... k``.

        Args:
            state: ``[B, D, N]``, the state returned by ``forward``/``step`` after the last
                observed token.
            horizon: number of future steps ``H >= 1``.

        Returns:
            ``(y [B, H, D], u [B, H, D])``: the outputs and the predicted inputs at steps
            ``t+1 .. t+H``. Without ``feedback`` (``k = 0``) the inputs are zero and ``y`` is the
            free response of the SSM.
        """
        where = "CompanionSSM.closed_loop"
        check_tensor("state", state, ("B", self.d_model, self.d_state), where=where)
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"{where}: horizon must be a positive int, got {horizon!r}")
        heads = self.head_of_channel
        a = self.last_column()
        k = self.k if self.k is not None else torch.zeros_like(self.b)
        closed = companion_matrix(a) + self.b.unsqueeze(-1) * k.unsqueeze(-2)  # A + b k^T
        rows_c = krylov_doubling(closed.transpose(-1, -2), self.c, horizon + 1)  # [K, H+1, N]
        rows_k = krylov_doubling(closed.transpose(-1, -2), k, horizon)
        u = torch.einsum("dhn,bdn->bhd", rows_k[heads], state)
        y = torch.einsum("dhn,bdn->bhd", rows_c[heads, 1:], state) + self._skip(u)
        return y, u

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, n_heads={self.n_heads}, "
            f"norm_a={self.norm_a}, feedback={self.k is not None}"
        )
