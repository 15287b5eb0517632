"""Diagonal state-space (S4D) operators: discretisation, convolution kernel, scan, causal conv.

Follows "On the Parameterization and Initialization of Diagonal State Space Models" (Gu, Gupta,
Goel and Ré, 2022, arXiv 2206.11893). A diagonal complex SSM with ``N2`` modes per channel (one of
each conjugate pair; the real output is ``2 Re(...)``),

    h_t = dA h_{t-1} + dB u_t,    y_t = 2 Re(C h_t),

has the convolution kernel ``K_l = 2 Re(C dA^l dB)``. The state matrix is passed as its logarithm
``log_dA`` (``= dt * A`` for ZOH) because the fast path raises it to powers as
``exp(l * log_dA)``, which is exact and stable in that form.

Backends: ``"naive"`` (explicit dense matrix powers / step-by-step recurrence / direct sum over
lags) and ``"chunk"`` (Vandermonde product and FFT convolution).
"""

from __future__ import annotations

import torch

from mixerzoo.core.ops.backend import resolve_backend
from mixerzoo.core.ops.s4d.chunk import causal_conv_fft, s4d_kernel_chunk, s4d_scan_chunk
from mixerzoo.core.ops.s4d.naive import causal_conv_naive, s4d_kernel_naive, s4d_scan_naive
from mixerzoo.core.validation import check_tensor

__all__ = ["s4d_discretize", "s4d_kernel", "s4d_scan", "causal_conv"]

_AVAILABLE = ("naive", "chunk")


def _check_complex(name: str, value: object, shape: tuple, where: str) -> torch.Tensor:
    check_tensor(name, value, shape, where=where, allow_complex=True)
    if not value.is_complex():
        raise TypeError(
            f"{where}: {name} must be a complex tensor, got dtype {value.dtype}; build it with "
            f"torch.complex(real, imag) or torch.view_as_complex"
        )
    return value


def _check_ssm(log_dA, dB, C, where: str) -> tuple[int, int]:
    _check_complex("log_dA", log_dA, ("H", "N2"), where)
    h, n2 = log_dA.shape
    _check_complex("dB", dB, (h, n2), where)
    _check_complex("C", C, (h, n2), where)
    return h, n2


def s4d_discretize(
    A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str = "zoh"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discretise a diagonal continuous-time SSM ``x' = A x + B u`` with step ``dt``.

    ZOH (default): ``dA = exp(dt A)``, ``dB = (exp(dt A) - 1) / A * B``.
    Bilinear: ``dA = (1 + dt A / 2) / (1 - dt A / 2)``, ``dB = dt B / (1 - dt A / 2)``.

    Args:
        A: ``[H, N2]`` complex diagonal state matrix (negative real part for stability).
        B: ``[H, N2]`` complex input vector.
        dt: ``[H]`` real positive step sizes.
        method: ``"zoh"`` or ``"bilinear"``.

    Returns:
        ``(log_dA, dB)``, both ``[H, N2]`` complex: the logarithm of the diagonal of ``dA`` (what
        ``s4d_kernel`` / ``s4d_scan`` take) and ``dB``.
    """
    where = "s4d_discretize"
    _check_complex("A", A, ("H", "N2"), where)
    _check_complex("B", B, tuple(A.shape), where)
    check_tensor("dt", dt, (A.shape[0],), where=where)
    dtA = dt.unsqueeze(-1) * A
    if method == "zoh":
        return dtA, (torch.exp(dtA) - 1) / A * B
    if method == "bilinear":
        denom = 1 - dtA / 2
        return torch.log((1 + dtA / 2) / denom), dt.unsqueeze(-1) * B / denom
    raise ValueError(f"{where}: unknown method {method!r}; choose 'zoh' or 'bilinear'")


def s4d_kernel(
    log_dA: torch.Tensor,
    dB: torch.Tensor,
    C: torch.Tensor,
    length: int,
    backend: str | None = None,
) -> torch.Tensor:
    """SSM convolution kernel ``K[h, l] = 2 Re(sum_n C[h,n] dA[h,n]^l dB[h,n])``, ``l < length``.

    Args:
        log_dA: ``[H, N2]`` complex, log of the diagonal discrete state matrix.
        dB: ``[H, N2]`` complex.
        C: ``[H, N2]`` complex.
        length: number of taps ``L >= 1``.
        backend: ``None`` (automatic), ``"naive"`` (explicit matrix powers) or ``"chunk"``
            (Vandermonde).

    Returns:
        ``[H, L]`` real kernel.
    """
    where = "s4d_kernel"
    _check_ssm(log_dA, dB, C, where)
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"{where}: length must be a positive int, got {length!r}")
    choice = resolve_backend(where, backend, _AVAILABLE, log_dA.device)
    fn = s4d_kernel_naive if choice == "naive" else s4d_kernel_chunk
    return fn(log_dA, dB, C, length)


def causal_conv(u: torch.Tensor, k: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Causal per-channel long convolution ``y[b,t,h] = sum_{j<=t} k[h,j] u[b,t-j,h]``.

    Args:
        u: ``[B, T, H]`` real input.
        k: ``[H, L]`` real kernel with ``L >= T``.
        backend: ``"naive"`` (direct sum over lags) or ``"chunk"`` (FFT); ``None`` picks ``chunk``.

    Returns:
        ``[B, T, H]``.
    """
    where = "causal_conv"
    check_tensor("u", u, ("B", "T", "H"), where=where)
    b, t, h = u.shape
    check_tensor("k", k, (h, "L"), where=where)
    if k.shape[1] < t:
        raise ValueError(f"{where}: k must have at least T={t} taps, got shape {tuple(k.shape)}")
    choice = resolve_backend(where, backend, _AVAILABLE, u.device)
    fn = causal_conv_naive if choice == "naive" else causal_conv_fft
    return fn(u, k.to(u.dtype))


def s4d_scan(
    u: torch.Tensor,
    log_dA: torch.Tensor,
    dB: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the diagonal SSM ``h_t = dA h_{t-1} + dB u_t``, ``y_t = 2 Re(C h_t)`` over a sequence.

    Args:
        u: ``[B, T, H]`` real input, ``T >= 1``.
        log_dA: ``[H, N2]`` complex, log of the diagonal discrete state matrix.
        dB: ``[H, N2]`` complex.
        C: ``[H, N2]`` complex.
        h0: ``[B, H, N2]`` complex state before the first token, or ``None`` (zeros).
        backend: ``"naive"`` (recurrence) or ``"chunk"`` (kernel + FFT convolution).

    Returns:
        ``y [B, T, H]`` (real, dtype of ``u``) and ``h_last [B, H, N2]`` (complex), the state after
        the last token, to pass as ``h0`` for the next piece.
    """
    where = "s4d_scan"
    check_tensor("u", u, ("B", "T", "H"), where=where)
    b, t, h = u.shape
    if t < 1:
        raise ValueError(f"{where}: u must hold at least one time step, got shape {tuple(u.shape)}")
    hh, n2 = _check_ssm(log_dA, dB, C, where)
    if hh != h:
        raise ValueError(
            f"{where}: log_dA must have shape [H={h}, N2] matching u's last dimension, "
            f"got {tuple(log_dA.shape)}"
        )
    if h0 is not None:
        _check_complex("h0", h0, (b, h, n2), where)
    choice = resolve_backend(where, backend, _AVAILABLE, u.device)
    fn = s4d_scan_naive if choice == "naive" else s4d_scan_chunk
    y, h_last = fn(u, log_dA, dB, C, h0)
    return y.to(u.dtype), h_last
