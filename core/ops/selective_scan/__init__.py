"""Mamba's selective scan (S6) with mamba-ssm's ``selective_scan_fn`` conventions.

"Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (Gu & Dao, 2023,
arXiv 2312.00752). Shapes and semantics follow mamba-ssm's ``selective_scan_fn`` /
``selective_scan_ref`` so that code written against it runs unchanged:

- ``delta <- delta + delta_bias`` then ``softplus(delta)`` if ``delta_softplus``;
- ``h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t`` per channel ``d`` and state ``n``;
- ``y_t = C_t . h_t``, ``out = y + D * u``, ``out = out * silu(z)``; ``out`` in ``u``'s dtype, the
  recurrence in float32 (float64 for float64 inputs).

Deviations from mamba-ssm (documented extensions / omissions):

- ``h0`` (mixerzoo extension): the state before the first step, so a streaming caller (the
  ``mamba`` mixer) can continue a sequence exactly; its gradient is returned.
- Only real ``A`` and input-dependent ``B``/``C`` (``[B, N, L]`` or grouped ``[B, G, N, L]``), which
  is what Mamba uses; the complex-``A`` and time-invariant ``B``/``C`` ``[D, N]`` variants of
  mamba-ssm are not implemented and are rejected with a clear error.

Backends: ``"naive"`` (step-by-step loop, the reference) and ``"chunk"`` (segmented chunked scan
with a recomputing backward; bounded memory); see :mod:`mixerzoo.core.ops.backend`.
"""

from __future__ import annotations

import torch

from mixerzoo.core.ops.backend import resolve_backend
from mixerzoo.core.ops.selective_scan.chunk import selective_scan_chunk
from mixerzoo.core.ops.selective_scan.naive import selective_scan_naive
from mixerzoo.core.validation import check_tensor

__all__ = ["selective_scan", "selective_scan_naive", "selective_scan_chunk"]

_BACKENDS = {"naive": selective_scan_naive, "chunk": selective_scan_chunk}


def _check_bc(
    name: str, value: object, batch: int, channels: int, d_state: int, length: int
) -> None:
    where = "selective_scan"
    if isinstance(value, torch.Tensor) and value.dim() == 4:
        check_tensor(name, value, (batch, "G", d_state, length), where=where)
        if channels % value.shape[1]:
            raise ValueError(
                f"{where}: the number of groups of {name} (G = {value.shape[1]}) must divide the "
                f"number of channels D = {channels}"
            )
    else:
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            raise ValueError(
                f"{where}: time-invariant {name} of shape [D, N] is not supported; pass "
                f"[B, N, L] or [B, G, N, L] (e.g. {name}[None, :, :, None].expand(...))"
            )
        check_tensor(name, value, (batch, d_state, length), where=where)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    h0: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective state-space scan (S6), as mamba-ssm's ``selective_scan_fn``.

    Args:
        u: inputs ``[B, D, L]``.
        delta: time steps ``[B, D, L]`` (before ``delta_bias`` / softplus).
        A: state matrix (diagonal per channel) ``[D, N]``, real; Mamba uses negative values.
        B: input projections ``[B, N, L]`` or grouped ``[B, G, N, L]`` (channel ``d`` uses group
            ``d // (D / G)``; ``G`` must divide ``D``).
        C: output projections, same shape options as ``B``.
        D: skip connection ``[D]``.
        z: gate ``[B, D, L]``; the output is multiplied by ``silu(z)``.
        delta_bias: added to ``delta`` per channel ``[D]``.
        delta_softplus: apply ``softplus`` to ``delta`` (after the bias).
        return_last_state: also return the state after the last step.
        h0: state before the first step ``[B, D, N]`` (mixerzoo extension); zeros when ``None``.
        backend: ``None`` (automatic), ``"naive"`` or ``"chunk"``.

    Returns:
        ``out [B, D, L]`` in ``u``'s dtype, and ``last_state [B, D, N]`` (float32, or float64 for
        float64 inputs) when ``return_last_state``.

    Raises:
        TypeError / ValueError: on wrong dtypes or shapes, naming the argument.
    """
    where = "selective_scan"
    check_tensor("u", u, ("B", "D", "L"), where=where)
    batch, channels, length = u.shape
    if length == 0:
        raise ValueError(
            f"{where}: u must have at least one time step (L >= 1), got shape {tuple(u.shape)}"
        )
    check_tensor("delta", delta, (batch, channels, length), where=where)
    if isinstance(A, torch.Tensor) and A.is_complex():
        raise TypeError(
            f"{where}: complex A is not supported (only real A, as in Mamba); got dtype {A.dtype}"
        )
    check_tensor("A", A, (channels, "N"), where=where)
    d_state = A.shape[1]
    _check_bc("B", B, batch, channels, d_state, length)
    _check_bc("C", C, batch, channels, d_state, length)
    if D is not None:
        check_tensor("D", D, (channels,), where=where)
    if z is not None:
        check_tensor("z", z, (batch, channels, length), where=where)
    if delta_bias is not None:
        check_tensor("delta_bias", delta_bias, (channels,), where=where)
    if h0 is not None:
        check_tensor("h0", h0, (batch, channels, d_state), where=where)
    choice = resolve_backend(where, backend, tuple(_BACKENDS), u.device)
    return _BACKENDS[choice](
        u,
        delta,
        A,
        B,
        C,
        D=D,
        z=z,
        delta_bias=delta_bias,
        delta_softplus=delta_softplus,
        return_last_state=return_last_state,
        h0=h0,
    )
