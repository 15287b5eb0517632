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
- ``reset [B, L]`` (mixerzoo extension; mamba-ssm's ``cu_seqlens`` / mamba2's ``seq_idx`` for a
  padded batch): where true the state is dropped *before* step ``t``, i.e. ``exp(delta_t A)`` is
  replaced by 0 there, so ``h_t = delta_t B_t u_t``. Episodes packed into one row never see each
  other; no gradient crosses a reset (nor reaches ``delta_t`` through the dropped decay).
- ``mask [B, L]`` (mixerzoo extension; true = real step): a padded step is the identity on the
  state, ``delta_t = 0`` after the bias and softplus (decay 1, input 0), so padding neither reads
  nor writes the state and the last state is the one after each row's last real step. The output
  at a padded step is still read out from the carried state (``C_t . h + D u_t``, gated), which
  callers should treat as unspecified. A reset flagged at a padded step still drops the state.
- Computation in float64 for float64 inputs (mamba-ssm always uses float32), for gradcheck.
- Only real ``A`` and input-dependent ``B``/``C`` (``[B, N, L]`` or grouped ``[B, G, N, L]``), which
  is what Mamba uses; the complex-``A`` and time-invariant ``B``/``C`` ``[D, N]`` variants of
  mamba-ssm are not implemented and are rejected with a clear error.

Backends: ``"naive"`` (step-by-step loop, the reference, sharing no code with the others),
``"chunk"`` (segmented chunked scan with a recomputing backward; bounded memory; the automatic
choice on the CPU), ``"triton"`` (fused kernels with the same reset and mask semantics, zero decay
at a reset and zero step size at a padded step, :mod:`.triton`; the automatic choice for CUDA
tensors) and ``"mamba_ssm"`` (mamba-ssm's fused CUDA kernel, only when asked for and installed,
and without ``h0`` / ``reset``; see :mod:`.mamba_ssm`); see :mod:`mixerzoo.core.ops.backend`.
"""

from __future__ import annotations

import torch

from mixerzoo.core.ops.backend import resolve_backend
from mixerzoo.core.ops.selective_scan.chunk import selective_scan_chunk
from mixerzoo.core.ops.selective_scan.mamba_ssm import selective_scan_mamba_ssm
from mixerzoo.core.ops.selective_scan.naive import selective_scan_naive
from mixerzoo.core.validation import check_tensor

__all__ = [
    "selective_scan",
    "selective_scan_naive",
    "selective_scan_chunk",
    "selective_scan_mamba_ssm",
]


def _selective_scan_triton(*args, **kwargs):
    # Imported on first use: the kernels' module needs Triton (and the interpreter switch, when
    # set, before it is imported).
    from mixerzoo.core.ops.selective_scan.triton import selective_scan_triton

    return selective_scan_triton(*args, **kwargs)


_BACKENDS = {
    "naive": selective_scan_naive,
    "chunk": selective_scan_chunk,
    "triton": _selective_scan_triton,
    "mamba_ssm": selective_scan_mamba_ssm,
}


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


def _check_flags(name: str, value: object, batch: int, length: int) -> None:
    where = "selective_scan"
    if not isinstance(value, torch.Tensor) or value.dtype != torch.bool:
        got = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
        raise TypeError(
            f"{where}: {name} must be a torch.bool tensor of shape [B, L] = [{batch}, {length}], "
            f"got {got}"
        )
    if tuple(value.shape) != (batch, length):
        raise ValueError(
            f"{where}: {name} must have shape [B, L] = [{batch}, {length}], got "
            f"{tuple(value.shape)}"
        )


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
    *,
    reset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
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
        backend: ``None`` (automatic), ``"naive"``, ``"chunk"``, ``"triton"`` or ``"mamba_ssm"``
            (only when asked for: CUDA tensors, mamba-ssm installed, no ``h0`` / ``reset``).
        reset: ``[B, L]`` bool, drop the state before the flagged steps (see above).
        mask: ``[B, L]`` bool, true = real step; padded steps are identity steps (see above).

    Returns:
        ``out [B, D, L]`` in ``u``'s dtype, and ``last_state [B, D, N]`` (float32, or float64 for
        float64 inputs) when ``return_last_state``.

    Raises:
        TypeError / ValueError: on wrong dtypes or shapes, naming the argument; ValueError also
            for ``backend="mamba_ssm"`` with ``h0`` or ``reset``.
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
    for name, flags in (("reset", reset), ("mask", mask)):
        if flags is not None:
            _check_flags(name, flags, batch, length)
    kwargs = dict(
        D=D,
        z=z,
        delta_bias=delta_bias,
        delta_softplus=delta_softplus,
        return_last_state=return_last_state,
        mask=mask,
    )
    # mamba-ssm's kernel starts from a zero state and has no per-row resets: asked for by name it
    # is an error, chosen by MIXERZOO_BACKEND it quietly leaves such calls to our own scan.
    unsupported = [name for name, value in (("h0", h0), ("reset", reset)) if value is not None]
    if unsupported and backend is not None and backend.lower() == "mamba_ssm":
        raise ValueError(
            f"{where}: backend 'mamba_ssm' (mamba-ssm's selective_scan_fn) takes no "
            f"{' or '.join(unsupported)}; use backend='chunk' for a carried state or resets"
        )
    available = ("naive", "chunk", "triton") if unsupported else tuple(_BACKENDS)
    choice = resolve_backend(where, backend, available, u.device)
    if choice == "mamba_ssm":
        return selective_scan_mamba_ssm(u, delta, A, B, C, **kwargs)
    return _BACKENDS[choice](u, delta, A, B, C, h0=h0, reset=reset, **kwargs)
