"""2-D selective state-space scan over a (time x variate) grid (Chimera).

Follows the 2-D SSM of "Chimera: Effectively Modeling Multivariate Time Series with 2-Dimensional
State Space Models" (Behrouz, Santacatterina and Zabih, NeurIPS 2024, arXiv 2406.04320): a
Roesser-type 2-D system with a state ``h1`` carried along time and a state ``h2`` carried along
variates, input-dependent step sizes, input and output vectors, and diagonal state matrices. For
every batch, channel ``e`` and state index ``n`` (all products elementwise, ``A*`` of shape
``[E, N]``):

    abar1 = exp(dt1[t,v] A1),                 abar4 = exp(dt2[t,v] A4)
    h1[t,v] = abar1 h1[t-1,v] + (abar1 - 1)/A1 (A2 h2[t-1,v] + B1[t,v] x[t,v])
    h2[t,v] = abar4 h2[t,v-1] + (abar4 - 1)/A4 (A3 h1[t,v-1] + B2[t,v] x[t,v])
    y[t,v]  = sum_n C1[t,v] h1[t,v] + C2[t,v] h2[t,v]

i.e. each equation is discretised by zero-order hold along its own axis (step ``dt1`` in time,
``dt2`` across variates), treating the other state and the input as held. With ``A2 = A3 = 0``
it splits into two Mamba-style selective SSMs, one along time and one along variates.

Provenance. The paper's equations could not be read here (the stored arXiv and OpenReview copies
hold only the abstract and first page, the one detailed third-party summary, MQL5 article 17210
by D. Gizlyk, 2025, shows them as images, and no official code was found). What that summary
and the paper's abstract and Figure 1 establish, and this op follows: the continuous 2-D SSM is
discretised by zero-order hold with step sizes ``Delta_1`` (time) and ``Delta_2`` (variates);
``h1[t,v]`` carries temporal information, built from the previous time step of the same variate
with ``A1`` weighting past ``h1`` and ``A2`` past ``h2``; ``h2[t,v]`` carries cross-variate
information, built from the previous variate at the same time step through ``A3``, ``A4``;
``B_i``, ``C_i``, ``Delta_i`` may be functions of the input. Not established, hence
reconstruction: the exact discretised form of the coupling terms (here ``A2``, ``A3`` enter the
ZOH input term of their equation, the held-input reading of ZOH) and of ``Bbar_i``; the paper's
structured (non-diagonal) ``A1``, ``A2``, reduced here to diagonals. The fast paths are not the
paper's 2-D parallel scan: an exact loop-plus-scan (``chunk.py``) and fused kernels that walk the
grid point by point with every intermediate in registers (``triton.py``).

Padding (mixerzoo extension): ``mask [B, T]`` (true = real time step). A padded time step is
the identity on the whole state column, ``h1[t, v] = h1[t-1, v]`` and ``h2[t, v] = h2[t-1, v]``
for every variate, so padding neither reads nor writes the state and the returned state is the
one after each row's last real time step; the output at a padded step is read out from those
carried states (``C1 h1 + C2 h2`` with that step's ``C``), for callers to ignore. (``dt1 = 0``
alone would make ``h1`` an identity step but not ``h2``, which is rebuilt across the variates at
every time step and reaches the next time step through ``A2``; hence the explicit mask.)

Backends: ``"naive"`` (double loop), ``"chunk"`` (loop over the shorter axis, ``linear_scan``
along the other) and ``"triton"`` (fused forward and backward kernels, ``triton.py``; the automatic
choice for CUDA tensors).
"""

from __future__ import annotations

import torch

from mixerzoo.core.ops.backend import resolve_backend
from mixerzoo.core.ops.ssm2d.chunk import ssm2d_scan_chunk
from mixerzoo.core.ops.ssm2d.naive import ssm2d_scan_naive
from mixerzoo.core.validation import check_tensor

__all__ = ["ssm2d_scan"]

_AVAILABLE = ("naive", "chunk", "triton")


def ssm2d_scan(
    x: torch.Tensor,
    dt1: torch.Tensor,
    dt2: torch.Tensor,
    A1: torch.Tensor,
    A2: torch.Tensor,
    A3: torch.Tensor,
    A4: torch.Tensor,
    B1: torch.Tensor,
    B2: torch.Tensor,
    C1: torch.Tensor,
    C2: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor] | None = None,
    backend: str | None = None,
    *,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Run the 2-D selective SSM over a ``T x V`` grid (causal in time, causal over variates).

    Args:
        x: ``[B, T, V, E]`` input.
        dt1: ``[B, T, V, E]`` positive time step sizes.
        dt2: ``[B, T, V, E]`` positive variate step sizes.
        A1: ``[E, N]`` time-axis state matrix (diagonal; negative for stability).
        A2: ``[E, N]`` coupling of ``h2`` into ``h1``.
        A3: ``[E, N]`` coupling of ``h1`` into ``h2``.
        A4: ``[E, N]`` variate-axis state matrix (diagonal; negative).
        B1, B2, C1, C2: ``[B, T, V, N]`` input-dependent input/output vectors.
        state: ``(h1, h2)``, each ``[B, V, E, N]``, the states at the last time step of the
            previous piece (zeros if ``None``).
        backend: ``"naive"``, ``"chunk"`` or ``"triton"`` (``None``: automatic, see
            ``core.ops.backend``).
        mask: ``[B, T]`` bool, true = real time step; padded time steps are identity steps of
            the state (see above).

    Returns:
        ``y [B, T, V, E]`` and the new state ``(h1, h2)`` at the last time step.
    """
    where = "ssm2d_scan"
    check_tensor("x", x, ("B", "T", "V", "E"), where=where)
    bsz, length, n_var, e = x.shape
    if length < 1 or n_var < 1:
        raise ValueError(f"{where}: x needs T >= 1 and V >= 1, got shape {tuple(x.shape)}")
    check_tensor("dt1", dt1, tuple(x.shape), where=where)
    check_tensor("dt2", dt2, tuple(x.shape), where=where)
    check_tensor("A1", A1, (e, "N"), where=where)
    n = A1.shape[1]
    for name, value in (("A2", A2), ("A3", A3), ("A4", A4)):
        check_tensor(name, value, (e, n), where=where)
    for name, value in (("B1", B1), ("B2", B2), ("C1", C1), ("C2", C2)):
        check_tensor(name, value, (bsz, length, n_var, n), where=where)
    h1_0 = h2_0 = None
    if state is not None:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{where}: state must be a pair (h1, h2) of [B, V, E, N] tensors")
        h1_0, h2_0 = state
        check_tensor("state[0]", h1_0, (bsz, n_var, e, n), where=where)
        check_tensor("state[1]", h2_0, (bsz, n_var, e, n), where=where)
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(
                f"{where}: mask must be a torch.bool tensor of shape [B, T] = "
                f"[{bsz}, {length}], got {got}"
            )
        if tuple(mask.shape) != (bsz, length):
            raise ValueError(
                f"{where}: mask must have shape [B, T] = [{bsz}, {length}], got {tuple(mask.shape)}"
            )
    args = (x, dt1, dt2, A1, A2, A3, A4, B1, B2, C1, C2, h1_0, h2_0)
    choice = resolve_backend(where, backend, _AVAILABLE, x.device)
    if choice == "naive":
        y, h1, h2 = ssm2d_scan_naive(*args, mask=mask)
    elif choice == "triton":
        from mixerzoo.core.ops.ssm2d.triton import ssm2d_scan_triton

        y, h1, h2 = ssm2d_scan_triton(*args, mask=mask)
    else:
        y, h1, h2 = ssm2d_scan_chunk(*args, mask=mask)
    return y, (h1, h2)
